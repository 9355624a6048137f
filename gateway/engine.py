"""The shell around each call: SIP engine events in, call-machine actions out.

``gateway._sipcore`` (csrc/) reports what happens on the wire as tuples
``(kind, leg, req, code, flags, f0..f5)``; this module turns them into
``call.events``, feeds the call's state machine (``call.machine.Call``) and
carries out the ``call.actions`` it returns: SIP messages through the
engine, timers on the loop's clock, ledger and logging work through the
service. Nothing here decides anything about a call.

Every step for a call is guarded: if handling an event raises, the call is
aborted (both legs ended, the ledger settled, one ``call_failed`` JSON line
with the traceback) and the gateway goes on with the others.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from call import actions as A
from call import events as E
from call.events import BRIDGE, TRUNK, Body
from call.machine import Call
from gateway import _sipcore as sc
from sip.headers import encode_block

if TYPE_CHECKING:
    from gateway.service import GatewayService

EV_NAMES = {getattr(sc, n): n for n in dir(sc) if n.startswith("EV_")}


def wire(text: str | None) -> bytes | None:
    """Text for the engine as the bytes it came as: the engine hands over a
    peer's reason phrase and Content-Type decoded as UTF-8 with invalid bytes
    kept as surrogates, and takes them back as bytes (as `encode_block` does
    for headers). Found by fuzzing the trunk's answers: "486 Occup\\xe9" in
    Latin-1 failed the call (UnicodeEncodeError) and the bridge got a 503."""
    return text.encode("utf-8", "surrogateescape") if text else None


class CallHandle:
    """Everything the shell keeps for one call besides its state machine."""

    __slots__ = (
        "answered_wall",
        "assessment",
        "bridge_leg",
        "busy",
        "call_id",
        "counted",
        "decision",
        "done",
        "grant",
        "invite",
        "job_deadline",
        "log",
        "machine",
        "queue",
        "received_wall",
        "request",
        "source",
        "timers",
        "trunk_leg",
    )

    def __init__(self, machine: Call, bridge_leg: int, call_id: str, log):
        self.machine = machine
        self.bridge_leg = bridge_leg
        self.trunk_leg: int | None = None
        self.call_id = call_id
        self.log = log
        self.timers: dict[str, Any] = {}
        self.invite = None
        self.decision = None
        self.source: str | None = None
        self.grant = None
        self.received_wall = None
        self.answered_wall = None
        self.counted = False  # counted in the active calls
        self.done = False  # Finish carried out
        self.queue: deque = deque()  # events waiting while one is being handled
        self.busy = False
        self.request = None
        self.assessment = None
        self.job_deadline = None


class Engine:
    """Routes SIP engine events to calls and carries out their actions."""

    def __init__(self, service: GatewayService, stack):
        self.service = service
        self.stack = stack
        self.legs: dict[int, tuple[CallHandle, str]] = {}  # leg id -> (call, side)
        self.tokens: dict[int, tuple[CallHandle, int]] = {}  # engine request id -> (call, machine token)
        self.log = service.log
        self._dispatch = {
            sc.EV_PROVISIONAL: self._provisional,
            sc.EV_ANSWER: self._answer,
            sc.EV_FAILED: self._failed,
            sc.EV_REQUEST: self._request,
            sc.EV_RESPONSE: self._response,
            sc.EV_ACK: self._ack,
            sc.EV_ACK_TIMEOUT: self._ack_timeout,
            sc.EV_BYE: self._bye,
            sc.EV_CANCELLED: self._cancelled,
            sc.EV_ENDED: self._ended,
            sc.EV_REQUEST_GONE: self._request_gone,
        }
        # One method per action type (a dict lookup, not a chain of type tests).
        self._doers = {
            A.AnswerBridge: self._answer_bridge,
            A.SendRequest: self._send_request,
            A.Respond: self._respond,
            A.Ack: self._send_ack,
            A.Dial: self._dial,
            A.CancelTrunk: self._cancel_trunk,
            A.StartTimer: self._start_timer,
            A.CancelTimer: self._cancel_timer,
            A.Hangup: self._hangup,
            A.MarkAnswered: lambda handle, _action: service.call_answered(handle),
            A.ExtendGrant: lambda handle, _action: service.extend_grant(handle),
            A.Log: self._log,
            A.Finish: self._finish_action,
        }

    # --- from the SIP engine -----------------------------------------------------------------

    def on_event(self, kind, leg, req, code, flags, f0, f1, f2, f3, f4, f5) -> None:
        """The _sipcore handler: never raises (an exception here would only be
        reported as unraisable)."""
        try:
            if kind == sc.EV_INVITE:
                self.service.on_invite(leg, f0, f1, code, f2)
                return
            if kind == sc.EV_RESPONSE and not leg:  # outside any dialog: an OPTIONS ping
                self.service.trunks.on_ping_response(req, code, bool(flags & sc.F_LOCAL))
                return
            if kind == sc.EV_REGISTRATION:
                self.service.trunks.on_registration(req, code, f0, flags)
                return
            if kind == sc.EV_RESOLVED:
                self.service.trunks.on_resolved(req, f0 or "", f1 or "")
                return
            if kind == sc.EV_REFUSED:
                entry = self.legs.get(leg) if leg else None
                self.service.on_refused(
                    status=code,
                    reason=f0,
                    source=f1,
                    transport=f2,
                    method=f3,
                    detail=f4,
                    call_id=f5,
                    call=entry[0] if entry else None,
                    side=entry[1] if entry else None,
                )
                return
            entry = self.legs.get(leg)
            if entry is None:
                return  # a leg of a call already finished: nothing to do
            handle, side = entry
            event = self._dispatch[kind](side, req, code, flags, f0, f1, f2, f3, f4)
            if event is not None:
                self.feed(handle, event)
        except Exception:
            self.log.exception("engine_event_failed", kind=EV_NAMES.get(kind, kind), leg=leg)

    @staticmethod
    def _body(ctype, data) -> Body | None:
        return Body(ctype or "application/sdp", data) if data else None

    def _provisional(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.Provisional(code, f0 or "", f1 or "", self._body(f2, f3), f4 or "", bool(flags & sc.F_RELIABLE))

    def _answer(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.Answered(code, f0 or "", f1 or "", self._body(f2, f3), f4 or "")

    def _failed(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.Failed(code, f0 or "", f4 or "", bool(flags & sc.F_LOCAL))

    def _request(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.Request(side, req, f0, self._body(f2, f3), f4 or "")

    def _response(self, side, req, code, flags, f0, f1, f2, f3, f4):
        entry = self.tokens.pop(req, None)
        token = entry[1] if entry else 0
        return E.Response(
            side,
            token,
            code,
            f0 or "",
            self._body(f2, f3),
            f4 or "",
            bool(flags & sc.F_NEEDS_ACK),
            bool(flags & sc.F_LOCAL),
        )

    def _ack(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.AckReceived(side, self._body(f2, f3), bool(flags & sc.F_INITIAL))

    def _ack_timeout(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.AckTimeout(side, bool(flags & sc.F_INITIAL))

    def _bye(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.LegEnded(side, "bye", 0, f4 or "")

    def _cancelled(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.LegEnded(side, "cancelled", 487)

    def _ended(self, side, req, code, flags, f0, f1, f2, f3, f4):
        how = "answered_after_cancel" if flags & sc.F_AFTER_CANCEL else "transport"
        return E.LegEnded(side, how, code)

    def _request_gone(self, side, req, code, flags, f0, f1, f2, f3, f4):
        return E.RequestGone(side, req)

    # --- feeding a call --------------------------------------------------------------------

    def register(self, handle: CallHandle) -> None:
        self.legs[handle.bridge_leg] = (handle, BRIDGE)

    def feed(self, handle: CallHandle, event: E.Event) -> None:
        """Give `event` to the call and carry out what it answers. Events that
        arise while doing so (a dial that fails at once...) are queued and fed
        in turn, never recursively."""
        handle.queue.append(event)
        if handle.busy:
            return
        handle.busy = True
        try:
            while handle.queue:
                ev = handle.queue.popleft()
                try:
                    actions = handle.machine.handle(ev, time.monotonic())
                    for action in actions:
                        self._carry_out(handle, action)
                except Exception:  # noqa: BLE001 - a failing call is aborted alone; the loop serves the rest
                    self._abort(handle, ev)
        finally:
            handle.busy = False

    def _abort(self, handle: CallHandle, event) -> None:
        handle.log.exception("call_failed", while_handling=type(event).__name__)
        if handle.done:
            return
        try:
            for action in handle.machine.handle(E.Abort(type(event).__name__), time.monotonic()):
                try:
                    self._carry_out(handle, action)
                except Exception:
                    handle.log.exception("call_abort_step_failed", action=type(action).__name__)
        except Exception:
            handle.log.exception("call_abort_failed")
        if not handle.done:
            # The machine itself failed: end what is left by hand, account for the call once.
            for leg in (handle.bridge_leg, handle.trunk_leg):
                if leg is not None:
                    try:
                        sc.hangup(leg, 503)
                    except Exception:  # noqa: BLE001 - best effort while aborting: the call is accounted below
                        pass
            record = handle.machine.record()
            self._finish(handle, record)

    # --- actions ----------------------------------------------------------------------------

    def _leg(self, handle: CallHandle, side: str) -> int | None:
        return handle.bridge_leg if side == BRIDGE else handle.trunk_leg

    def _carry_out(self, handle: CallHandle, action: A.Action) -> None:
        self._doers[type(action)](handle, action)

    def _answer_bridge(self, handle: CallHandle, action: A.AnswerBridge) -> None:
        body = action.body
        sc.answer(
            handle.bridge_leg,
            action.code,
            wire(action.reason),
            encode_block(action.headers),
            wire(body.ctype) if body else None,
            body.data if body else None,
        )

    def _send_request(self, handle: CallHandle, action: A.SendRequest) -> None:
        leg = self._leg(handle, action.side)
        body = action.body
        req = (
            sc.send(
                leg,
                action.method,
                encode_block(action.headers),
                wire(body.ctype) if body else None,
                body.data if body else None,
            )
            if leg is not None
            else 0
        )
        if action.method == "BYE":
            self._forget_leg(leg)
        elif req:
            self.tokens[req] = (handle, action.token)
        else:
            # Not sent (the leg is gone, or an INVITE transaction is in progress on it).
            code = 491 if action.method in ("INVITE", "UPDATE") else 481
            handle.queue.append(E.Response(action.side, action.token, code, local=True))

    def _respond(self, handle: CallHandle, action: A.Respond) -> None:
        body = action.body
        sc.respond(
            action.req,
            action.code,
            wire(action.reason),
            encode_block(action.headers),
            wire(body.ctype) if body else None,
            body.data if body else None,
        )

    def _send_ack(self, handle: CallHandle, action: A.Ack) -> None:
        leg = self._leg(handle, action.side)
        if leg is not None:
            body = action.body
            sc.ack(leg, wire(body.ctype) if body else None, body.data if body else None)

    def _cancel_trunk(self, handle: CallHandle, action: A.CancelTrunk) -> None:
        if handle.trunk_leg is not None:
            sc.cancel(handle.trunk_leg, action.abandon)

    def _start_timer(self, handle: CallHandle, action: A.StartTimer) -> None:
        old = handle.timers.get(action.name)
        if old is not None:
            old.cancel()
        name = action.name
        handle.timers[name] = self.stack.call_later(action.seconds, lambda: self.feed(handle, E.TimerFired(name)))

    def _cancel_timer(self, handle: CallHandle, action: A.CancelTimer) -> None:
        timer = handle.timers.pop(action.name, None)
        if timer is not None:
            timer.cancel()

    def _hangup(self, handle: CallHandle, action: A.Hangup) -> None:
        leg = self._leg(handle, action.side)
        if leg is not None:
            sc.hangup(leg, action.code)
            self._forget_leg(leg)

    def _log(self, handle: CallHandle, action: A.Log) -> None:
        getattr(handle.log, action.level)(action.event, **dict(action.fields))

    def _finish_action(self, handle: CallHandle, action: A.Finish) -> None:
        self._finish(handle, action.record)

    def _dial(self, handle: CallHandle, action: A.Dial) -> None:
        route = action.route
        body = action.body
        if handle.trunk_leg is not None:
            self._forget_leg(handle.trunk_leg)
        try:
            leg = sc.dial(
                route.from_uri,
                route.to_uri,
                route.target,
                route.contact,
                encode_block(action.headers),
                wire(body.ctype) if body else None,
                body.data if body else None,
                route.username,
                route.password,
                route.next_hop,
                route.transport,
            )
        except (ValueError, ConnectionError) as exc:
            handle.log.warning("trunk_dial_failed", trunk=route.name, error=str(exc))
            handle.trunk_leg = None
            handle.queue.append(E.Failed(503, str(exc), local=True))
            return
        handle.trunk_leg = leg
        self.legs[leg] = (handle, TRUNK)
        self.service.trunk_leg_opened(handle)

    def _forget_leg(self, leg: int | None) -> None:
        if leg is not None:
            self.legs.pop(leg, None)

    def _finish(self, handle: CallHandle, record: A.CallRecord) -> None:
        if handle.done:
            return
        handle.done = True
        for timer in handle.timers.values():
            timer.cancel()
        handle.timers.clear()
        self._forget_leg(handle.bridge_leg)
        self._forget_leg(handle.trunk_leg)
        for req, (h, _token) in list(self.tokens.items()):
            if h is handle:
                del self.tokens[req]
        self.service.call_finished(handle, record)

    # --- the operator -----------------------------------------------------------------------

    def calls(self) -> list[CallHandle]:
        seen: dict[int, CallHandle] = {}
        for handle, _side in self.legs.values():
            seen[id(handle)] = handle
        return list(seen.values())
