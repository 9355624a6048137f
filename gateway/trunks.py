"""The carrier side: where each trunk is, whether it takes calls, and how a
call is placed on it.

- Addresses (RFC 3263). A trunk whose URI names a host is looked up through
  pjsip's resolver when nameservers are configured (SRV, then A/AAAA;
  asynchronous), else, or when those servers cannot resolve it, with the
  system resolver (getaddrinfo: A/AAAA and /etc/hosts) in a worker thread.
  Nothing blocks the SIP loop. The addresses are refreshed every
  `RESOLVE_EVERY_S`; a call tries them in order (SRV priority, then weight)
  before it fails over to the next trunk, the Request-URI keeping the name.
- Health. A trunk is marked down after `down_after` failed OPTIONS pings, a
  failed registration, or as many calls in a row answered 503; up again on
  the next good ping or registration, or (with neither configured) after a
  hold-down, when calls try it again.
- Routes. `routes()` turns the trunks that `policy.routing.route` chose into
  the `TrunkRoute`s the call's state machine dials, one per address.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import replace

from call.actions import CallRecord
from call.events import TrunkRoute
from gateway import _sipcore as sc
from policy.routing import Trunk, caller_id_for


class TrunkHealth:
    """One trunk's state: up or down, and the addresses its host name resolved to."""

    HOLD_DOWN_S = 60.0

    __slots__ = (
        "down",
        "failures",
        "host",
        "ping_failures",
        "ping_req",
        "port",
        "reason",
        "reg_id",
        "resolving",
        "since",
        "targets",
        "trunk",
    )

    def __init__(self, trunk: Trunk, host: str, port: int):
        self.trunk = trunk
        self.down = False
        self.reason = ""
        self.failures = 0  # calls in a row answered 503
        self.ping_failures = 0  # pings in a row unanswered (or 503)
        self.since = 0.0
        self.ping_req: int | None = None
        self.reg_id: int | None = None
        self.host = host  # of the URI; "" when it is an IP address (nothing to resolve)
        self.port = port  # of the URI; 0 when absent (SRV decides)
        self.targets: tuple[tuple[str, str], ...] = ()  # (transport, "ip:port"), in the order to try
        self.resolving = False


class TrunkSide:
    RESOLVE_EVERY_S = 30.0
    MAX_TARGETS = 4  # addresses tried per trunk per call, before the next trunk

    def __init__(self, *, stack, runtime, metrics, log):
        self.stack = stack
        self.runtime = runtime
        self.metrics = metrics
        self.log = log
        self.contacts: dict[str, str] = {}  # transport -> our Contact toward a trunk
        self.down: frozenset[str] = frozenset()
        self.health: dict[str, TrunkHealth] = {}
        for trunk in runtime.trunks:
            _, hostport, _, _ = uri_parts(trunk)
            host, port = split_hostport(hostport)
            self.health[trunk.name] = TrunkHealth(trunk, "" if _is_ip(host) else host, port)
        self._pings: dict[int, TrunkHealth] = {}
        self._registrations: dict[int, TrunkHealth] = {}
        self._lookups: dict[int, TrunkHealth] = {}
        self._turn = 0
        self._pjsip_dns = False

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, contacts: dict[str, str]) -> None:
        self.contacts = contacts
        if self.runtime.nameservers and any(h.host for h in self.health.values()):
            sc.set_nameservers([tuple(ns) for ns in self.runtime.nameservers])
            self._pjsip_dns = True
        for health in self.health.values():
            if self.metrics:
                self.metrics.trunk_up.labels(health.trunk.name).set(1)
            if health.host:
                self._resolve(health)
            if health.trunk.options_ping_s:
                self.stack.call_later(min(1.0, health.trunk.options_ping_s), lambda h=health: self._ping(h))
            if health.trunk.register:
                self._register(health)

    def stop(self) -> None:
        """Before the stack goes: end carrier registrations."""
        sc.unregister_all()

    def next_turn(self) -> int:
        """A counter for round-robin among trunks of equal rank."""
        self._turn += 1
        return self._turn

    # --- placing a call --------------------------------------------------------------------

    def routes(self, trunks: tuple[Trunk, ...], e164: str, tenant, default_caller_id: str) -> tuple[TrunkRoute, ...]:
        """The ways to place the call, in order: each trunk's addresses in turn."""
        out: list[TrunkRoute] = []
        for trunk in trunks:
            base = self._route(trunk, e164, tenant, default_caller_id)
            health = self.health.get(trunk.name)
            targets = health.targets if health is not None else ()
            if not targets:  # an IP address, or not resolved yet: pjsip sends to the URI
                out.append(base)
                continue
            for transport, hop in targets[: self.MAX_TARGETS]:
                out.append(_with_hop(base, hop, transport))
        return tuple(out)

    def _route(self, trunk: Trunk, e164: str, tenant, default_caller_id: str) -> TrunkRoute:
        """How to place the call on `trunk`: Request-URI, To, From (the caller ID), Contact, credentials."""
        scheme, hostport, params, transport = uri_parts(trunk)
        number = "+" + e164.lstrip("+")
        target = f"{scheme}:{number}@{hostport}{params};user=phone"
        caller_id = caller_id_for(tenant, trunk, default_caller_id)
        headers = (("P-Asserted-Identity", f"<{caller_id}>"),) if trunk.p_asserted_identity else ()
        return TrunkRoute(
            name=trunk.name,
            target=target,
            to_uri=f"<{scheme}:{number}@{hostport};user=phone>",
            from_uri=f"<{caller_id}>",
            contact=self.contacts.get(transport) or self.contacts["udp"],
            username=trunk.username,
            password=trunk.password,
            headers=headers,
            setup_timeout_s=trunk.setup_timeout_s or None,
            transport=transport,
        )

    def record(self, record: CallRecord) -> None:
        """A finished call's attempts: metrics, and a trunk that answers `down_after`
        calls in a row with 503 is marked down."""
        for attempt in record.trunk_attempts:
            health = self.health.get(attempt.trunk)
            if health is None or attempt.status is None:
                continue
            if attempt.status == 503:
                health.failures += 1
                if health.failures >= health.trunk.down_after and not health.down:
                    self._mark_down(health, f"{health.failures} calls in a row answered 503")
            else:
                health.failures = 0
                if health.down and 200 <= attempt.status < 300:
                    self._mark_up(health, "answered a call")
            if self.metrics:
                self.metrics.trunk_attempt(attempt.trunk, attempt.status)

    # --- addresses -------------------------------------------------------------------------

    def _resolve(self, health: TrunkHealth) -> None:
        self.stack.call_later(self.RESOLVE_EVERY_S, lambda: self._resolve(health))
        if health.resolving:
            return
        health.resolving = True
        _, _, params, transport = uri_parts(health.trunk)
        explicit = health.trunk.transport or _transport_param(params) or ""
        if self._pjsip_dns:
            try:
                req = sc.resolve(health.host, health.port, explicit)
            except ValueError as exc:
                self._resolved(health, (), f"cannot start the lookup: {exc}")
                return
            self._lookups[req] = health
            return
        self._system_lookup(health, transport)

    def on_resolved(self, req: int, lines: str, error: str) -> None:
        health = self._lookups.pop(req, None)
        if health is None:
            return
        targets = []
        for line in lines.splitlines():
            transport, _, hop = line.partition(" ")
            if hop:
                targets.append((transport.lower().rstrip("6"), hop))
        if targets:
            self._resolved(health, tuple(targets), "")
            return
        # Not in DNS (or the servers did not answer): /etc/hosts and the system's own resolver.
        _, _, _, transport = uri_parts(health.trunk)
        self._system_lookup(health, transport, dns_error=error or "no address")

    def _system_lookup(self, health: TrunkHealth, transport: str, dns_error: str = "") -> None:
        host, port = health.host, health.port or (5061 if transport == "tls" else 5060)
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM

        def lookup() -> None:
            try:
                infos = socket.getaddrinfo(host, port, type=kind)
                hops = tuple(
                    dict.fromkeys(
                        (transport, f"[{i[4][0]}]:{i[4][1]}" if i[0] == socket.AF_INET6 else f"{i[4][0]}:{i[4][1]}")
                        for i in infos
                    )
                )
                error = ""
            except OSError as exc:
                hops, error = (), str(exc)
            if dns_error and error:
                error = f"{dns_error}; system resolver: {error}"
            self.stack.call_soon(lambda: self._resolved(health, hops, error))

        threading.Thread(target=lookup, name=f"resolve-{health.trunk.name}", daemon=True).start()

    def _resolved(self, health: TrunkHealth, targets: tuple[tuple[str, str], ...], error: str) -> None:
        health.resolving = False
        if not targets:
            # Keep the last known addresses: a DNS outage must not stop the calls.
            self.log.warning(
                "trunk_resolve_failed",
                trunk=health.trunk.name,
                host=health.host,
                error=error,
                kept=[hop for _, hop in health.targets],
            )
            return
        if targets != health.targets:
            self.log.info(
                "trunk_resolved",
                trunk=health.trunk.name,
                host=health.host,
                targets=[f"{transport} {hop}" for transport, hop in targets],
            )
        health.targets = targets

    # --- health ----------------------------------------------------------------------------

    def _ping(self, health: TrunkHealth) -> None:
        trunk = health.trunk
        if health.ping_req is not None:  # the last one was never answered
            self._pings.pop(health.ping_req, None)
            health.ping_req = None
            self._ping_result(health, ok=False, why="no answer to OPTIONS")
        scheme, hostport, params, _ = uri_parts(trunk)
        try:
            req = sc.request("OPTIONS", f"{scheme}:{hostport}{params}", f"<sip:gw@{self.runtime.gateway_host}>", None)
        except ValueError as exc:
            self.log.warning("trunk_ping_failed", trunk=trunk.name, error=str(exc))
            req = 0
        if req:
            health.ping_req = req
            self._pings[req] = health
        else:
            self._ping_result(health, ok=False, why="OPTIONS could not be sent")
        self.stack.call_later(trunk.options_ping_s, lambda: self._ping(health))

    def on_ping_response(self, req: int, code: int, local: bool) -> None:
        health = self._pings.pop(req, None)
        if health is None:
            return
        health.ping_req = None
        # Any answer but a failure of our own or a 503 says the carrier is there (405 included).
        ok = not local and code != 503
        self._ping_result(health, ok=ok, why=f"OPTIONS answered {code}" + (" (no answer)" if local else ""))

    def _ping_result(self, health: TrunkHealth, *, ok: bool, why: str) -> None:
        if ok:
            health.ping_failures = 0
            if health.down:
                self._mark_up(health, why)
            return
        health.ping_failures += 1
        if health.ping_failures >= health.trunk.down_after and not health.down:
            self._mark_down(health, f"{health.ping_failures} failed pings: {why}")

    def _register(self, health: TrunkHealth) -> None:
        trunk = health.trunk
        scheme, hostport, params, transport = uri_parts(trunk)
        user = trunk.username or "gw"
        try:
            reg = sc.register(
                f"{scheme}:{hostport}{params}",
                f"<{scheme}:{user}@{hostport}>",
                self.contacts.get(transport) or self.contacts["udp"],
                600,
                trunk.username,
                trunk.password,
            )
        except ValueError as exc:
            self._mark_down(health, f"registration could not be sent: {exc}")
            return
        if reg:
            health.reg_id = reg
            self._registrations[reg] = health

    def on_registration(self, reg: int, code: int, reason: str, expires: int) -> None:
        health = self._registrations.get(reg)
        if health is None:
            return
        if 200 <= code < 300:
            self.log.info("trunk_registered", trunk=health.trunk.name, expires_s=expires)
            if health.down:
                self._mark_up(health, "registered")
        else:
            self._mark_down(health, f"registration failed: {code or 'no answer'} {reason or ''}".strip())

    def _mark_down(self, health: TrunkHealth, why: str) -> None:
        health.down = True
        health.reason = why
        health.since = time.monotonic()
        self.down = frozenset(name for name, h in self.health.items() if h.down)
        self.log.warning("trunk_down", trunk=health.trunk.name, reason=why)
        if self.metrics:
            self.metrics.trunk_up.labels(health.trunk.name).set(0)
        if not health.trunk.options_ping_s and not health.trunk.register:
            # Nothing will tell us it is back: let calls try it again after a while.
            self.stack.call_later(
                TrunkHealth.HOLD_DOWN_S, lambda: health.down and self._mark_up(health, "hold-down elapsed")
            )

    def _mark_up(self, health: TrunkHealth, why: str) -> None:
        health.down = False
        health.failures = health.ping_failures = 0
        self.down = frozenset(name for name, h in self.health.items() if h.down)
        self.log.info(
            "trunk_up", trunk=health.trunk.name, reason=why, down_for_s=round(time.monotonic() - health.since, 1)
        )
        if self.metrics:
            self.metrics.trunk_up.labels(health.trunk.name).set(1)


def uri_parts(trunk: Trunk) -> tuple[str, str, str, str]:
    """(scheme, host[:port], ;params, transport) of a trunk's URI; the `transport`
    key, if set, is added as a URI parameter."""
    scheme, _, rest = trunk.uri.partition(":")
    hostport, _, params = rest.split("@", 1)[-1].partition(";")
    params = ";" + params if params else ""
    transport = trunk.transport or _transport_param(params) or ("tls" if scheme == "sips" else "udp")
    if trunk.transport and not _transport_param(params):
        params += f";transport={trunk.transport}"
    return scheme, hostport, params, transport


def split_hostport(hostport: str) -> tuple[str, int]:
    """("host", port or 0) of "host", "host:port", "[v6]" or "[v6]:port"."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 0
    host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else 0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _transport_param(params: str) -> str | None:
    for param in params.lower().split(";"):
        if param.startswith("transport="):
            return param.split("=", 1)[1] or None
    return None


def _with_hop(route: TrunkRoute, hop: str, transport: str) -> TrunkRoute:
    return replace(route, next_hop=hop, transport=transport)
