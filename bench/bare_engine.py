"""The floor under the gateway: a bare B2BUA on the gateway's own SIP engine.

    .venv/bin/python bench/bare_engine.py PORT TRUNK_HOST:PORT

The same pjsua2 endpoint and the same C engine (gateway._sipcore) as the
gateway, driven by the smallest relay that works: every INVITE goes to the
trunk, provisional and final answers come back, ACK and BYE are passed on.
No admission, no parsing, no policy, no ledger, no state machine, no logging.
gateway_bench.py runs it under the same SIPp load to show how much of the
gateway's CPU per call is the SIP stack itself. Not a product: no error
handling beyond what keeps it alive.
"""

from __future__ import annotations

import re
import signal
import sys

import pjsua2 as pj

from gateway import _sipcore as sc

_USER = re.compile(rb"^INVITE sip:([^@;> ]+)")


def main(argv: list[str]) -> int:
    port, trunk = int(argv[0]), argv[1]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.hasIoqueue = False
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNoDev()
    peer: dict[int, int] = {}
    contact = f"<sip:gw@127.0.0.1:{port}>"

    def on_event(kind, leg, req, code, flags, f0, f1, f2, f3, f4, f5):
        if kind == sc.EV_INVITE:
            match = _USER.match(f0)
            body = f0.partition(b"\r\n\r\n")[2] or None
            user = match.group(1).decode() if match else "+12125550100"
            try:
                out = sc.dial(
                    "<sip:+18005550100@127.0.0.1>",
                    f"<sip:{user}@{trunk};user=phone>",
                    f"sip:{user}@{trunk};user=phone",
                    contact,
                    None,
                    "application/sdp",
                    body,
                    None,
                    None,
                )
            except (ValueError, ConnectionError):
                sc.answer(leg, 503, None, None, None, None)
                return
            peer[leg], peer[out] = out, leg
        elif kind == sc.EV_PROVISIONAL:
            sc.answer(peer.get(leg, 0), code, f0, None, f2, f3)
        elif kind == sc.EV_ANSWER:
            sc.ack(leg, None, None)
            sc.answer(peer.get(leg, 0), 200, None, None, f2, f3)
        elif kind == sc.EV_FAILED:
            other = peer.pop(leg, 0)
            peer.pop(other, None)
            sc.answer(other, code, f0, None, None, None)
        elif kind in (sc.EV_BYE, sc.EV_CANCELLED, sc.EV_ENDED):
            other = peer.pop(leg, 0)
            peer.pop(other, None)
            if other:
                sc.hangup(other, 487)
        elif kind == sc.EV_REQUEST:
            sc.respond(req, 200, None, None, None, None)

    sc.init(on_event)
    # Loopback is the bridge: the engine drops out-of-dialog requests from untrusted sources.
    sc.configure(trusted=[(4, bytes([127, 0, 0, 0]), 8)], untrusted="drop", require_tls=False)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    signal.signal(signal.SIGINT, lambda *_: running.__setitem__(0, False))
    print("bare_engine ready", flush=True)
    while running[0]:
        sc.poll(10)
    for leg in list(peer):
        sc.hangup(leg, 503)
    for _ in range(20):
        sc.poll(5)
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
