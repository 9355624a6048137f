"""The two call legs of a relayed call, as thin pjsua2 `Call` subclasses.

A leg only forwards pjsua2's callbacks to its `RelayedCall` (gateway/relay.py),
which owns the call-control logic. Every callback is guarded: an exception is
logged with the call's context and the gateway keeps serving other calls.
"""

from __future__ import annotations

import pjsua2 as pj

from sip import answer_directions


class Leg(pj.Call):
    side = "?"

    def __init__(self, account, relay, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.relay = relay
        # The SDP this leg should offer or answer next, set by the relay
        # before pjsua asks for it in onCallSdpCreated.
        self.next_local_sdp: str | None = None
        self.disconnected = False

    def alive(self) -> bool:
        """True while an operation on this leg is safe (see field notes: an
        operation on a disconnected call aborts the process)."""
        return not self.disconnected and self.isActive()

    def _guard(self, handler, prm) -> None:
        if self.relay is None:
            return  # released after both legs ended (see RelayedCall.release_legs)
        try:
            handler(self, prm)
        except Exception:
            self.relay.log.exception("callback_failed", leg=self.side)

    def onCallState(self, prm):
        # Only DISCONNECTED matters to the relay; isActive() is one cheap C call,
        # while getInfo() converts the whole call info on every state change.
        if self.relay is not None and not self.isActive():
            self._guard(self.relay.on_state, prm)

    def onCallTsxState(self, prm):
        self._guard(self.relay.on_tsx, prm)

    def onCallSdpCreated(self, prm):
        # SDP passthrough: replace pjsua's own offer/answer with the peer's.
        if self.next_local_sdp:
            offer = prm.remSdp.wholeSdp
            # Answering an offer with the peer's SDP: keep its media directions
            # valid for this offer (an UPDATE hold is answered at once).
            prm.sdp.wholeSdp = answer_directions(offer, self.next_local_sdp) if offer else self.next_local_sdp

    def onCallRxReinvite(self, prm):
        self._guard(self.relay.on_rx_reinvite, prm)

    def onCallTransferRequest(self, prm):
        # pjsua would accept a REFER (202) and place a call to its Refer-To target
        # by itself, past admission, policy and the ledger: an open door for toll
        # fraud. Every transfer is refused, whoever asks.
        prm.statusCode = pj.PJSIP_SC_FORBIDDEN
        self._guard(self.relay.on_transfer_refused, prm)

    def onCallReplaceRequest(self, prm):
        # An INVITE with Replaces would be answered 200 by pjsua, past the
        # gateway's checks, and take this leg's place: refused as well.
        prm.statusCode = pj.PJSIP_SC_FORBIDDEN
        prm.reason = "Forbidden"
        self._guard(self.relay.on_replace_refused, prm)


class BridgeLeg(Leg):
    """The A-leg: the gateway is the UAS toward the conference bridge."""

    side = "bridge"


class TrunkLeg(Leg):
    """The B-leg: the gateway is the UAC toward the PSTN trunk."""

    side = "trunk"
