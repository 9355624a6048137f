"""Admission control: the checks made before any parsing or lookup.

Pure and cheap: draining, a global concurrency ceiling and a calls-per-second
token bucket. Overload is answered at once with 503 and Retry-After, so it
never turns into timeouts at the bridge. (Trusted sources and TLS are
checked before this, in the SIP engine: csrc/sipcore.c's filter module.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policy import Reason


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Reason
    sentence: str
    retry_after_s: int | None = None


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.stamp: float | None = None

    def take(self, now: float) -> float | None:
        """Take one token; return None on success, else seconds until one is due."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class Admission:
    def __init__(self, *, max_concurrent_calls: int, max_calls_per_second: float):
        self.max_concurrent = max_concurrent_calls
        self.bucket = TokenBucket(max_calls_per_second)

    def check(self, *, active_calls: int, now: float, draining: bool = False) -> Refusal | None:
        """The first admission rule that fails, or None to go on to the policy."""
        if draining:
            return Refusal(Reason.OVERLOADED, "the gateway is shutting down and takes no new calls", 5)
        if active_calls >= self.max_concurrent:
            return Refusal(
                Reason.OVERLOADED, f"the gateway is at its limit of {self.max_concurrent} concurrent calls", 1
            )
        wait = self.bucket.take(now)
        if wait is not None:
            return Refusal(
                Reason.OVERLOADED,
                f"the gateway is over its rate of {self.bucket.rate:g} calls per second",
                max(1, math.ceil(wait)),
            )
        return None
