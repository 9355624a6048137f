"""The usage report behind `dialout-gw usage`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from store.types import LIFETIME


def _get(obj, key, default=None):
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def tenant_info(obj, fallback_id: str | None = None) -> dict:
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


def _iter_config(tenants_config):
    if tenants_config is None:
        return
    if isinstance(tenants_config, Mapping):
        for key, value in tenants_config.items():
            yield tenant_info(value, fallback_id=key)
    else:
        for value in tenants_config:
            yield tenant_info(value)


def build_usage_report(store, *, tenant, month, tenants_config, now: datetime, top: int,
                       pool_minutes_per_licence: int) -> dict:
    from store.base import period_of

    known: dict[str, dict] = {}
    for row in store.directory_rows()[0]:
        info = tenant_info(row)
        known[info["id"]] = info
    for info in _iter_config(tenants_config):
        known[info["id"]] = info  # the config file wins over an imported row

    def fn() -> dict:
        x = store._x
        seen = dict(x("SELECT tenant, MAX(tz) FROM calls GROUP BY tenant").fetchall())
        for (t,) in x("SELECT DISTINCT tenant FROM buckets").fetchall():
            seen.setdefault(t, "UTC")
        ids = [tenant] if tenant is not None else sorted(set(known) | set(seen))
        out = []
        for tid in ids:
            info = known.get(tid) or {"id": tid, "timezone": seen.get(tid) or "UTC",
                                      "subscription_licences": None, "credits_enabled": False,
                                      "credits_balance": None}
            period = month or period_of(now, info["timezone"])
            buckets = {(b, p): (c, u, r) for b, p, c, u, r in x(
                "SELECT bucket, period, capacity, used, reserved FROM buckets WHERE tenant = ?"
                " AND period IN (?, ?)", (tid, period, LIFETIME)).fetchall()}
            pool_cap, pool_used, pool_res = buckets.get(("tenant_pool", period), (None, 0.0, 0.0))
            if info.get("pool_minutes") is not None:
                pool_size = info["pool_minutes"]
            elif info["subscription_licences"] is not None:
                pool_size = float(info["subscription_licences"] * pool_minutes_per_licence)
            else:
                pool_size = float(pool_cap or 0.0)
            promo = buckets.get(("promotion", period), (None, 0.0, 0.0))
            usca = buckets.get(("usca_unlimited", period), (None, 0.0, 0.0))
            cr_cap, cr_used, cr_res = buckets.get(("credits", LIFETIME), (None, 0.0, 0.0))
            balance = info["credits_balance"] if info["credits_balance"] is not None else cr_cap
            by_bucket = dict(x(
                "SELECT r.bucket, COALESCE(SUM(r.debited), 0) FROM reservations r JOIN calls c"
                " ON c.call_id = r.call_id WHERE c.tenant = ? AND c.period = ? GROUP BY r.bucket",
                (tid, period)).fetchall())
            calls, answered, talk, billed_s, live = x(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN answered_at IS NULL THEN 0 ELSE 1 END), 0),"
                " COALESCE(SUM(talk_s), 0), COALESCE(SUM(billed_units * increment_s), 0),"
                " COALESCE(SUM(CASE WHEN state = 'closed' THEN 0 ELSE 1 END), 0)"
                " FROM calls WHERE tenant = ? AND period = ?", (tid, period)).fetchone()
            tops = {}
            for column, label in (("organizer", "organizer"), ("e164", "e164")):
                tops[label] = [
                    {label: key, "calls": n, "talk_s": round(t or 0.0, 3), "billed_minutes": round((b or 0) / 60.0, 3)}
                    for key, n, t, b in x(
                        f"SELECT {column}, COUNT(*), COALESCE(SUM(talk_s), 0),"
                        " COALESCE(SUM(billed_units * increment_s), 0) AS billed FROM calls"
                        f" WHERE tenant = ? AND period = ? GROUP BY {column}"
                        f" ORDER BY billed DESC, COUNT(*) DESC, {column} LIMIT ?",
                        (tid, period, top)).fetchall()]
            alerts = [{"kind": k, "at": c, **json.loads(d)} for k, c, d in x(
                "SELECT kind, created_at, detail FROM alerts WHERE tenant = ? AND period = ? ORDER BY created_at",
                (tid, period)).fetchall()]
            used_total = pool_used + pool_res
            out.append({
                "tenant": tid,
                "known": tid in known,
                "period": period,
                "timezone": info["timezone"],
                "pool": {
                    "size_minutes": round(pool_size, 3),
                    "used_minutes": round(pool_used, 3),
                    "reserved_minutes": round(pool_res, 3),
                    "remaining_minutes": round(max(0.0, pool_size - used_total), 3),
                    "percent_used": round(used_total / pool_size * 100.0, 1) if pool_size else None,
                },
                "promotion": {"used_minutes": round(promo[1], 3), "reserved_minutes": round(promo[2], 3),
                              "cap_minutes": promo[0]},
                "credits": {
                    "enabled": info["credits_enabled"],
                    "balance": balance,
                    "spent_total": round(cr_used, 4),
                    "reserved": round(cr_res, 4),
                    "spent_this_month": round(by_bucket.get("credits", 0.0), 4),
                    "left": round(balance - cr_used - cr_res, 4) if balance is not None else None,
                },
                "addon_minutes": round(usca[1], 3),
                "calls": {"total": calls, "answered": answered, "live": live,
                          "talk_minutes": round(talk / 60.0, 3), "billed_minutes": round(billed_s / 60.0, 3)},
                "top_organizers": tops["organizer"],
                "top_destinations": tops["e164"],
                "alerts": alerts,
            })
        return {"month": month, "tenants": out}

    return store._run(fn, write=False)
