"""Reading the ledger: one call, one bucket, and the usage report behind
`dialout-gw usage`. Nothing here writes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from store.directory import DirectoryMixin
from store.periods import period_of
from store.rows import BucketRow
from store.types import LIFETIME


class TenantZone(NamedTuple):
    tenant: str
    tz: str


class TenantId(NamedTuple):
    tenant: str


class BucketUsage(NamedTuple):
    bucket: str
    period: str
    capacity: float | None
    used: float
    reserved: float


class DebitedRow(NamedTuple):
    bucket: str
    debited: float


class CallTotals(NamedTuple):
    calls: int
    answered: int
    talk_s: float
    billed_s: float
    live: int


class TopRow(NamedTuple):
    item: str  # the organiser or the destination
    calls: int
    talk_s: float
    billed_s: float


class AlertSeen(NamedTuple):
    kind: str
    created_at: float
    detail: str


def _get(obj: object, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def tenant_info(obj: object, fallback_id: str | None = None) -> dict[str, Any]:
    """Normalise a tenant (TOML dict, imported row or config object) to the fields the report needs."""
    credits = _get(obj, "credits")
    if credits is not None:
        enabled, balance = _get(credits, "enabled", False), _get(credits, "balance", 0.0)
    else:
        enabled, balance = _get(obj, "credits_enabled", False), _get(obj, "credits_balance", None)
    licences = _get(obj, "subscription_licences")
    pool_minutes = _get(obj, "pool_minutes")  # policy.model.Tenant precomputes it
    return {
        "pool_minutes": float(pool_minutes) if pool_minutes is not None else None,
        "id": str(_get(obj, "id", None) or fallback_id),
        "timezone": _get(obj, "timezone", None) or _get(obj, "tz", None) or "UTC",
        "subscription_licences": int(licences) if licences is not None else None,
        "credits_enabled": bool(enabled),
        "credits_balance": float(balance) if balance is not None else None,
    }


def _iter_config(tenants_config: Mapping[str, object] | Iterable[object] | None) -> Iterator[dict[str, Any]]:
    if tenants_config is None:
        return
    if isinstance(tenants_config, Mapping):
        for key, value in tenants_config.items():
            yield tenant_info(value, fallback_id=key)
    else:
        for value in tenants_config:
            yield tenant_info(value)


_NO_BUCKET = BucketUsage("", "", None, 0.0, 0.0)


class ReportsMixin(DirectoryMixin):
    def call_row(self, call_id: str) -> dict[str, Any] | None:
        """One call as a dict (for tests, `explain` and operators)."""

        def fn() -> dict[str, Any] | None:
            cur = self._x("SELECT * FROM calls WHERE call_id = ?", (call_id,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d[0] for d in cur.description or ()], row))

        return self._run(fn, write=False)

    def bucket_row(self, tenant: str, period: str, bucket: str) -> dict[str, Any] | None:
        row = self._run(
            lambda: self._one(
                BucketRow,
                "SELECT capacity, used, reserved FROM buckets WHERE tenant = ? AND period = ? AND bucket = ?",
                (tenant, period, bucket),
            ),
            write=False,
        )
        return None if row is None else row._asdict()

    def usage_report(
        self,
        *,
        tenant: str | None = None,
        month: str | None = None,
        tenants_config: Mapping[str, object] | Iterable[object] | None = (),
        now: datetime | None = None,
        top: int = 5,
        pool_minutes_per_licence: int = 60,
    ) -> dict[str, Any]:
        """Per tenant: pool size/used/remaining, credits spent/left, add-on minutes, top organisers
        and destinations. `month` is YYYY-MM (default: the current month in each tenant's timezone)."""
        now = now or datetime.now(UTC)
        known: dict[str, dict[str, Any]] = {}
        for row in self.directory_rows()[0]:
            info = tenant_info(row)
            known[info["id"]] = info
        for info in _iter_config(tenants_config):
            known[info["id"]] = info  # the config file wins over an imported row

        def fn() -> dict[str, Any]:
            seen = {
                r.tenant: r.tz for r in self._all(TenantZone, "SELECT tenant, MAX(tz) AS tz FROM calls GROUP BY tenant")
            }
            for r in self._all(TenantId, "SELECT DISTINCT tenant FROM buckets"):
                seen.setdefault(r.tenant, "UTC")
            ids = [tenant] if tenant is not None else sorted(set(known) | set(seen))
            out = []
            for tid in ids:
                info = known.get(tid) or {
                    "id": tid,
                    "timezone": seen.get(tid) or "UTC",
                    "subscription_licences": None,
                    "credits_enabled": False,
                    "credits_balance": None,
                }
                period = month or period_of(now, info["timezone"])
                out.append(self._tenant_usage(tid, tid in known, info, period, top, pool_minutes_per_licence))
            return {"month": month, "tenants": out}

        return self._run(fn, write=False)

    def _tenant_usage(
        self, tid: str, known: bool, info: dict[str, Any], period: str, top: int, pool_minutes_per_licence: int
    ) -> dict[str, Any]:
        buckets = {
            (b.bucket, b.period): b
            for b in self._all(
                BucketUsage,
                "SELECT bucket, period, capacity, used, reserved FROM buckets WHERE tenant = ? AND period IN (?, ?)",
                (tid, period, LIFETIME),
            )
        }
        pool = buckets.get(("tenant_pool", period), _NO_BUCKET)
        if info.get("pool_minutes") is not None:
            pool_size = info["pool_minutes"]
        elif info["subscription_licences"] is not None:
            pool_size = float(info["subscription_licences"] * pool_minutes_per_licence)
        else:
            pool_size = float(pool.capacity or 0.0)
        promo = buckets.get(("promotion", period), _NO_BUCKET)
        usca = buckets.get(("usca_unlimited", period), _NO_BUCKET)
        credits = buckets.get(("credits", LIFETIME), _NO_BUCKET)
        balance = info["credits_balance"] if info["credits_balance"] is not None else credits.capacity
        by_bucket = {
            r.bucket: r.debited
            for r in self._all(
                DebitedRow,
                "SELECT r.bucket AS bucket, COALESCE(SUM(r.debited), 0) AS debited FROM reservations r JOIN calls c"
                " ON c.call_id = r.call_id WHERE c.tenant = ? AND c.period = ? GROUP BY r.bucket",
                (tid, period),
            )
        }
        totals = self._one(
            CallTotals,
            "SELECT COUNT(*) AS calls, COALESCE(SUM(CASE WHEN answered_at IS NULL THEN 0 ELSE 1 END), 0) AS answered,"
            " COALESCE(SUM(talk_s), 0) AS talk_s, COALESCE(SUM(billed_units * increment_s), 0) AS billed_s,"
            " COALESCE(SUM(CASE WHEN state = 'closed' THEN 0 ELSE 1 END), 0) AS live"
            " FROM calls WHERE tenant = ? AND period = ?",
            (tid, period),
        ) or CallTotals(0, 0, 0.0, 0.0, 0)  # an aggregate without GROUP BY: always one row
        tops = {}
        for column in ("organizer", "e164"):
            tops[column] = [
                {
                    column: r.item,
                    "calls": r.calls,
                    "talk_s": round(r.talk_s or 0.0, 3),
                    "billed_minutes": round((r.billed_s or 0) / 60.0, 3),
                }
                for r in self._all(
                    TopRow,
                    f"SELECT {column} AS item, COUNT(*) AS calls, COALESCE(SUM(talk_s), 0) AS talk_s,"
                    " COALESCE(SUM(billed_units * increment_s), 0) AS billed_s FROM calls"
                    f" WHERE tenant = ? AND period = ? GROUP BY {column}"
                    f" ORDER BY billed_s DESC, COUNT(*) DESC, {column} LIMIT ?",
                    (tid, period, top),
                )
            ]
        alerts = [
            {"kind": r.kind, "at": r.created_at, **json.loads(r.detail)}
            for r in self._all(
                AlertSeen,
                "SELECT kind, created_at, detail FROM alerts WHERE tenant = ? AND period = ? ORDER BY created_at",
                (tid, period),
            )
        ]
        used_total = pool.used + pool.reserved
        return {
            "tenant": tid,
            "known": known,
            "period": period,
            "timezone": info["timezone"],
            "pool": {
                "size_minutes": round(pool_size, 3),
                "used_minutes": round(pool.used, 3),
                "reserved_minutes": round(pool.reserved, 3),
                "remaining_minutes": round(max(0.0, pool_size - used_total), 3),
                "percent_used": round(used_total / pool_size * 100.0, 1) if pool_size else None,
            },
            "promotion": {
                "used_minutes": round(promo.used, 3),
                "reserved_minutes": round(promo.reserved, 3),
                "cap_minutes": promo.capacity,
            },
            "credits": {
                "enabled": info["credits_enabled"],
                "balance": balance,
                "spent_total": round(credits.used, 4),
                "reserved": round(credits.reserved, 4),
                "spent_this_month": round(by_bucket.get("credits", 0.0), 4),
                "left": round(balance - credits.used - credits.reserved, 4) if balance is not None else None,
            },
            "addon_minutes": round(usca.used, 3),
            "calls": {
                "total": totals.calls,
                "answered": totals.answered,
                "live": totals.live,
                "talk_minutes": round(totals.talk_s / 60.0, 3),
                "billed_minutes": round(totals.billed_s / 60.0, 3),
            },
            "top_organizers": tops["organizer"],
            "top_destinations": tops["e164"],
            "alerts": alerts,
        }
