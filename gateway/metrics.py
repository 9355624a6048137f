"""Prometheus metrics and health over HTTP on a loopback port (`[metrics]`).

    GET /metrics   Prometheus text format (prometheus_client)
    GET /healthz   {"live": true, "ready": bool, "draining": bool, "store_ok": bool, "active_calls": n}
                   200 when ready, 503 when not (draining, or the ledger unreachable)

The HTTP server runs on its own thread and only reads plain attributes the
SIP loop keeps up to date, and the ledger writer's backlog (`stats()`, which
takes the writer's lock briefly); it never touches pjsua2 or the store connection.
Label values are closed vocabularies (reason, bucket, decision) or tenant
ids, never phone numbers, so masking has nothing to hide here.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from policy import Reason

# Decision latency is tens of microseconds; setup delay is milliseconds to seconds.
DECISION_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)
SETUP_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

disable_created_metrics()  # *_created series double the output and nobody graphs them


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "dialout_calls", "Calls ended, by decision, reason and bucket", ["decision", "reason", "bucket"], registry=r
        )
        # Every rejection's series exists from the start, at 0: Prometheus's rate()
        # and increase() cannot see the first fraud_suspected of a series born at 1.
        for reason in Reason:
            if reason.stage not in ("success", "relay"):
                self.calls.labels("deny", reason.value, "none")
        self.active = Gauge("dialout_active_calls", "Calls in progress, from their INVITE to their end", registry=r)
        self.admission_refusals = Counter(
            "dialout_admission_refusals", "INVITEs refused before any lookup", ["reason"], registry=r
        )
        self.decision_seconds = Histogram(
            "dialout_decision_seconds",
            "Time to decide one INVITE (snapshot + policy)",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.setup_seconds = Histogram(
            "dialout_setup_seconds",
            "INVITE to final response sent to the bridge",
            ["outcome"],
            buckets=SETUP_BUCKETS,
            registry=r,
        )
        self.ledger_errors = Counter("dialout_ledger_write_errors", "Ledger writes that failed", registry=r)
        self.billed_units = Counter("dialout_billed_units", "Billing units charged, by bucket", ["bucket"], registry=r)
        self.pool_used = Gauge(
            "dialout_pool_used_minutes",
            "Tenant pool minutes used this period (incl. reservations)",
            ["tenant"],
            registry=r,
        )
        self.pool_size = Gauge("dialout_pool_size_minutes", "Tenant pool size this period", ["tenant"], registry=r)
        self.ready = Gauge("dialout_ready", "1 when the gateway takes new calls", registry=r)
        self.trunk_attempts = Counter("dialout_trunk_attempts", "Calls offered to a trunk", ["trunk"], registry=r)
        self.trunk_answers = Counter("dialout_trunk_answers", "Calls a trunk answered", ["trunk"], registry=r)
        self.trunk_failures = Counter(
            "dialout_trunk_failures", "Calls a trunk did not answer, by class", ["trunk", "class"], registry=r
        )
        self.trunk_up = Gauge(
            "dialout_trunk_up", "1 while the trunk takes calls, 0 while it is marked down", ["trunk"], registry=r
        )
        # Read from the ledger writer at each scrape, not pushed per call: a stalled
        # database shows here (and in an alert) before calls start failing.
        self.ledger_queue = Gauge(
            "dialout_ledger_queue_depth",
            "Ledger writes submitted and not finished (queued, or in the running batch)",
            registry=r,
        )
        self.ledger_oldest = Gauge(
            "dialout_ledger_oldest_pending_seconds",
            "How long the oldest unfinished ledger write has waited (0: none)",
            registry=r,
        )
        self.service = None
        self.server: ThreadingHTTPServer | None = None
        # Per-call updates go through cached children: prometheus_client's labels()
        # validates and locks on every call, a measurable share of a call's CPU.
        self._calls = _children(self.calls)
        self._setup = _children(self.setup_seconds)
        self._billed = _children(self.billed_units)
        self._attempts = _children(self.trunk_attempts)
        self._answers = _children(self.trunk_answers)
        self._failures = _children(self.trunk_failures)

    def bind(self, service) -> None:
        self.service = service

    # --- hooks called by the service on the SIP loop thread ------------------------

    def admission_refused(self, reason: str) -> None:
        self.admission_refusals.labels(reason).inc()

    def call_finished(self, decision, record, settlement) -> None:
        """One finished call (the shell calls this exactly once per call)."""
        allowed = decision is not None and decision.allow
        bucket = str(decision.bucket) if allowed and decision.bucket else "none"
        self._calls("allow" if allowed else "deny", record.reason, bucket).inc()
        if record.setup_ms is not None:
            outcome = "answered" if record.bridge_status == 200 else "rejected" if not allowed else "failed"
            self._setup(outcome).observe(record.setup_ms / 1000)
        if settlement is not None:
            for charged_bucket, _amount in settlement.charges:
                self._billed(charged_bucket).inc(settlement.billed_units)

    def trunk_attempt(self, trunk: str, status: int | None) -> None:
        self._attempts(trunk).inc()
        if status is not None and 200 <= status < 300:
            self._answers(trunk).inc()
        else:
            kind = "timeout" if status is None or status == 408 else f"{status // 100}xx"
            self._failures(trunk, kind).inc()

    def refresh(self) -> None:
        """At each scrape, on the HTTP thread: the values read rather than pushed.

        The ledger writer's backlog costs one short hold of the writer's own
        lock per scrape (`LedgerWriter.stats()`), nothing per call.
        """
        s = self.service
        if s is not None:
            self.active.set(s.active)
            ledger = getattr(s, "ledger", None)
            if ledger is not None:
                stats = ledger.stats()
                self.ledger_queue.set(stats.pending)
                self.ledger_oldest.set(stats.oldest_pending_age_s)
        self.health()

    def health(self) -> dict:
        s = self.service
        draining = bool(s and s.draining)
        store_ok = bool(s and s.store_ok)
        ready = s is not None and not draining and store_ok
        self.ready.set(1 if ready else 0)
        return {
            "live": True,
            "ready": ready,
            "draining": draining,
            "store_ok": store_ok,
            "active_calls": s.active if s else 0,
        }

    # --- HTTP ----------------------------------------------------------------------

    def serve(self, address: str, port: int) -> None:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    metrics.refresh()
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                elif path == "/healthz":
                    health = metrics.health()
                    self._send(200 if health["ready"] else 503, "application/json", json.dumps(health).encode())
                else:
                    self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

            def _send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not worth a log line each
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_metrics(settings) -> Metrics:
    metrics = Metrics()
    metrics.serve(settings.address, settings.port)
    return metrics


def _children(metric):
    """metric.labels(*values), memoised: label values here are closed vocabularies
    (decision, reason, bucket, outcome, trunk, failure class), so the cache stays small."""
    cache: dict = {}

    def child(*values):
        found = cache.get(values)
        if found is None:
            found = cache[values] = metric.labels(*values)
        return found

    return child
