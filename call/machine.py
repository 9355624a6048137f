"""One relayed call as a state machine: events in, actions out, no I/O.

In the manner of h11's ``_state.py`` and sippy's ``b2bua_simple``: this
module knows the lifecycle of a B2BUA call and nothing about sockets,
pjsip, databases or clocks. The gateway's shell (gateway/engine.py) feeds it
events (call.events) and carries out the actions it returns (call.actions).

States::

    DECIDING ──Denied──────────────────────────────▶ ENDED
        │ Admitted
        ▼
    DIALING ──Failed / bridge gone / timeout───────▶ ENDED
        │ Answered
        ▼
    CONFIRMED ──BYE either side / cut / timers──────▶ ENDED

The rules kept here, each in one place:

- SDP is an opaque body. A 18x reaches the bridge with the trunk's SDP or
  none; the bridge's 200 carries the trunk's final answer: the SDP of the
  2xx, else the last SDP of the answering fork's provisionals (RFC 3261
  13.2.1: an answer in an unreliable 1xx is repeated in the 2xx).
- Late offer: an INVITE without SDP goes out without SDP; the trunk's offer
  in its 2xx goes to the bridge, and the trunk's ACK waits for the bridge's
  ACK, which carries the answer. The same for re-INVITEs without SDP.
- Forking: provisionals of every early dialog are relayed as they come
  (the engine PRACKs reliable ones); the fork that answers wins.
- 3xx is not followed (the new target was never checked by the policy): the
  status goes back with the redirect targets pointed at the gateway, so a
  bridge that follows it comes back through admission and policy.
- Failover to the next route on 408, 5xx, a local failure or no provisional
  in time; never once early media reached the bridge, never on 4xx/6xx.
- In-dialog requests (re-INVITE, UPDATE, INFO, MESSAGE, NOTIFY, OPTIONS...)
  are relayed to the other leg and their answers relayed back.
- Session timers (RFC 4028) pass end to end; the gateway watches them: a
  session nobody refreshed is ended on both legs.
- Every path ends in exactly one Finish, after both legs are over, and the
  ledger is released whenever a reservation was made.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from call import actions as A
from call import events as E
from call.events import BRIDGE, TRUNK, Body, Side
from sip.headers import first, relay_request_headers, relay_response_headers, session_expires, values

# Reason codes used here (values of policy.Reason; kept as strings so this
# module needs nothing from policy).
ALLOWED = "allowed"
TRUNK_FAILURE = "trunk_failure"
TRUNK_TIMEOUT = "trunk_timeout"
DURATION_EXHAUSTED = "duration_exhausted"
OVERLOADED = "overloaded"
SDP_INVALID = "sdp_invalid"

# Q.850 cause 16 (normal clearing) on the BYEs the gateway sends itself.
_BYE_REASONS = {
    DURATION_EXHAUSTED: 'Q.850;cause=16;text="duration_exhausted"',
    "session_timer": 'SIP;cause=408;text="session timer expired"',
    "ack_timeout": 'SIP;cause=408;text="no ACK for the 200 OK"',
    OVERLOADED: 'Q.850;cause=16;text="gateway shutting down"',
}


class State(enum.Enum):
    DECIDING = "deciding"
    DIALING = "dialing"
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(slots=True)
class _Pending:
    """A request relayed from `origin` to the other leg, awaiting its answer."""

    origin: Side
    req: int
    method: str
    had_offer: bool


def other(side: Side) -> Side:
    return TRUNK if side == BRIDGE else BRIDGE


class Call:
    """The lifecycle of one call from the bridge's INVITE to its Finish."""

    def __init__(
        self,
        *,
        received_at: float,
        offer: Body | None,
        bridge_timer: bool = False,
        check_sdp: Callable[[Body], str | None] | None = None,
        bridge_allow: frozenset[str] | None = None,
    ):
        self.state = State.DECIDING
        self.received_at = received_at
        self.offer = offer  # the bridge's SDP offer, None for a late offer
        self.bridge_timer = bridge_timer  # the bridge supports RFC 4028 timers
        self._check_sdp = check_sdp or (lambda body: None)
        self.plan: E.RelayPlan | None = None
        self.route_index = -1
        self.attempts: list[A.TrunkAttempt] = []
        self.trunk_name: str | None = None

        self.bridge_done = False  # no more SIP on the bridge leg
        self.trunk_done = True  # no trunk leg in flight (none yet)
        self.bridge_final: int | None = None  # final status sent to the bridge
        self.trunk_final: int | None = None  # final status the trunk gave
        self.reason = ALLOWED
        self.explanation: str | None = None
        self.ended_by: str | None = None
        self.setup_ms: float | None = None
        self.answered_at: float | None = None
        self.ledger_open = False
        self.granted_s: float | None = None
        self.finished = False

        self.cancelling = False  # our CANCEL is out; the trunk's final will follow
        self.failover_pending = False  # that CANCEL abandons an attempt for the next route
        self.early_media = False  # a 18x with SDP reached the bridge (no failover now)
        self.early_sdp: dict[str, Body] = {}
        self.last_early: Body | None = None
        self.trunk_ack_owed = False  # late offer: the trunk's ACK waits for the bridge's
        self.ack_waits: dict[Side, Side] = {}  # origin of an offerless re-INVITE -> leg owed an ACK
        self.pending: dict[int, _Pending] = {}
        self._token = 0
        self.session_interval: int | None = None
        # Methods each side announced in Allow (None: it said nothing, assume the usual).
        self.allows: dict[Side, frozenset[str] | None] = {BRIDGE: bridge_allow, TRUNK: None}
        self._out: list[A.Action] = []
        self._now = received_at

    # --- the one entry point -----------------------------------------------------------

    def handle(self, event: E.Event, now: float) -> list[A.Action]:
        """Take one event; return the actions to carry out, in order."""
        self._out = []
        self._now = now
        if self.finished:
            self._after_finish(event)
        else:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
            self._maybe_finish()
        out, self._out = self._out, []
        return out

    # --- the decision ------------------------------------------------------------------

    def _on_denied(self, ev: E.Denied) -> None:
        if self.state is not State.DECIDING:
            return
        self.ledger_open = self.ledger_open or ev.ledger_open
        self.state = State.ENDED
        if self.bridge_done:  # the bridge left while we decided
            return
        self.reason = ev.reason
        self.explanation = ev.explanation or self.explanation
        self._final_to_bridge(ev.status, "", ev.headers)

    def _on_admitted(self, ev: E.Admitted) -> None:
        if self.state is not State.DECIDING:
            return
        self.plan = ev.plan
        self.ledger_open = True
        self.granted_s = ev.plan.granted_s
        if self.bridge_done:  # the bridge left while we decided: release, place nothing
            self.state = State.ENDED
            return
        self.state = State.DIALING
        self._emit(A.StartTimer("answer", ev.plan.answer_timeout_s))
        self._dial_next()

    def _dial_next(self) -> bool:
        assert self.plan is not None
        self.route_index += 1
        if self.route_index >= len(self.plan.routes):
            return False
        route = self.plan.routes[self.route_index]
        self.trunk_name = route.name
        self.trunk_done = False
        self.cancelling = False
        self.failover_pending = False
        self.early_sdp.clear()
        self.last_early = None
        self.attempts.append(A.TrunkAttempt(route.name, None, route.next_hop))
        self._emit(A.Dial(route, headers=self.plan.headers + route.headers, body=self.offer))
        if route.setup_timeout_s:
            self._emit(A.StartTimer("setup", route.setup_timeout_s))
        return True

    def _attempt_status(self, status: int | None) -> None:
        if self.attempts:
            last = self.attempts[-1]
            self.attempts[-1] = A.TrunkAttempt(last.trunk, status, last.next_hop)

    # --- the trunk's answers to our INVITE ---------------------------------------------------

    def _learn_allow(self, side: Side, headers: str) -> None:
        methods = values(headers, "Allow")
        if methods:
            self.allows[side] = frozenset(m.strip().upper() for m in methods)

    def _on_provisional(self, ev: E.Provisional) -> None:
        if self.state is not State.DIALING or self.trunk_done:
            return
        self._learn_allow(TRUNK, ev.headers)
        self._emit(A.CancelTimer("setup"))
        if self.cancelling:
            return
        if ev.code == 199:  # RFC 6228: that early dialog is gone
            self.early_sdp.pop(ev.tag, None)
            return
        if ev.body is not None:
            self.early_sdp[ev.tag] = ev.body
            self.last_early = ev.body
        if self.bridge_done:
            return
        relay_body = ev.body if self.offer is not None else None  # late offer: the offer comes in the 2xx
        if relay_body is not None:
            problem = self._check_sdp(relay_body)
            if problem:
                self._log("early_sdp_dropped", detail=problem)
                relay_body = None
        if relay_body is not None:
            self.early_media = True
        self._emit(A.AnswerBridge(ev.code, ev.reason, relay_response_headers(ev.headers), relay_body))

    def _on_answered(self, ev: E.Answered) -> None:
        if self.state is not State.DIALING or self.trunk_done:
            return
        self._emit(A.CancelTimer("setup"), A.CancelTimer("answer"))
        self._learn_allow(TRUNK, ev.headers)
        self.trunk_final = ev.code
        self._attempt_status(ev.code)
        if self.cancelling or self.bridge_done:
            # The trunk answered as we gave up on it: take the call and end it.
            self._emit(A.Ack(TRUNK), A.SendRequest(TRUNK, "BYE"))
            self.trunk_done = True
            self._trunk_over_while_cancelling()
            return
        if self.offer is not None:
            answer = ev.body or self.early_sdp.get(ev.tag) or self.last_early
            self._emit(A.Ack(TRUNK))
        else:
            answer = ev.body  # the trunk's offer; its ACK waits for the bridge's answer
            self.trunk_ack_owed = True
        problem = self._check_sdp(answer) if answer is not None else None
        if problem:
            if self.trunk_ack_owed:
                self._emit(A.Ack(TRUNK))
                self.trunk_ack_owed = False
            self._emit(A.SendRequest(TRUNK, "BYE", headers=(("Reason", 'SIP;cause=488;text="sdp_invalid"'),)))
            self.trunk_done = True
            self.reason = SDP_INVALID
            self.state = State.ENDED
            self._final_to_bridge(
                488, "", self._gateway_headers(SDP_INVALID, 488, f"the trunk's SDP answer cannot be relayed: {problem}")
            )
            return
        headers = list(relay_response_headers(ev.headers))
        interval, _ = session_expires(first(ev.headers, "Session-Expires"))
        if interval is None and self.bridge_timer and self.plan and self.plan.session_expires_s:
            # The trunk does no session timers: the bridge refreshes, the gateway watches.
            interval = self.plan.session_expires_s
            headers = [h for h in headers if h[0].lower() not in ("session-expires", "require")]
            headers += [("Session-Expires", f"{interval};refresher=uac"), ("Require", "timer")]
        self.session_interval = interval if interval and interval > 0 else None
        self.state = State.CONFIRMED
        self.answered_at = self._now
        self.bridge_final = 200
        self.setup_ms = (self._now - self.received_at) * 1000
        self._emit(A.AnswerBridge(200, "OK", tuple(headers), answer), A.MarkAnswered())
        self._arm_duration()
        self._arm_session()

    def _on_failed(self, ev: E.Failed) -> None:
        if self.state is not State.DIALING or self.trunk_done:
            return
        self.trunk_done = True
        self.trunk_final = ev.code
        self._attempt_status(ev.code)
        self._emit(A.CancelTimer("setup"))
        if self.cancelling:
            self._trunk_over_while_cancelling()
            return
        if self._may_fail_over(ev) and self._dial_next():
            self._log("trunk_failover", status=ev.code, local=ev.local, next_trunk=self.trunk_name)
            return
        self._emit(A.CancelTimer("answer"))
        self.state = State.ENDED
        if self.bridge_done:
            return
        self.reason = TRUNK_FAILURE
        if ev.local:
            code = 408 if ev.code == 408 else 503
            self.reason = TRUNK_TIMEOUT if code == 408 else TRUNK_FAILURE
            text = (
                "the trunk did not answer"
                if code == 408
                else f"the trunk could not be reached ({ev.reason or ev.code})"
            )
            self._final_to_bridge(code, "", self._gateway_headers(self.reason, code, text))
            return
        headers = list(relay_response_headers(ev.headers))
        if 300 <= ev.code < 400:
            headers += self._redirect_contacts(ev.headers)
            self.explanation = (
                f"the trunk redirected the call ({ev.code}); the gateway does not follow "
                "redirects, a new INVITE to the new target is decided afresh"
            )
        self._final_to_bridge(ev.code, ev.reason, tuple(headers))

    def _trunk_over_while_cancelling(self) -> None:
        """The trunk attempt we CANCELled is over: next route, or the bridge's answer."""
        if self.failover_pending and self.state is State.DIALING and not self.bridge_done and self._dial_next():
            self._log("trunk_failover", status=self.trunk_final, local=True, next_trunk=self.trunk_name)
            return
        self._emit(A.CancelTimer("answer"))
        self.state = State.ENDED
        if self.bridge_done:
            return
        if self.failover_pending or self.reason == TRUNK_TIMEOUT:
            self.reason = TRUNK_TIMEOUT
            self._final_to_bridge(
                408, "", self._gateway_headers(TRUNK_TIMEOUT, 408, "the trunk did not answer in time")
            )
        else:
            self._final_to_bridge(503, "", self._gateway_headers(self.reason, 503, "the call could not be completed"))

    def _may_fail_over(self, ev: E.Failed) -> bool:
        if self.early_media or self.bridge_done:
            return False
        return ev.local or ev.code == 408 or 500 <= ev.code < 600

    def _redirect_contacts(self, block: str) -> list[tuple[str, str]]:
        """3xx targets, pointed back at the gateway: a bridge that follows the
        redirect sends a new INVITE through admission and policy."""
        host = self.plan.redirect_host if self.plan else None
        out = []
        for contact in values(block, "Contact"):
            uri = contact.strip()
            if "<" in uri:
                uri = uri[uri.find("<") + 1 : uri.find(">")] if ">" in uri else ""
            scheme, _, rest = uri.partition(":")
            user = rest.split("@", 1)[0].split(";", 1)[0] if "@" in rest and scheme.lower() in ("sip", "sips") else ""
            if scheme.lower() == "tel":
                user = rest.split(";", 1)[0]
            if host and user and all(c.isalnum() or c in "+-.()" for c in user):
                out.append(("Contact", f"<sip:{user}@{host};user=phone>"))
        return out

    # --- the legs ending ---------------------------------------------------------------------

    def _on_leg_ended(self, ev: E.LegEnded) -> None:
        if ev.side == BRIDGE:
            if self.bridge_done:
                return
            self.bridge_done = True
            if self.bridge_final is None:
                self.bridge_final = ev.code or (487 if ev.how == "cancelled" else 500)
                self.setup_ms = (self._now - self.received_at) * 1000
            self.ended_by = self.ended_by or "bridge"
            self._bridge_gone(ev)
        else:
            if self.trunk_done:
                return
            self.trunk_done = True
            if ev.how == "answered_after_cancel":
                self.trunk_final = self.trunk_final or ev.code
                self._attempt_status(ev.code)
                if self.state is State.DIALING:
                    self._trunk_over_while_cancelling()
                return
            self.ended_by = self.ended_by or "trunk"
            if self.state is State.DIALING:  # transport failure before an answer
                self.trunk_final = ev.code or 503
                self._attempt_status(self.trunk_final)
                self.state = State.ENDED
                self.reason = TRUNK_FAILURE
                if not self.bridge_done:
                    self._final_to_bridge(503, "", self._gateway_headers(TRUNK_FAILURE, 503, "the trunk leg failed"))
                return
            if not self.bridge_done:
                headers = tuple((n, v) for n, v in relay_response_headers(ev.headers) if n.lower() == "reason")
                self._bye(BRIDGE, headers)
            self.state = State.ENDED

    def _bridge_gone(self, ev: E.LegEnded) -> None:
        if self.state is State.DECIDING:
            return  # the decision still comes back: Admitted is released, Denied dropped
        if self.state is State.DIALING:
            if not self.trunk_done and not self.cancelling:
                self.cancelling = True
                self._emit(A.CancelTrunk())
            self._emit(A.CancelTimer("answer"), A.CancelTimer("setup"))
            return
        if self.state is State.CONFIRMED:
            if not self.trunk_done:
                headers = tuple((n, v) for n, v in relay_response_headers(ev.headers) if n.lower() == "reason")
                if self.trunk_ack_owed:
                    self._emit(A.Ack(TRUNK))
                    self.trunk_ack_owed = False
                self._bye(TRUNK, headers)
            self.state = State.ENDED

    # --- ACKs ----------------------------------------------------------------------------------

    def _on_ack(self, ev: E.AckReceived) -> None:
        if ev.initial and ev.side == BRIDGE:
            if self.trunk_ack_owed and not self.trunk_done:
                self._emit(A.Ack(TRUNK, ev.body))
                self.trunk_ack_owed = False
            return
        target = self.ack_waits.pop(ev.side, None)
        if target is not None and not self._done(target):
            self._emit(A.Ack(target, ev.body))

    def _on_ack_timeout(self, ev: E.AckTimeout) -> None:
        if ev.initial and ev.side == BRIDGE:
            if self.state is not State.CONFIRMED:
                return
            self._log("ack_timeout", leg="bridge")
            if self.trunk_ack_owed:
                self._emit(A.Ack(TRUNK))
                self.trunk_ack_owed = False
            self.ended_by = "ack_timeout"
            self._end_both("ack_timeout")
            return
        target = self.ack_waits.pop(ev.side, None)
        if target is not None and not self._done(target):
            self._emit(A.Ack(target))

    # --- requests inside the dialogs -----------------------------------------------------------

    def _on_request(self, ev: E.Request) -> None:
        peer = other(ev.side)
        if self.state is not State.CONFIRMED or self._done(peer):
            # Nothing to relay it to yet (early dialog) or any more.
            code = 481 if self._done(peer) else 491 if ev.method in ("INVITE", "UPDATE") else 503
            headers = (("Retry-After", "1"),) if code in (491, 503) else ()
            self._emit(A.Respond(ev.side, ev.req, code, "", headers))
            return
        if ev.method in ("INVITE", "UPDATE") and ev.body is not None:
            problem = self._check_sdp(ev.body)
            if problem:
                self._emit(
                    A.Respond(
                        ev.side,
                        ev.req,
                        488,
                        "",
                        (("Warning", f'399 gateway "{problem}"'), ("Reason", 'SIP;cause=488;text="sdp_invalid"')),
                    )
                )
                self._log("sdp_invalid", leg=ev.side, method=ev.method, detail=problem)
                return
        method = ev.method
        peer_allows = self.allows[peer]
        if method == "UPDATE" and peer_allows is not None and "UPDATE" not in peer_allows:
            # RFC 3311 5: a peer that does not list UPDATE gets the offer in a
            # re-INVITE; a refresh without an offer is answered here (the
            # gateway's own session watch restarts).
            if ev.body is None:
                self._emit(A.Respond(ev.side, ev.req, 200, "OK", relay_response_headers(ev.headers)))
                self._arm_session()
                return
            method = "INVITE"
        self._token += 1
        token = self._token
        self.pending[token] = _Pending(ev.side, ev.req, ev.method, ev.body is not None)
        self._emit(A.SendRequest(peer, method, relay_request_headers(ev.headers), ev.body, token))
        if ev.method in ("INVITE", "UPDATE"):
            from sip.sdp import is_hold  # local import: sip.sdp is light, but only re-INVITEs need it

            hold = ev.body is not None and is_hold(ev.body.data.decode("utf-8", "replace"))
            self._log(
                "reinvite_relayed" if ev.method == "INVITE" else "update_relayed",
                direction=f"{ev.side}->{peer}",
                hold=hold,
                offer=ev.body is not None,
                **({"as": "INVITE"} if method != ev.method else {}),
            )
        elif ev.method != "OPTIONS":
            self._log("request_relayed", direction=f"{ev.side}->{peer}", method=ev.method)

    def _on_response(self, ev: E.Response) -> None:
        pending = self.pending.pop(ev.token, None)
        if pending is None:
            if ev.needs_ack and not self._done(ev.side):
                self._emit(A.Ack(ev.side))
            return
        origin = pending.origin
        if ev.needs_ack:
            if pending.had_offer or self._done(origin):
                self._emit(A.Ack(ev.side))  # the answer came in the 2xx
            else:
                self.ack_waits[origin] = ev.side  # the 2xx holds an offer: the answer is in origin's ACK
        if 200 <= ev.code < 300 and pending.method in ("INVITE", "UPDATE"):
            interval, _ = session_expires(first(ev.headers, "Session-Expires"))
            if interval:
                self.session_interval = interval
            self._arm_session()  # a refresh went through
        if self._done(origin):
            return
        code = ev.code
        reason = ev.reason
        headers = relay_response_headers(ev.headers)
        if ev.local:
            code = 491 if pending.method in ("INVITE", "UPDATE") and code == 491 else (408 if code == 408 else 500)
            reason = ""
            headers = ()
        self._emit(A.Respond(origin, pending.req, code, reason, headers, ev.body))

    def _on_request_gone(self, ev: E.RequestGone) -> None:
        for token, p in list(self.pending.items()):
            if p.origin == ev.side and p.req == ev.req:
                # The peer's transaction goes on; its answer will have nowhere to go.
                self.pending[token] = _Pending(ev.side, 0, p.method, p.had_offer)

    # --- timers, the ledger and the operator -------------------------------------------------

    def _on_timer(self, ev: E.TimerFired) -> None:
        if ev.name == "answer":
            if self.state is State.DIALING and not self.trunk_done and not self.cancelling:
                self.reason = TRUNK_TIMEOUT
                self.ended_by = "gateway"
                self.cancelling = True
                self._emit(A.CancelTrunk())
        elif ev.name == "setup":
            if self.state is State.DIALING and not self.trunk_done and not self.cancelling and not self.early_media:
                self._attempt_status(None)
                if self.route_index + 1 < len(self.plan.routes if self.plan else ()):
                    self.cancelling = True
                    self.failover_pending = True
                    self._log("trunk_setup_timeout", trunk=self.trunk_name)
                    self._emit(A.CancelTrunk(abandon=True))
        elif ev.name == "cut":
            if self.state is State.CONFIRMED:
                self.reason = DURATION_EXHAUSTED
                self.ended_by = "gateway"
                self._log("call_cut", reason=DURATION_EXHAUSTED, detail="the authorised duration is used up")
                self._end_both(DURATION_EXHAUSTED)
        elif ev.name == "extend":
            if self.state is State.CONFIRMED:
                self._emit(A.ExtendGrant())
        elif ev.name == "session" and self.state is State.CONFIRMED:
            self.ended_by = "session_timer"
            self._log("session_expired", interval_s=self.session_interval)
            self._end_both("session_timer")

    def _on_grant(self, ev: E.GrantExtended) -> None:
        if self.state is not State.CONFIRMED or ev.failed:
            return
        if ev.granted_s == self.granted_s:
            return  # nothing more: the cut timer already set ends the call
        self.granted_s = ev.granted_s
        self._log("grant_extended", bucket=ev.bucket, granted_s=ev.granted_s)
        self._arm_duration()

    def _on_shutdown(self, ev: E.Shutdown) -> None:
        self.explanation = self.explanation or ev.text
        if self.state is State.DECIDING:
            if not self.bridge_done:
                self.reason = OVERLOADED
                self._final_to_bridge(503, "", self._gateway_headers(OVERLOADED, 503, ev.text, retry_after=5))
            return
        if self.state is State.DIALING:
            self.reason = OVERLOADED
            self.ended_by = "gateway"
            if not self.trunk_done and not self.cancelling:
                self.cancelling = True
                self._emit(A.CancelTrunk())
            if not self.bridge_done:
                self._final_to_bridge(503, "", self._gateway_headers(OVERLOADED, 503, ev.text, retry_after=5))
            return
        if self.state is State.CONFIRMED:
            self.reason = OVERLOADED
            self.ended_by = "gateway"
            self._end_both(OVERLOADED)

    def _on_abort(self, ev: E.Abort) -> None:
        """Something failed in handling this call: end whatever is up, now."""
        self.explanation = f"the gateway failed on this call and ended it ({ev.error})"
        if self.reason == ALLOWED:
            self.reason = OVERLOADED
        self.ended_by = self.ended_by or "gateway"
        if not self.bridge_done:
            if self.bridge_final is None:
                self._emit(A.Hangup(BRIDGE, 503))
                self.bridge_final = 503
                self.setup_ms = (self._now - self.received_at) * 1000
            else:
                self._emit(A.Hangup(BRIDGE))
            self.bridge_done = True
        if not self.trunk_done:
            self._emit(A.Hangup(TRUNK))
            self.trunk_done = True
        self.state = State.ENDED

    # --- helpers -----------------------------------------------------------------------------

    def _final_to_bridge(self, code: int, reason: str, headers: Iterable[tuple[str, str]]) -> None:
        self.bridge_final = code
        self.setup_ms = (self._now - self.received_at) * 1000
        self.bridge_done = True
        self._emit(A.AnswerBridge(code, reason, tuple(headers)))

    def _gateway_headers(self, reason: str, code: int, text: str, retry_after: int | None = None) -> A.Headers:
        from sip.responses import reject_headers  # pure; local to keep this module's imports few

        self.explanation = text
        return tuple(reject_headers(reason, code, text, "gateway", retry_after))

    def _bye(self, side: Side, headers: Iterable[tuple[str, str]] = ()) -> None:
        if side == TRUNK:
            self.trunk_done = True
        else:
            self.bridge_done = True
        self._emit(A.SendRequest(side, "BYE", tuple(headers)))

    def _end_both(self, why: str) -> None:
        header = (("Reason", _BYE_REASONS.get(why, "Q.850;cause=16")),)
        if not self.bridge_done:
            self._bye(BRIDGE, header)
        if not self.trunk_done:
            if self.trunk_ack_owed:
                self._emit(A.Ack(TRUNK))
                self.trunk_ack_owed = False
            self._bye(TRUNK, header)
        self.state = State.ENDED

    def _done(self, side: Side) -> bool:
        return self.bridge_done if side == BRIDGE else self.trunk_done

    def _arm_duration(self) -> None:
        """Cut at the authorised duration; ask for the next ledger chunk a little before it runs out."""
        if self.answered_at is None or self.plan is None:
            return
        elapsed = self._now - self.answered_at
        limit = self.plan.max_duration_s
        granted = self.granted_s
        self._emit(A.CancelTimer("extend"))
        if granted is not None and (limit is None or granted < limit):
            margin = min(10.0, granted / 4)
            self._emit(A.StartTimer("extend", max(0.0, granted - margin - elapsed)))
            limit = granted
        if limit is not None:
            self._emit(A.StartTimer("cut", max(0.0, limit - elapsed)))

    def _arm_session(self) -> None:
        """RFC 4028 10: without a refresh, the side that does not refresh ends the
        session min(32, SE/3) seconds before it expires. The gateway does so on
        both legs, restarting the count at every refresh that went through."""
        if self.session_interval is None or self.state is not State.CONFIRMED:
            return
        interval = self.session_interval
        self._emit(A.StartTimer("session", max(1.0, interval - min(32.0, interval / 3))))

    def _log(self, event: str, **fields: Any) -> None:
        self._emit(A.Log(event, tuple(fields.items())))

    def _emit(self, *actions: A.Action) -> None:
        self._out.extend(actions)

    def _maybe_finish(self) -> None:
        if self.finished or self.state is State.DECIDING:
            return
        if not (self.bridge_done and self.trunk_done):
            return
        self.state = State.ENDED
        self.finished = True
        self._emit(
            A.CancelTimer("answer"),
            A.CancelTimer("setup"),
            A.CancelTimer("cut"),
            A.CancelTimer("extend"),
            A.CancelTimer("session"),
        )
        self._emit(A.Finish(self.record()))

    def record(self) -> A.CallRecord:
        return A.CallRecord(
            reason=self.reason,
            bridge_status=self.bridge_final,
            trunk_status=self.trunk_final,
            answered=self.answered_at is not None,
            answered_at=self.answered_at,
            ended_at=self._now,
            setup_ms=self.setup_ms,
            ended_by=self.ended_by,
            ledger_open=self.ledger_open,
            explanation=self.explanation,
            admitted=self.plan is not None,
            trunk=self.trunk_name,
            trunk_attempts=tuple(self.attempts),
        )

    def _after_finish(self, event: E.Event) -> None:
        """Stragglers after the end: answer what must be answered, ACK what must be ACKed."""
        if isinstance(event, E.Request):
            self._emit(A.Respond(event.side, event.req, 481))
        elif isinstance(event, E.Response) and event.needs_ack:
            self._emit(A.Ack(event.side))


_HANDLERS: dict[type[E.Event], Callable[[Call, Any], None]] = {
    E.Denied: Call._on_denied,
    E.Admitted: Call._on_admitted,
    E.Provisional: Call._on_provisional,
    E.Answered: Call._on_answered,
    E.Failed: Call._on_failed,
    E.LegEnded: Call._on_leg_ended,
    E.AckReceived: Call._on_ack,
    E.AckTimeout: Call._on_ack_timeout,
    E.Request: Call._on_request,
    E.Response: Call._on_response,
    E.RequestGone: Call._on_request_gone,
    E.TimerFired: Call._on_timer,
    E.GrantExtended: Call._on_grant,
    E.Shutdown: Call._on_shutdown,
    E.Abort: Call._on_abort,
}
