"""Webhook delivery of alerts, off the call path (alerts.py decides what to send).

Alerts are emitted as structlog events by the store; when a webhook URL is
configured, each alert is also POSTed as JSON by one daemon thread, with a
short timeout and a bounded number of retries. `post()` never blocks: when
the queue is full the alert is dropped (and logged) rather than stalling a call.
"""

from __future__ import annotations

import enum
import json
import queue
import threading
import time
import urllib.request
from typing import Any

from store.core import Logger


class _Stop(enum.Enum):
    STOP = enum.auto()


_STOP = _Stop.STOP  # queued by close(): the thread ends there


class WebhookNotifier:
    def __init__(
        self,
        url: str,
        log: Logger,
        *,
        timeout_s: float = 2.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_queue: int = 1000,
    ) -> None:
        self.url = url
        self.log = log
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._queue: queue.Queue[dict[str, Any] | _Stop] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def post(self, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.log.error("alert_webhook_dropped", reason="queue_full", alert=payload.get("event"))

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (bounded by timeout_s), then stop the thread."""
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._deliver(item)

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        for attempt in range(1, self.retries + 1):
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "dialout-gw"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return
                    error = f"HTTP {response.status}"
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then logged
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.log.error(
            "alert_webhook_failed", url=self.url, alert=payload.get("event"), attempts=self.retries, error=error
        )
