"""A small authoritative DNS server on loopback for the RFC 3263 tests (dnslib).

    with LocalDns({"_sip._udp.carrier.test": [("SRV", (10, 0, 5070, "a.carrier.test"))],
                   "a.carrier.test": [("A", "127.0.0.1")]}) as dns:
        ... dns.port ...; dns.queries -> [("_sip._udp.carrier.test.", "SRV"), ...]

A name it does not hold gets NXDOMAIN.
"""

from __future__ import annotations

import threading

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.integration.sipp_runner import free_port

_RDATA = {"A": A, "AAAA": AAAA, "SRV": lambda v: SRV(priority=v[0], weight=v[1], port=v[2], target=v[3])}


class _Zone(BaseResolver):
    def __init__(self, records: dict[str, list[tuple[str, object]]]):
        self.records = {name.rstrip(".").lower() + ".": rrs for name, rrs in records.items()}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        qname, qtype = str(request.q.qname).lower(), QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
        rrs = self.records.get(qname)
        if rrs is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for kind, value in rrs:
            if kind == qtype:
                reply.add_answer(RR(qname, getattr(QTYPE, kind), rdata=_RDATA[kind](value), ttl=60))
        return reply


class LocalDns:
    def __init__(self, records: dict[str, list[tuple[str, object]]]):
        self.zone = _Zone(records)
        self.port = free_port()
        self.server = DNSServer(
            self.zone,
            port=self.port,
            address="127.0.0.1",
            logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False),
        )

    @property
    def queries(self) -> list[tuple[str, str]]:
        with self.zone.lock:
            return list(self.zone.queries)

    def __enter__(self) -> LocalDns:
        self.server.start_thread()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
