"""Call control for one relayed call: bridge leg <-> trunk leg.

Small on purpose (like sippy's b2bua_simple): the legs report pjsua2 events,
this class mirrors them onto the other leg, and the service hears about
answer and end for the ledger and the canonical log line.

Rules kept here:
- the trunk's provisional responses go to the bridge, 183 with its SDP;
- the trunk's final failure goes to the bridge unchanged (486 stays 486);
  no final answer within `answer_timeout_s` becomes 408 trunk_timeout;
- SDP passes through both ways, for the first offer, re-INVITEs and UPDATEs
  (an UPDATE is answered at once with the peer's last SDP, directions fitted
  to the offer, and relayed to the peer);
- a BYE or CANCEL on one leg ends the other;
- the authorised duration is enforced with a BYE carrying a Reason header;
- REFER (transfer) and INVITE/Replaces are refused with 403 on either leg:
  pjsua would otherwise place or answer those calls by itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pjsua2 as pj

from gateway.legs import BridgeLeg, Leg, TrunkLeg
from gateway.privacy import mask_numbers_in
from policy import Reason
from sip import bye_reason_header, is_hold, reason_phrase

if TYPE_CHECKING:
    from gateway.service import GatewayService

_DISCONNECTED = pj.PJSIP_INV_STATE_DISCONNECTED
_CONFIRMED = pj.PJSIP_INV_STATE_CONFIRMED


def _headers(pairs) -> pj.SipHeaderVector:
    vector = pj.SipHeaderVector()
    for name, value in pairs:
        h = pj.SipHeader()
        h.hName = name
        h.hValue = value
        vector.append(h)
    return vector


def _body_of(raw: str) -> str | None:
    head, sep, body = raw.partition("\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition("\n\n")
    return body if body.strip() and "application/sdp" in head.lower() else None


def _ender(side: str, info) -> str:
    """Who ended a leg: its peer, or our own RFC 4028 session timer."""
    text = (info.lastReason or "").lower()
    if "session refresh" in text or "session timer" in text:  # pjsip's wording for an expiry
        return "session_timer"
    return side


class RelayedCall:
    def __init__(self, service: GatewayService, bridge: BridgeLeg, *, sip_call_id: str, log, received_at: float):
        self.service = service
        self.bridge = bridge
        self.trunk: TrunkLeg | None = None
        self.sip_call_id = sip_call_id
        self.log = log
        self.received_at = received_at          # monotonic, INVITE seen
        self.decision = None
        self.invite = None
        self.reason: Reason | None = None       # outcome code for the log line
        self.bridge_status: int | None = None   # final status sent to the bridge
        self.trunk_status: int | None = None    # final status received from the trunk
        self.setup_ms: float | None = None
        self.answered_mono: float | None = None
        self.answered_at = None                 # wall clock, for the ledger
        self.ended_by: str | None = None
        self.early_sdp_sent: str | None = None
        self.reinvite_pending_from: Leg | None = None
        self.update_pending_from: Leg | None = None
        self.timers: list = []
        self.finished = False
        self.ledger_open = False
        self.grant = None                       # store.Grant: talk time reserved so far
        self.cut_timer = None
        self.counted_active = False
        self.admission_refused = False
        self.explanation: str | None = None
        self.source: str | None = None

    # --- decisions carried out ---------------------------------------------------

    def reject(self, status: int, headers, reason: Reason) -> None:
        self.reason = reason
        self.bridge_status = status
        self.setup_ms = (time.monotonic() - self.received_at) * 1000
        if self.bridge.alive():
            op = pj.CallOpParam()
            op.statusCode = status
            op.reason = reason_phrase(status)
            op.txOption.headers = _headers(headers)
            self.bridge.hangup(op)

    def relay(self, account, target_uri: str, caller_id: str, offer_sdp: str | None, answer_timeout_s: float) -> None:
        self.reason = Reason.ALLOWED
        self.trunk = TrunkLeg(account, self)
        self.trunk.next_local_sdp = offer_sdp
        self.service.legs_opened(self)
        op = pj.CallOpParam(True)
        op.txOption.localUri = caller_id
        self.trunk.makeCall(target_uri, op)
        self.timers.append(self.service.stack.call_later(answer_timeout_s, self._answer_timeout))

    # --- leg events --------------------------------------------------------------

    def on_state(self, leg: Leg, prm) -> None:
        info = leg.getInfo()
        if info.state != _DISCONNECTED:
            return
        leg.disconnected = True
        if leg is self.trunk:
            self._trunk_ended(info)
        else:
            self._bridge_ended(info)
        self._maybe_finish()

    def on_tsx(self, leg: Leg, prm) -> None:
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx_event = event.body.tsxState
        if tsx_event.type != pj.PJSIP_EVENT_RX_MSG:
            return
        tsx = tsx_event.tsx
        if tsx.method == "UPDATE":
            if self.answered_mono is not None:
                self._on_update(leg, tsx, _body_of(tsx_event.src.rdata.wholeMsg))
            return
        if leg is not self.trunk and self.reinvite_pending_from is not self.trunk:
            return
        if tsx.method != "INVITE" or tsx.role != pj.PJSIP_ROLE_UAC:
            return
        code = tsx.statusCode
        raw = tsx_event.src.rdata.wholeMsg
        if self.reinvite_pending_from is not None:
            self._reinvite_answered(leg, code, _body_of(raw))
        elif leg is self.trunk and self.answered_mono is None:
            self._trunk_response(code, _body_of(raw))

    def on_rx_reinvite(self, leg: Leg, prm) -> None:
        """A re-INVITE (hold/resume, new media) from one leg goes to the other;
        the first leg is answered with the other's answer."""
        peer = self.trunk if leg is self.bridge else self.bridge
        if peer is None or not peer.alive() or self.answered_mono is None or self.reinvite_pending_from:
            return  # let pjsua answer it locally
        offer = prm.offer.wholeSdp
        prm.isAsync = True
        self.reinvite_pending_from = leg
        peer.next_local_sdp = offer
        op = pj.CallOpParam(True)
        peer.reinvite(op)
        self.log.info("reinvite_relayed", direction=f"{leg.side}->{peer.side}",
                      hold=" a=sendonly" in offer or "a=inactive" in offer or "c=IN IP4 0.0.0.0" in offer)

    def on_transfer_refused(self, leg: Leg, prm) -> None:
        target = prm.dstUri
        self.log.warning("transfer_refused", leg=leg.side, status=403,
                         target=mask_numbers_in(target) if self.service.mask else target,
                         explanation="call transfer (REFER) is refused: the gateway places only calls it "
                                     "has admitted, decided and metered")

    def on_replace_refused(self, leg: Leg, prm) -> None:
        self.log.warning("replace_refused", leg=leg.side, status=403,
                         explanation="an INVITE with Replaces is refused: a call can only start as a new "
                                     "dial-out through admission and policy")

    def _on_update(self, leg: Leg, tsx, sdp: str | None) -> None:
        """An UPDATE with an offer from one leg (hold/resume) goes to the other.

        pjsua answers an UPDATE before the application can ask anyone (it has
        no asynchronous answer for UPDATE, unlike re-INVITE), so the first leg
        got the peer's last SDP with its directions fitted to the offer
        (Leg.onCallSdpCreated); the peer's real answer is kept for later ones.
        """
        if tsx.role == pj.PJSIP_ROLE_UAC:  # the peer answered the UPDATE we relayed
            origin = self.update_pending_from
            if origin is not None and leg is not origin and tsx.statusCode >= 200:
                self.update_pending_from = None
                if tsx.statusCode < 300 and sdp:
                    origin.next_local_sdp = sdp
            return
        peer = self.trunk if leg is self.bridge else self.bridge
        if not sdp or peer is None or self.reinvite_pending_from is not None:
            return  # a refresh without SDP stays on its own leg

        def relay_update() -> None:  # after this callback: not inside the peer's transaction
            if not peer.alive() or self.finished:
                return
            peer.next_local_sdp = sdp
            self.update_pending_from = leg
            try:
                peer.update(pj.CallOpParam(True))
            except pj.Error as exc:
                self.update_pending_from = None
                self.log.warning("update_relay_failed", direction=f"{leg.side}->{peer.side}", error=exc.info())
                return
            self.log.info("update_relayed", direction=f"{leg.side}->{peer.side}", hold=is_hold(sdp))

        self.service.stack.after_poll(relay_update)

    # --- internals -----------------------------------------------------------------

    def _trunk_response(self, code: int, sdp: str | None) -> None:
        if not self.bridge.alive():
            return
        if 100 < code < 200:
            op = pj.CallOpParam()
            op.statusCode = code
            if sdp and code == 183 and not self.early_sdp_sent:
                op.sdp.wholeSdp = sdp
                self.early_sdp_sent = sdp
            self.bridge.answer(op)
        elif 200 <= code < 300:
            op = pj.CallOpParam()
            op.statusCode = 200
            if sdp and sdp != self.early_sdp_sent:
                op.sdp.wholeSdp = sdp
            self.bridge.next_local_sdp = sdp
            self.bridge.answer(op)
            self.trunk_status = code
            self.bridge_status = 200
            self.setup_ms = (time.monotonic() - self.received_at) * 1000
            self.answered_mono = time.monotonic()
            self.service.call_answered(self)

    def _reinvite_answered(self, leg: Leg, code: int, sdp: str | None) -> None:
        origin = self.reinvite_pending_from
        if code < 200 or origin is None or leg is origin:
            return
        self.reinvite_pending_from = None
        if not origin.alive():
            return
        op = pj.CallOpParam()
        op.statusCode = 200 if code < 300 else code
        if sdp and code < 300:
            op.sdp.wholeSdp = sdp
            origin.next_local_sdp = sdp
        origin.answer(op)

    def _trunk_ended(self, info) -> None:
        if self.answered_mono is None:
            # Failed or cancelled before answer: pass the trunk's status through.
            code = info.lastStatusCode or 500
            self.trunk_status = code
            if self.bridge.alive() and self.bridge_status is None:
                if self.reason is Reason.ALLOWED:
                    self.reason = Reason.TRUNK_TIMEOUT if code == 408 else Reason.TRUNK_FAILURE
                status = 408 if self.reason is Reason.TRUNK_TIMEOUT else code
                if status < 300:
                    status = 500
                self.bridge_status = status
                self.setup_ms = (time.monotonic() - self.received_at) * 1000
                op = pj.CallOpParam()
                op.statusCode = status
                op.reason = reason_phrase(status) if self.reason is Reason.TRUNK_TIMEOUT else info.lastReason
                if self.reason is Reason.TRUNK_TIMEOUT:
                    op.txOption.headers = _headers(self.service.reject_headers_for(self.reason, "the trunk did not answer in time"))
                self.bridge.hangup(op)
                self.ended_by = self.ended_by or "trunk"
        else:
            self.ended_by = self.ended_by or _ender("trunk", info)
            if self.bridge.alive():
                self.bridge.hangup(pj.CallOpParam())

    def _bridge_ended(self, info) -> None:
        if self.bridge_status is None:
            # CANCEL (or transport failure) before we sent a final response.
            self.bridge_status = info.lastStatusCode or 487
        self.log.debug("leg_ended", leg="bridge", status=info.lastStatusCode, text=info.lastReason)
        self.ended_by = self.ended_by or _ender("bridge", info)
        if self.trunk is not None and self.trunk.alive():
            self.trunk.hangup(pj.CallOpParam())

    def _answer_timeout(self) -> None:
        if self.answered_mono is None and self.trunk is not None and self.trunk.alive():
            self.reason = Reason.TRUNK_TIMEOUT
            self.ended_by = "gateway"
            self.trunk.hangup(pj.CallOpParam())  # CANCEL; _trunk_ended answers the bridge 408

    def cut(self, reason: Reason, text: str) -> None:
        """End an answered call from the gateway: a BYE with a Reason header on both legs."""
        if self.finished:
            return
        self.reason = reason
        self.ended_by = "gateway"
        self.log.info("call_cut", reason=str(reason), detail=text)
        header = [bye_reason_header(str(reason))]
        for leg in (self.bridge, self.trunk):
            if leg is not None and leg.alive():
                op = pj.CallOpParam()
                op.txOption.headers = _headers(header)
                leg.hangup(op)

    def hangup_all(self, reason: Reason, text: str) -> None:
        """Shutdown path: end the call whatever its state."""
        if self.answered_mono is not None:
            self.cut(reason, text)
            return
        self.reason = reason
        self.ended_by = "gateway"
        if self.trunk is not None and self.trunk.alive():
            self.trunk.hangup(pj.CallOpParam())
        if self.bridge.alive() and self.bridge_status is None:
            self.reject(503, self.service.reject_headers_for(Reason.OVERLOADED, text, retry_after_s=5), reason)

    def release_legs(self) -> None:
        """Free both pj.Call objects now, once their last callback has returned.

        pjsua2 keeps a Call's slot number after DISCONNECTED, and its destructor
        hangs up whatever call is active in that slot. Legs kept alive by the
        leg <-> relay reference cycle until some later garbage collection could
        outlive their slot's reuse and hang up a stranger's call; breaking the
        cycle here destroys them while their slots are still free.
        """
        for leg in (self.bridge, self.trunk):
            if leg is not None:
                leg.relay = None

    def _maybe_finish(self) -> None:
        if self.finished:
            return
        if not self.bridge.disconnected:
            return
        if self.trunk is not None and not self.trunk.disconnected:
            return
        self.finished = True
        for timer in self.timers:
            timer.cancel()
        self.service.call_finished(self)
