"""Admission control: the checks made before any directory lookup.

Pure and cheap: a CIDR allow-list, a global concurrency ceiling and a
calls-per-second token bucket. Overload is answered at once with 503 and
Retry-After, so it never turns into timeouts at the bridge.
"""

from __future__ import annotations

import ipaddress
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

    __slots__ = ("rate", "burst", "tokens", "stamp")

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
    def __init__(self, trusted_sources, *, max_concurrent_calls: int, max_calls_per_second: float,
                 require_tls: bool = False):
        self.trusted = tuple(trusted_sources)
        self.max_concurrent = max_concurrent_calls
        self.bucket = TokenBucket(max_calls_per_second)
        self.require_tls = require_tls
        self._trusted_cache: dict[str, bool] = {}

    def is_trusted(self, host: str) -> bool:
        known = self._trusted_cache.get(host)
        if known is None:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                known = any(addr in net for net in self.trusted)
            if len(self._trusted_cache) < 10_000:  # bounded: a flood of sources must not grow it
                self._trusted_cache[host] = known
        return known

    def check(self, *, source_host: str, transport: str, active_calls: int, now: float,
              draining: bool = False) -> Refusal | None:
        """The first admission rule that fails, or None to go on to the policy."""
        if not self.is_trusted(source_host):
            return Refusal(Reason.UNTRUSTED_SOURCE, "the request did not come from a trusted bridge address")
        if self.require_tls and transport != "tls":
            return Refusal(Reason.UNTRUSTED_SOURCE, "the bridge must connect over TLS")
        if draining:
            return Refusal(Reason.OVERLOADED, "the gateway is shutting down and takes no new calls", 5)
        if active_calls >= self.max_concurrent:
            return Refusal(Reason.OVERLOADED,
                           f"the gateway is at its limit of {self.max_concurrent} concurrent calls", 1)
        wait = self.bucket.take(now)
        if wait is not None:
            return Refusal(Reason.OVERLOADED,
                           f"the gateway is over its rate of {self.bucket.rate:g} calls per second",
                           max(1, math.ceil(wait)))
        return None


def split_host_port(address: str) -> tuple[str, int | None]:
    """`rdata.srcAddress` is "1.2.3.4:5060" or "[::1]:5060"."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else None
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:
        return address, None
    return host, int(port) if port.isdigit() else None
