"""Values that cross the store's interface: frozen, slotted, hashable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

BUCKETS = ("promotion", "usca_unlimited", "tenant_pool", "credits")

# Credits are a balance, not a monthly allowance: their bucket row is kept
# under this period key for the tenant's whole life.
LIFETIME = "lifetime"


class StoreError(Exception):
    """The store cannot do its job: bad URL, unreachable database, schema too new."""


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One entry of a call's charging chain, in order."""

    bucket: str
    # Size of the bucket for this period in its unit: minutes for promotion
    # (the cap) and tenant_pool (60 x licences); money for credits (the
    # tenant's configured balance); None = unlimited.
    capacity: float | None
    rate_per_minute: float = 0.0  # credits only: money per minute for this destination

    def __post_init__(self) -> None:
        if self.bucket not in BUCKETS:
            raise ValueError(f"unknown bucket {self.bucket!r}; expected one of {', '.join(BUCKETS)}")


@dataclass(frozen=True, slots=True)
class CallOpen:
    call_id: str
    tenant: str
    organizer: str
    e164: str
    region: str
    tz: str  # tenant IANA timezone, for period and day keys
    started_at: datetime  # aware
    chain: tuple[BucketSpec, ...]
    increment_s: int = 60  # 60 = per started minute, 1 = per second
    max_duration_s: int | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    bucket: str  # bucket of the newest chunk
    granted_s: int | None  # talk seconds covered so far; None = unlimited (still capped by max_duration_s)


@dataclass(frozen=True, slots=True)
class Settlement:
    call_id: str
    outcome: str
    talk_s: float
    billed_units: int
    increment_s: int
    charges: tuple[tuple[str, float], ...]  # (bucket, amount in its unit), in chain order
    recovered: bool

    @property
    def billed_minutes(self) -> float:
        return self.billed_units * self.increment_s / 60.0
