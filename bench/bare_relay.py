"""The floor under the gateway: a bare pjsua2 B2BUA on the same build.

    .venv/bin/python bench/bare_relay.py PORT TRUNK_HOST:PORT

Same technique as gateway/relay.py (loop media transport, no sound device,
SDP passed through in onCallSdpCreated and answer(), one thread polling
libHandleEvents), and nothing else: no admission, no parsing, no policy, no
ledger, no logging. gateway_bench.py runs it under the same SIPp load to
show how much of the gateway's CPU per call is pjsua2 itself. Not a product:
it relays every INVITE to the trunk and has no error handling beyond what
keeps it alive.
"""

from __future__ import annotations

import signal
import sys

import pjsua2 as pj

DISCONNECTED = pj.PJSIP_INV_STATE_DISCONNECTED


def body_of(raw: str) -> str | None:
    _, sep, body = raw.partition("\r\n\r\n")
    return body if sep and body.strip() else None


class Leg(pj.Call):
    def __init__(self, account, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.peer: Leg | None = None
        self.sdp: str | None = None
        self.gone = False
        self.answered = False

    def onCallState(self, prm):
        if self.isActive() or self.getInfo().state != DISCONNECTED:
            return
        self.gone = True
        peer = self.peer
        if peer is not None and not peer.gone and peer.isActive():
            peer.hangup(pj.CallOpParam())
        if peer is None or peer.gone:
            pending.append(lambda: (live.discard(self), live.discard(peer), self._unlink()))

    def _unlink(self):
        if self.peer is not None:
            self.peer.peer = None
        self.peer = None

    def onCallSdpCreated(self, prm):
        if self.sdp:
            prm.sdp.wholeSdp = self.sdp

    def onCallTsxState(self, prm):
        if not isinstance(self, TrunkLeg):
            return
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx_event = event.body.tsxState
        if tsx_event.type != pj.PJSIP_EVENT_RX_MSG:
            return
        tsx = tsx_event.tsx
        if tsx.method != "INVITE" or tsx.role != pj.PJSIP_ROLE_UAC or self.answered:
            return
        bridge = self.peer
        if bridge is None or bridge.gone or not bridge.isActive():
            return
        code = tsx.statusCode
        if not 100 < code < 300:
            return  # a failure ends the trunk leg; onCallState then ends the bridge leg
        op = pj.CallOpParam()
        op.statusCode = 200 if code >= 200 else code
        if code >= 200:
            sdp = body_of(tsx_event.src.rdata.wholeMsg)
            if sdp:
                op.sdp.wholeSdp = sdp
            bridge.sdp = sdp
            self.answered = True
        bridge.answer(op)


class TrunkLeg(Leg):
    pass


class Account(pj.Account):
    def __init__(self, trunk_uri: str):
        super().__init__()
        self.trunk_uri = trunk_uri

    def onIncomingCall(self, prm):
        bridge = Leg(self, prm.callId)
        live.add(bridge)
        offer = body_of(prm.rdata.wholeMsg)
        pending.append(lambda: self._relay(bridge, offer))

    def _relay(self, bridge: Leg, offer: str | None) -> None:
        if bridge.gone or not bridge.isActive():
            return
        trunk = TrunkLeg(self)
        trunk.peer, bridge.peer = bridge, trunk
        trunk.sdp = offer
        live.add(trunk)
        trunk.makeCall(self.trunk_uri, pj.CallOpParam(True))


live: set[Leg] = set()
pending: list = []


def main(argv: list[str]) -> int:
    port, trunk = int(argv[0]), argv[1]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = 8192
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.hasIoqueue = False
    cfg.medConfig.noVad = True
    cfg.medConfig.maxMediaPorts = 2 * 8192 + 2
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNoDev()
    acfg = pj.AccountConfig()
    acfg.idUri = "sip:bare-relay@127.0.0.1"
    acfg.mediaConfig.useLoopMedTp = True
    acfg.mediaConfig.lockCodecEnabled = False
    acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_OPTIONAL
    account = Account(f"sip:+12125550100@{trunk}")
    account.create(acfg, True)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    signal.signal(signal.SIGINT, lambda *_: running.__setitem__(0, False))
    print("bare_relay ready", flush=True)
    while running[0]:
        ep.libHandleEvents(10)
        while pending:
            jobs = pending[:]
            del pending[:]
            for job in jobs:
                job()
    ep.hangupAllCalls()
    for _ in range(20):
        ep.libHandleEvents(5)
    live.clear()
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
