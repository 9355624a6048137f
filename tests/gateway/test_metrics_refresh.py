"""`Metrics.refresh()`: what a scrape reads from the service and its ledger writer.

No SIP stack: a stand-in service holding a real `LedgerWriter` on SQLite,
whose thread is held inside an op so that writes queue up behind it.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from prometheus_client import generate_latest

from gateway.metrics import Metrics
from store import LedgerWriter, open_store


def value(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_scrape_reads_the_ledger_writers_backlog(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    s = open_store(url, instance_id="gw-test")
    s.migrate()
    s.close()
    writer = LedgerWriter(url, post=lambda callback: None, instance_id="gw-test", background_maintenance=False)
    release, running = threading.Event(), threading.Event()

    def stalled(store):
        running.set()
        release.wait(10)

    metrics = Metrics()
    metrics.bind(SimpleNamespace(active=2, draining=False, store_ok=True, ledger=writer))
    try:
        metrics.refresh()
        assert value(metrics, "dialout_ledger_queue_depth") == 0
        assert value(metrics, "dialout_ledger_oldest_pending_seconds") == 0
        assert value(metrics, "dialout_active_calls") == 2 and value(metrics, "dialout_ready") == 1

        writer.submit(stalled)
        assert running.wait(10)
        writer.submit(lambda store: None)
        writer.submit(lambda store: None)
        time.sleep(0.05)
        metrics.refresh()
        assert value(metrics, "dialout_ledger_queue_depth") == 3
        assert value(metrics, "dialout_ledger_oldest_pending_seconds") >= 0.05
        text = generate_latest(metrics.registry).decode()
        assert "dialout_ledger_queue_depth 3.0" in text
    finally:
        release.set()
        assert writer.stop(10)
    metrics.refresh()
    assert value(metrics, "dialout_ledger_queue_depth") == 0


def test_without_a_service_a_scrape_says_not_ready():
    metrics = Metrics()
    metrics.refresh()
    assert value(metrics, "dialout_ready") == 0
    assert value(metrics, "dialout_ledger_queue_depth") == 0


def test_every_rejection_reason_is_exported_from_the_start_at_zero():
    from policy import Reason

    metrics = Metrics()
    for reason in ("fraud_suspected", "limit_rate", "no_entitlement", "overloaded", "no_route"):
        assert value(metrics, "dialout_calls_total", decision="deny", reason=reason, bucket="none") == 0
    # Outcomes of relayed calls carry a bucket: those series appear with their first call.
    assert value(metrics, "dialout_calls_total", decision="deny", reason="allowed", bucket="none") is None
    assert {r for r in Reason if r.stage in ("success", "relay")} == {
        Reason.ALLOWED,
        Reason.TRUNK_FAILURE,
        Reason.TRUNK_TIMEOUT,
        Reason.DURATION_EXHAUSTED,
    }
