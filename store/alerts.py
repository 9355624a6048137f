"""Usage alerts: pool at 80 % and 100 %, credits at or below the floor.

Settlement checks the pool and credits buckets it has just debited. Each
alert fires once per tenant, period and kind across all instances: the
`alerts` table's primary key decides who raises it. Once committed, an
alert is a structlog warning and, with a webhook configured, a JSON POST
from a background thread (webhook.py), so it never blocks a call.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from store.core import StoreCore
from store.rows import EPS
from store.webhook import WebhookNotifier


class AlertRow(NamedTuple):
    tenant: str
    period: str
    kind: str  # pool_80, pool_100, credits_low
    created_at: float
    detail: str  # JSON


class AlertsMixin(StoreCore):
    def __init__(self, *, credits_floor: float = 0.0, alert_webhook: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.credits_floor = float(credits_floor)
        self._alerted: set[tuple[str, str, str]] = set()  # (tenant, period, kind) known to be raised
        self._notifier = WebhookNotifier(alert_webhook, self.log) if alert_webhook else None

    def _check_alerts(
        self, tenant: str, period: str, bucket: str, used: float, capacity: float | None, now_ts: float
    ) -> None:
        """After a debit, inside the settling transaction."""
        if capacity is None:
            return
        if bucket == "tenant_pool":
            if capacity <= 0:
                return
            percent = used / capacity * 100.0
            for level in (80, 100):
                if percent + EPS >= level:
                    self._raise_alert(
                        tenant,
                        period,
                        f"pool_{level}",
                        "pool_threshold",
                        now_ts,
                        percent=level,
                        used_minutes=round(used, 6),
                        pool_minutes=capacity,
                    )
        elif bucket == "credits":
            left = capacity - used
            if left <= self.credits_floor + EPS:
                self._raise_alert(
                    tenant,
                    period,
                    "credits_low",
                    "credits_low",
                    now_ts,
                    balance_left=round(left, 6),
                    floor=self.credits_floor,
                    balance=capacity,
                )

    def _raise_alert(self, tenant: str, period: str, kind: str, event: str, now_ts: float, **detail: float) -> None:
        key = (tenant, period, kind)
        if key in self._alerted:
            return
        cur = self._x(
            "INSERT INTO alerts (tenant, period, kind, created_at, detail) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant, period, kind) DO NOTHING",
            (tenant, period, kind, now_ts, json.dumps(detail)),
        )
        if cur.rowcount == 1:
            fields = {"tenant": tenant, "period": period, **detail}
            self._after_commit(lambda: self._emit_alert(key, event, fields))
        else:  # raised before, by this instance or another
            self._after_commit(lambda: self._alerted.add(key))

    def _emit_alert(self, key: tuple[str, str, str], event: str, fields: dict[str, Any]) -> None:
        self._alerted.add(key)
        self.log.warning(event, **fields)
        if self._notifier is not None:
            self._notifier.post({"event": event, **fields})

    def alerts(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Alerts raised so far (for reports and tests)."""
        sql = "SELECT tenant, period, kind, created_at, detail FROM alerts"
        params: tuple[str, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params = (tenant,)
        rows = self._run(lambda: self._all(AlertRow, sql + " ORDER BY created_at, kind", params), write=False)
        return [
            {"tenant": r.tenant, "period": r.period, "kind": r.kind, "created_at": r.created_at, **json.loads(r.detail)}
            for r in rows
        ]

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        super().close()
