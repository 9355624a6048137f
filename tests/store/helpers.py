"""Helpers shared by the store tests: a call to open, times, a recording logger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from store import BucketSpec, CallOpen

UTC = UTC
T0 = datetime(2018, 7, 10, 12, 0, tzinfo=UTC)
POOL = "tenant_pool"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call(
    call_id="c1",
    *chain: BucketSpec,
    tenant="t1",
    organizer="alice",
    e164="+33142685300",
    region="FR",
    tz="Europe/Paris",
    started=T0,
    increment_s=60,
    max_duration_s=None,
) -> CallOpen:
    chain = chain or (BucketSpec(POOL, 600),)
    return CallOpen(
        call_id,
        tenant,
        organizer,
        e164,
        region,
        tz,
        started,
        tuple(chain),
        increment_s=increment_s,
        max_duration_s=max_duration_s,
    )


def snap(store, now=T0, tenant="t1", organizer="alice", e164=None, tz="Europe/Paris"):
    return store.snapshot(tenant=tenant, organizer=organizer, e164=e164, tz=tz, now=now)


class Recorder:
    """A structlog-like logger that keeps the events."""

    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []

    def _log(level):
        def method(self, event, **kw):
            self.events.append((level, event, kw))

        return method

    debug, info, warning, error, exception = (
        _log("debug"),
        _log("info"),
        _log("warning"),
        _log("error"),
        _log("exception"),
    )

    def named(self, event):
        return [kw for _level, e, kw in self.events if e == event]
