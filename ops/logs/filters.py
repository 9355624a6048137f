"""`--tenant`, `--since`, `--until` and `--reason`, and their compiled form for the hot loops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ops.logs.reading import LogInputError

UTC = UTC


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 date or date-time; without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LogInputError(
            f"{what}: expected an ISO 8601 date or date-time such as 2026-11-22T05:00:00Z, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def canonical_ts(when: datetime) -> str:
    """The layout structlog's TimeStamper(fmt="iso", utc=True) writes."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_canonical_ts(ts: str) -> bool:
    return len(ts) == 27 and ts[26] == "Z" and ts[10] == "T" and ts[19] == "."


@dataclass(frozen=True, slots=True)
class Filters:
    """`--tenant`, `--since` (inclusive), `--until` (exclusive) and `--reason`."""

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None

    @classmethod
    def from_strings(
        cls, tenant: str | None = None, since: str | None = None, until: str | None = None, reason: str | None = None
    ) -> Filters:
        s = parse_time(since, "--since") if since is not None else None
        u = parse_time(until, "--until") if until is not None else None
        if s is not None and u is not None and u <= s:
            raise LogInputError(f"--until ({until}) must be later than --since ({since})")
        return cls(tenant=tenant or None, since=s, until=u, reason=reason or None)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.tenant, self.since, self.until, self.reason))

    def to_dict(self) -> dict[str, str | None]:
        return {
            "tenant": self.tenant,
            "since": canonical_ts(self.since) if self.since else None,
            "until": canonical_ts(self.until) if self.until else None,
            "reason": self.reason,
        }


class Matcher:
    """Filters compiled for the hot loop."""

    __slots__ = ("active", "reason", "since", "since_s", "tenant", "tenant_mark", "timed", "until", "until_s")

    def __init__(self, f: Filters):
        self.tenant = f.tenant
        self.reason = f.reason
        self.since = f.since
        self.until = f.until
        self.since_s = canonical_ts(f.since) if f.since else None
        self.until_s = canonical_ts(f.until) if f.until else None
        self.timed = f.since is not None or f.until is not None
        # The tenant's JSON-encoded value must be somewhere in a matching line.
        self.tenant_mark = json.dumps(f.tenant).encode() if f.tenant else None
        self.active = f.active

    def in_time(self, ts: Any) -> bool:
        if not self.timed:
            return True
        if not isinstance(ts, str):
            return False
        if _is_canonical_ts(ts):
            if self.since_s is not None and ts < self.since_s:
                return False
            return self.until_s is None or ts < self.until_s
        try:
            when = parse_time(ts)
        except LogInputError:
            return False
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)

    def call(self, e: dict[str, Any]) -> bool:
        if self.tenant is not None and e.get("tenant") != self.tenant:
            return False
        if self.reason is not None and e.get("reason") != self.reason:
            return False
        return self.in_time(e.get("timestamp"))

    def refusal(self, e: dict[str, Any]) -> bool:
        # Admission refusals carry no tenant (nothing about the call is read).
        if self.tenant is not None:
            return False
        if self.reason is not None and e.get("reason") != self.reason:
            return False
        return self.in_time(e.get("timestamp"))
