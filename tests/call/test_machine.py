"""The call state machine without SIP: events in, actions out (call/machine.py).

Each carrier flow the gateway must relay is a test here, as is each way a call
ends; a property test drives random event sequences through the machine and
checks that every call finishes exactly once and nothing is sent after.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from call import actions as A
from call import events as E
from call.events import BRIDGE, TRUNK, Body, RelayPlan, TrunkRoute
from call.machine import Call, State
from sip.sdp import check_sdp


def sdp(port: int, direction: str = "sendrecv", version: int = 1) -> Body:
    text = (
        f"v=0\r\no=x 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )
    return Body("application/sdp", text.encode())


OFFER = sdp(7000)
ROUTE_A = TrunkRoute(
    "a",
    "sip:+33142685300@trunk-a;user=phone",
    "<sip:+33142685300@trunk-a>",
    "<sip:+18005550100@gw>",
    "<sip:gw@127.0.0.1:5060>",
)
ROUTE_B = TrunkRoute(
    "b",
    "sip:+33142685300@trunk-b;user=phone",
    "<sip:+33142685300@trunk-b>",
    "<sip:+18005550100@gw>",
    "<sip:gw@127.0.0.1:5060>",
    setup_timeout_s=5,
)


def plan(*routes, granted_s=300.0, max_duration_s=14400.0, session_expires_s=None) -> RelayPlan:
    return RelayPlan(
        routes=routes or (ROUTE_A,),
        headers=(("Supported", "100rel"),),
        answer_timeout_s=60,
        max_duration_s=max_duration_s,
        granted_s=granted_s,
        session_expires_s=session_expires_s,
        redirect_host="gw.example:5060",
    )


class Driver:
    """A call plus a clock: feed events, collect actions."""

    def __init__(self, offer: Body | None = OFFER, bridge_timer: bool = False, bridge_allow=None):
        self.now = 100.0
        self.call = Call(
            received_at=self.now, offer=offer, bridge_timer=bridge_timer, check_sdp=check_sdp, bridge_allow=bridge_allow
        )
        self.log: list[A.Action] = []

    def __call__(self, *events, dt: float = 0.01) -> list[A.Action]:
        out = []
        for event in events:
            self.now += dt
            out += self.call.handle(event, self.now)
        self.log += out
        return out

    def finishes(self) -> list[A.Finish]:
        return [a for a in self.log if isinstance(a, A.Finish)]

    def record(self) -> A.CallRecord:
        (finish,) = self.finishes()
        return finish.record


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def one(actions, kind):
    found = of(actions, kind)
    assert len(found) == 1, (kind.__name__, actions)
    return found[0]


def answered_call(offer: Body | None = OFFER, **plan_kw) -> Driver:
    d = Driver(offer)
    d(E.Admitted(plan(**plan_kw)), E.Provisional(180, "Ringing", "t1"), E.Answered(200, "OK", "t1", sdp(9000)))
    assert d.call.state is State.CONFIRMED
    return d


# --- the decision --------------------------------------------------------------------------------


def test_denied_call_answers_the_bridge_and_finishes_without_a_ledger():
    d = Driver()
    out = d(E.Denied(403, "not_domestic", (("Reason", 'SIP;cause=403;text="not_domestic"'),), "no"))
    answer = one(out, A.AnswerBridge)
    assert answer.code == 403 and ("Reason", 'SIP;cause=403;text="not_domestic"') in answer.headers
    assert not of(out, A.Dial)
    rec = d.record()
    assert rec.reason == "not_domestic" and rec.bridge_status == 403 and rec.ledger_open is False


def test_admitted_call_dials_the_first_route_with_the_bridge_offer():
    d = Driver()
    out = d(E.Admitted(plan()))
    dial = one(out, A.Dial)
    assert dial.route is ROUTE_A and dial.body == OFFER and ("Supported", "100rel") in dial.headers
    assert A.StartTimer("answer", 60) in out
    assert d.call.state is State.DIALING and not d.finishes()


def test_cancel_while_deciding_then_admitted_places_nothing_and_releases_the_reservation():
    d = Driver()
    assert d(E.LegEnded(BRIDGE, "cancelled", 487)) == []  # the decision is still on its way
    out = d(E.Admitted(plan()))
    assert not of(out, A.Dial) and not of(out, A.AnswerBridge)
    rec = d.record()
    assert rec.ledger_open is True and rec.bridge_status == 487 and rec.ended_by == "bridge"


def test_cancel_while_deciding_then_denied_answers_nobody():
    d = Driver()
    d(E.LegEnded(BRIDGE, "cancelled", 487))
    out = d(E.Denied(403, "no_entitlement"))
    assert not of(out, A.AnswerBridge)
    assert d.record().bridge_status == 487


# --- carrier flows ------------------------------------------------------------------------------


def test_plain_ringing_then_answer():
    d = Driver()
    d(E.Admitted(plan()))
    ring = one(d(E.Provisional(180, "Ringing", "t1")), A.AnswerBridge)
    assert (ring.code, ring.body) == (180, None)
    out = d(E.Answered(200, "OK", "t1", sdp(9000)))
    ok = one(out, A.AnswerBridge)
    assert ok.code == 200 and ok.body == sdp(9000)
    assert one(out, A.Ack).side == TRUNK and one(out, A.Ack).body is None
    assert of(out, A.MarkAnswered)
    assert A.StartTimer("cut", 300.0) in out  # the granted chunk
    assert any(isinstance(a, A.StartTimer) and a.name == "extend" for a in out)


def test_183_without_sdp_reaches_the_bridge_without_sdp():
    d = Driver()
    d(E.Admitted(plan()))
    early = one(d(E.Provisional(183, "Session Progress", "t1")), A.AnswerBridge)
    assert early.code == 183 and early.body is None
    ok = one(d(E.Answered(200, "OK", "t1", sdp(9000))), A.AnswerBridge)
    assert ok.body == sdp(9000)


def test_announcement_sdp_in_183_then_a_different_sdp_in_the_200():
    d = Driver()
    d(E.Admitted(plan()))
    early = one(d(E.Provisional(183, "Session Progress", "t1", sdp(8000))), A.AnswerBridge)
    assert early.body == sdp(8000)
    ok = one(d(E.Answered(200, "OK", "t1", sdp(9000, version=2))), A.AnswerBridge)
    assert ok.body == sdp(9000, version=2)  # the final answer, not the early one


def test_same_media_with_the_origin_version_bumped():
    d = Driver()
    d(E.Admitted(plan()))
    d(E.Provisional(183, "Session Progress", "t1", sdp(9000, version=1)))
    ok = one(d(E.Answered(200, "OK", "t1", sdp(9000, version=2))), A.AnswerBridge)
    assert ok.code == 200 and ok.body == sdp(9000, version=2)


def test_answer_in_a_reliable_183_is_repeated_in_the_200():
    d = Driver()
    d(E.Admitted(plan()))
    d(E.Provisional(183, "Session Progress", "t1", sdp(9000), reliable=True))
    ok = one(d(E.Answered(200, "OK", "t1")), A.AnswerBridge)  # 2xx without SDP after 100rel
    assert ok.body == sdp(9000)


@pytest.mark.parametrize("code,phrase", [(181, "Call Is Being Forwarded"), (182, "Queued")])
def test_181_and_182_are_relayed_before_180(code, phrase):
    d = Driver()
    d(E.Admitted(plan()))
    first = one(d(E.Provisional(code, phrase, "t1")), A.AnswerBridge)
    assert (first.code, first.reason) == (code, phrase)
    assert one(d(E.Provisional(180, "Ringing", "t1")), A.AnswerBridge).code == 180
    assert one(d(E.Answered(200, "OK", "t1", sdp(9000))), A.AnswerBridge).code == 200


def test_forked_early_dialogs_the_answering_fork_wins():
    d = Driver()
    d(E.Admitted(plan()))
    d(E.Provisional(183, "Session Progress", "fork-a", sdp(8000)))
    d(E.Provisional(183, "Session Progress", "fork-b", sdp(8002)))
    ok = one(d(E.Answered(200, "OK", "fork-b")), A.AnswerBridge)
    assert ok.body == sdp(8002)


def test_199_drops_that_fork_s_early_media_and_is_not_relayed():
    d = Driver()
    d(E.Admitted(plan()))
    d(E.Provisional(183, "Session Progress", "fork-a", sdp(8000)))
    assert not of(d(E.Provisional(199, "Early Dialog Terminated", "fork-a")), A.AnswerBridge)
    assert "fork-a" not in d.call.early_sdp


def test_late_offer_the_trunk_offers_in_its_200_and_the_bridge_answers_in_its_ack():
    d = Driver(offer=None)
    dial = one(d(E.Admitted(plan())), A.Dial)
    assert dial.body is None
    out = d(E.Answered(200, "OK", "t1", sdp(9000)))
    assert one(out, A.AnswerBridge).body == sdp(9000)  # the trunk's offer
    assert not of(out, A.Ack)  # the trunk's ACK waits for the answer
    ack = one(d(E.AckReceived(BRIDGE, sdp(7000), initial=True)), A.Ack)
    assert ack == A.Ack(TRUNK, sdp(7000))


def test_late_offer_ack_timeout_acks_the_trunk_and_ends_both_legs():
    d = Driver(offer=None)
    d(E.Admitted(plan()), E.Answered(200, "OK", "t1", sdp(9000)))
    out = d(E.AckTimeout(BRIDGE, initial=True))
    assert A.Ack(TRUNK) in out
    byes = of(out, A.SendRequest)
    assert {b.side for b in byes} == {BRIDGE, TRUNK} and all(b.method == "BYE" for b in byes)
    rec = d.record()
    assert rec.ended_by == "ack_timeout" and rec.answered


def test_missing_ack_releases_both_legs():
    d = answered_call()
    out = d(E.AckTimeout(BRIDGE, initial=True), dt=32)
    assert {b.side for b in of(out, A.SendRequest)} == {BRIDGE, TRUNK}
    assert d.record().ended_by == "ack_timeout" and d.record().talk_s == pytest.approx(32, abs=0.1)


# --- trunk failures and redirects -----------------------------------------------------------


def test_trunk_busy_passes_through_unchanged():
    d = Driver()
    d(E.Admitted(plan()))
    out = d(E.Failed(486, "Busy Here", "Reason: Q.850;cause=17\r\n"))
    answer = one(out, A.AnswerBridge)
    assert (answer.code, answer.reason) == (486, "Busy Here")
    assert ("Reason", "Q.850;cause=17") in answer.headers
    rec = d.record()
    assert rec.reason == "trunk_failure" and rec.trunk_status == 486 and rec.bridge_status == 486


def test_a_302_is_passed_through_with_its_target_pointed_back_at_the_gateway():
    d = Driver()
    d(E.Admitted(plan()))
    out = d(E.Failed(302, "Moved Temporarily", "Contact: <sip:+4930123456@carrier.example;user=phone>\r\n"))
    answer = one(out, A.AnswerBridge)
    assert answer.code == 302
    assert ("Contact", "<sip:+4930123456@gw.example:5060;user=phone>") in answer.headers
    rec = d.record()
    assert rec.trunk_status == 302 and rec.bridge_status == 302 and "redirect" in rec.explanation


def test_local_timeout_of_the_trunk_invite_is_408_trunk_timeout():
    d = Driver()
    d(E.Admitted(plan()))
    answer = one(d(E.Failed(408, "Request Timeout", local=True)), A.AnswerBridge)
    assert answer.code == 408 and any('text="trunk_timeout"' in v for _, v in answer.headers)
    assert d.record().reason == "trunk_timeout"


def test_no_answer_in_time_cancels_the_trunk_and_answers_408():
    d = Driver()
    d(E.Admitted(plan()), E.Provisional(180, "Ringing", "t1"))
    assert of(d(E.TimerFired("answer")), A.CancelTrunk)
    answer = one(d(E.Failed(487, "Request Terminated")), A.AnswerBridge)
    assert answer.code == 408
    rec = d.record()
    assert rec.reason == "trunk_timeout" and rec.bridge_status == 408 and rec.trunk_status == 487


def test_trunk_that_answers_as_we_cancel_is_acked_and_hung_up():
    d = Driver()
    d(E.Admitted(plan()), E.Provisional(180, "Ringing", "t1"), E.LegEnded(BRIDGE, "cancelled", 487))
    out = d(E.Answered(200, "OK", "t1", sdp(9000)))
    assert A.Ack(TRUNK) in out and A.SendRequest(TRUNK, "BYE") in out
    assert not of(out, A.AnswerBridge)
    rec = d.record()
    assert not rec.answered and rec.bridge_status == 487


def test_answered_after_cancel_reported_by_the_engine():
    d = Driver()
    d(E.Admitted(plan()), E.TimerFired("answer"))
    answer = one(d(E.LegEnded(TRUNK, "answered_after_cancel", 200)), A.AnswerBridge)
    assert answer.code == 408
    assert len(d.finishes()) == 1


# --- failover ------------------------------------------------------------------------------


def test_503_fails_over_to_the_next_route_and_bills_one_call():
    d = Driver()
    d(E.Admitted(plan(ROUTE_A, ROUTE_B)))
    out = d(E.Failed(503, "Service Unavailable"))
    assert one(out, A.Dial).route is ROUTE_B and not of(out, A.AnswerBridge)
    d(E.Answered(200, "OK", "t2", sdp(9000)))
    d(E.LegEnded(BRIDGE, "bye"))
    rec = d.record()
    assert rec.trunk == "b" and [(a.trunk, a.status) for a in rec.trunk_attempts] == [("a", 503), ("b", 200)]


def test_486_is_not_failed_over():
    d = Driver()
    d(E.Admitted(plan(ROUTE_A, ROUTE_B)))
    out = d(E.Failed(486, "Busy Here"))
    assert not of(out, A.Dial) and one(out, A.AnswerBridge).code == 486


def test_no_failover_once_early_media_reached_the_bridge():
    d = Driver()
    d(E.Admitted(plan(ROUTE_A, ROUTE_B)), E.Provisional(183, "Session Progress", "t1", sdp(8000)))
    out = d(E.Failed(503, "Service Unavailable"))
    assert not of(out, A.Dial) and one(out, A.AnswerBridge).code == 503


def test_a_route_with_no_provisional_in_time_is_abandoned_for_the_next():
    d = Driver()
    d(E.Admitted(plan(ROUTE_B, ROUTE_A)))  # ROUTE_B has setup_timeout_s
    assert one(d(E.TimerFired("setup")), A.CancelTrunk).abandon
    out = d(E.Failed(487, "Request Terminated"))
    assert one(out, A.Dial).route is ROUTE_A
    assert [(a.trunk, a.status) for a in d.call.attempts][0] == ("b", 487)


def test_local_transport_failure_fails_over():
    d = Driver()
    d(E.Admitted(plan(ROUTE_A, ROUTE_B)))
    assert one(d(E.Failed(503, "transport error", local=True)), A.Dial).route is ROUTE_B


# --- the bridge leaving ---------------------------------------------------------------------


def test_bridge_cancel_while_ringing_cancels_the_trunk_and_bills_nothing():
    d = Driver()
    d(E.Admitted(plan()), E.Provisional(180, "Ringing", "t1"))
    assert of(d(E.LegEnded(BRIDGE, "cancelled", 487)), A.CancelTrunk)
    assert not d.finishes()  # the trunk's answer to the CANCEL is awaited
    d(E.Failed(487, "Request Terminated"))
    rec = d.record()
    assert rec.bridge_status == 487 and rec.ended_by == "bridge" and not rec.answered and rec.ledger_open


def test_bridge_bye_ends_the_trunk_leg_with_its_reason():
    d = answered_call()
    out = d(E.LegEnded(BRIDGE, "bye", headers="Reason: Q.850;cause=16\r\n"), dt=5)
    bye = one(out, A.SendRequest)
    assert bye.side == TRUNK and bye.method == "BYE" and ("Reason", "Q.850;cause=16") in bye.headers
    rec = d.record()
    assert rec.ended_by == "bridge" and rec.talk_s == pytest.approx(5, abs=0.1)


def test_trunk_bye_reaches_the_bridge_with_its_q850_cause():
    d = answered_call()
    bye = one(d(E.LegEnded(TRUNK, "bye", headers='Reason: Q.850;cause=16;text="Normal"\r\n')), A.SendRequest)
    assert bye.side == BRIDGE and ("Reason", 'Q.850;cause=16;text="Normal"') in bye.headers
    assert d.record().ended_by == "trunk"


# --- in-dialog requests ----------------------------------------------------------------------


def test_hold_reinvite_from_the_bridge_is_relayed_and_its_answer_returned():
    d = answered_call()
    out = d(E.Request(BRIDGE, 7, "INVITE", sdp(7000, "sendonly")))
    send = one(out, A.SendRequest)
    assert (send.side, send.method, send.body) == (TRUNK, "INVITE", sdp(7000, "sendonly"))
    out = d(E.Response(TRUNK, send.token, 200, "OK", sdp(9000, "recvonly"), needs_ack=True))
    assert A.Ack(TRUNK) in out
    assert one(out, A.Respond) == A.Respond(BRIDGE, 7, 200, "OK", (), sdp(9000, "recvonly"))


def test_reinvite_without_sdp_from_the_trunk_gets_the_bridge_answer_in_the_ack():
    d = answered_call()
    send = one(d(E.Request(TRUNK, 9, "INVITE")), A.SendRequest)
    assert send.side == BRIDGE and send.body is None
    out = d(E.Response(BRIDGE, send.token, 200, "OK", sdp(7002), needs_ack=True))
    assert not of(out, A.Ack)  # the bridge's offer goes to the trunk first
    assert one(out, A.Respond).body == sdp(7002)
    ack = one(d(E.AckReceived(TRUNK, sdp(9002))), A.Ack)
    assert ack == A.Ack(BRIDGE, sdp(9002))  # the trunk's new media reaches the bridge


def test_dtmf_info_reaches_the_trunk_and_its_answer_the_bridge():
    d = answered_call()
    dtmf = Body("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n")
    send = one(d(E.Request(BRIDGE, 11, "INFO", dtmf)), A.SendRequest)
    assert (send.side, send.method, send.body) == (TRUNK, "INFO", dtmf)
    assert one(d(E.Response(TRUNK, send.token, 200, "OK")), A.Respond) == A.Respond(BRIDGE, 11, 200, "OK")


@pytest.mark.parametrize("method", ["MESSAGE", "NOTIFY", "OPTIONS", "UPDATE"])
def test_other_in_dialog_requests_are_relayed(method):
    d = answered_call()
    send = one(d(E.Request(TRUNK, 3, method)), A.SendRequest)
    assert send.side == BRIDGE and send.method == method
    assert one(d(E.Response(BRIDGE, send.token, 405, "Method Not Allowed")), A.Respond).code == 405


def test_a_request_the_peer_cannot_take_now_is_answered_491():
    d = answered_call()
    send = one(d(E.Request(BRIDGE, 5, "INVITE", sdp(7000))), A.SendRequest)
    assert one(d(E.Response(TRUNK, send.token, 491, local=True)), A.Respond).code == 491


def test_a_relayed_request_that_times_out_is_answered_408():
    d = answered_call()
    send = one(d(E.Request(BRIDGE, 5, "INFO")), A.SendRequest)
    assert one(d(E.Response(TRUNK, send.token, 408, local=True)), A.Respond).code == 408


def test_a_request_while_ringing_is_answered_not_relayed():
    d = Driver()
    d(E.Admitted(plan()), E.Provisional(180, "Ringing", "t1"))
    respond = one(d(E.Request(BRIDGE, 2, "UPDATE", sdp(7000))), A.Respond)
    assert respond.code == 491 and not of(d.log, A.SendRequest)


def test_a_bad_sdp_offer_in_a_reinvite_gets_488_sdp_invalid():
    d = answered_call()
    bad = Body("application/sdp", sdp(7000).data.replace(b"PCMU/8000", b"PCMU/4294967296"))
    respond = one(d(E.Request(BRIDGE, 4, "INVITE", bad)), A.Respond)
    assert respond.code == 488 and ("Reason", 'SIP;cause=488;text="sdp_invalid"') in respond.headers
    assert not of(d.log[-1:], A.SendRequest)


def test_a_bad_sdp_answer_from_the_trunk_ends_both_legs_cleanly():
    d = Driver()
    d(E.Admitted(plan()))
    bad = Body(
        "application/sdp",
        sdp(9000).data.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"").replace(b"RTP/AVP 0", b"RTP/AVP 101"),
    )
    out = d(E.Answered(200, "OK", "t1", bad))
    assert A.Ack(TRUNK) in out and one(out, A.SendRequest).method == "BYE"
    assert one(out, A.AnswerBridge).code == 488
    assert d.record().reason == "sdp_invalid"


# --- timers and the ledger ----------------------------------------------------------------------


def test_the_authorised_duration_cuts_both_legs_with_a_reason():
    d = answered_call(granted_s=None, max_duration_s=180)
    out = d(E.TimerFired("cut"), dt=180)
    byes = of(out, A.SendRequest)
    assert {b.side for b in byes} == {BRIDGE, TRUNK}
    assert all(("Reason", 'Q.850;cause=16;text="duration_exhausted"') in b.headers for b in byes)
    rec = d.record()
    assert rec.reason == "duration_exhausted" and rec.ended_by == "gateway"


def test_the_grant_is_extended_chunk_by_chunk():
    d = answered_call(granted_s=300.0, max_duration_s=14400.0)
    assert of(d(E.TimerFired("extend"), dt=290), A.ExtendGrant)
    out = d(E.GrantExtended(600.0, "tenant_pool"))
    assert any(a == A.StartTimer("cut", pytest.approx(600 - 290.0, abs=0.5)) for a in out)
    assert of(out, A.Log)[0].event == "grant_extended"


def test_an_unchanged_grant_leaves_the_cut_where_it_is():
    d = answered_call(granted_s=300.0)
    d(E.TimerFired("extend"), dt=290)
    assert d(E.GrantExtended(300.0)) == []


def test_session_timer_inserted_toward_the_bridge_when_the_trunk_does_none():
    d = Driver(bridge_timer=True)
    d(E.Admitted(plan(session_expires_s=90)))
    out = d(E.Answered(200, "OK", "t1", sdp(9000)))
    ok = one(out, A.AnswerBridge)
    assert ("Session-Expires", "90;refresher=uac") in ok.headers and ("Require", "timer") in ok.headers
    assert A.StartTimer("session", 60.0) in out  # 90 - min(32, 90/3)
    out = d(E.TimerFired("session"), dt=60)
    assert {b.side for b in of(out, A.SendRequest)} == {BRIDGE, TRUNK}
    assert d.record().ended_by == "session_timer"


def test_the_trunk_s_own_session_expires_is_relayed_and_watched():
    d = Driver(bridge_timer=True)
    d(E.Admitted(plan(session_expires_s=1800)))
    out = d(E.Answered(200, "OK", "t1", sdp(9000), "Session-Expires: 600;refresher=uas\r\nRequire: timer\r\n"))
    ok = one(out, A.AnswerBridge)
    assert ("Session-Expires", "600;refresher=uas") in ok.headers and ("Require", "timer") in ok.headers
    assert A.StartTimer("session", 568.0) in out


def test_a_refresh_that_goes_through_restarts_the_session_watch():
    d = Driver(bridge_timer=True)
    d(E.Admitted(plan(session_expires_s=90)), E.Answered(200, "OK", "t1", sdp(9000)))
    send = one(d(E.Request(BRIDGE, 8, "UPDATE", headers="Session-Expires: 90;refresher=uac\r\n")), A.SendRequest)
    out = d(E.Response(TRUNK, send.token, 200, "OK"), dt=45)
    assert A.StartTimer("session", 60.0) in out


def test_shutdown_while_deciding_dialing_and_answered():
    deciding = Driver()
    assert one(deciding(E.Shutdown()), A.AnswerBridge).code == 503
    dialing = Driver()
    dialing(E.Admitted(plan()))
    out = dialing(E.Shutdown())
    assert of(out, A.CancelTrunk) and one(out, A.AnswerBridge).code == 503
    dialing(E.Failed(487, "Request Terminated"))
    assert dialing.record().reason == "overloaded"
    confirmed = answered_call()
    assert {b.side for b in of(confirmed(E.Shutdown()), A.SendRequest)} == {BRIDGE, TRUNK}
    assert confirmed.record().reason == "overloaded"


@pytest.mark.parametrize(
    "setup,hung_up",
    [
        ([], {BRIDGE}),
        ([E.Admitted(plan())], {BRIDGE, TRUNK}),
        ([E.Admitted(plan()), E.Provisional(180, "Ringing", "t1")], {BRIDGE, TRUNK}),
        ([E.Admitted(plan()), E.Answered(200, "OK", "t1", OFFER)], {BRIDGE, TRUNK}),
        ([E.Admitted(plan()), E.Provisional(180, "Ringing", "t1"), E.LegEnded(BRIDGE, "cancelled", 487)], {TRUNK}),
    ],
    ids=["deciding", "dialing", "ringing", "confirmed", "cancelling"],
)
def test_abort_in_every_state_ends_every_live_leg_and_finishes_once(setup, hung_up):
    d = Driver()
    d(*setup)
    out = d(E.Abort("boom"))
    assert {a.side for a in of(out, A.Hangup)} == hung_up
    assert len(d.finishes()) == 1
    assert d.record().reason == "overloaded" and "boom" in d.record().explanation
    assert d(E.Answered(200, "OK", "t1"), E.LegEnded(TRUNK, "bye")) == [] or len(d.finishes()) == 1


def test_nothing_is_sent_after_the_finish_but_what_protocol_requires():
    d = answered_call()
    d(E.LegEnded(BRIDGE, "bye"))
    assert d(E.Request(TRUNK, 3, "INFO")) == [A.Respond(TRUNK, 3, 481)]
    assert d(E.Response(TRUNK, 99, 200, needs_ack=True)) == [A.Ack(TRUNK)]
    assert d(E.TimerFired("cut"), E.Provisional(180, "Ringing", "x"), E.Shutdown()) == []
    assert len(d.finishes()) == 1


# --- every call ends exactly once, whatever comes in ----------------------------------------------

EVENTS = st.sampled_from(
    [
        E.Admitted(plan(ROUTE_A, ROUTE_B)),
        E.Denied(403, "no_entitlement"),
        E.Provisional(180, "Ringing", "t1"),
        E.Provisional(183, "Session Progress", "t2", sdp(8000)),
        E.Answered(200, "OK", "t1", sdp(9000)),
        E.Failed(503, "Service Unavailable"),
        E.Failed(486, "Busy Here"),
        E.Failed(487, "Request Terminated"),
        E.LegEnded(BRIDGE, "cancelled", 487),
        E.LegEnded(BRIDGE, "bye"),
        E.LegEnded(TRUNK, "bye"),
        E.LegEnded(TRUNK, "answered_after_cancel", 200),
        E.AckReceived(BRIDGE, None, True),
        E.AckTimeout(BRIDGE, True),
        E.Request(BRIDGE, 1, "INVITE", sdp(7000)),
        E.Request(TRUNK, 2, "INFO"),
        E.Response(TRUNK, 1, 200, needs_ack=True),
        E.TimerFired("answer"),
        E.TimerFired("setup"),
        E.TimerFired("cut"),
        E.TimerFired("session"),
        E.TimerFired("extend"),
        E.GrantExtended(600.0),
        E.Shutdown(),
        E.Abort("x"),
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(EVENTS, max_size=25), st.booleans())
def test_random_event_sequences_finish_at_most_once_and_only_when_every_leg_is_done(events, late_offer):
    d = Driver(None if late_offer else OFFER)
    for event in events:
        d(event)
        assert len(d.finishes()) <= 1
    if d.finishes():
        assert d.call.bridge_done and d.call.trunk_done
        after = d(E.Request(BRIDGE, 42, "INFO"))
        assert after == [A.Respond(BRIDGE, 42, 481)]
    # An answer to the bridge is sent at most once as a final.
    finals = [a for a in d.log if isinstance(a, A.AnswerBridge) and a.code >= 200]
    assert len(finals) <= 1
    # Every answered call that finished was ended on both legs by BYE or by the peer.
    if d.finishes() and d.record().answered:
        assert d.call.trunk_done and d.call.bridge_done


def test_an_update_toward_a_peer_that_does_not_allow_it_goes_as_a_reinvite():
    d = Driver()
    d(E.Admitted(plan()), E.Answered(200, "OK", "t1", sdp(9000), "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO\r\n"))
    send = one(d(E.Request(BRIDGE, 6, "UPDATE", sdp(7000, "sendonly"))), A.SendRequest)
    assert (send.side, send.method, send.body) == (TRUNK, "INVITE", sdp(7000, "sendonly"))
    out = d(E.Response(TRUNK, send.token, 200, "OK", sdp(9000, "recvonly"), needs_ack=True))
    assert A.Ack(TRUNK) in out  # the offer was in the re-INVITE
    assert one(out, A.Respond) == A.Respond(BRIDGE, 6, 200, "OK", (), sdp(9000, "recvonly"))


def test_a_refresh_update_toward_a_peer_without_update_is_answered_here():
    d = Driver(bridge_timer=True)
    d(
        E.Admitted(plan(session_expires_s=90)),
        E.Answered(200, "OK", "t1", sdp(9000), "Allow: INVITE, ACK, BYE, CANCEL\r\n"),
    )
    out = d(E.Request(BRIDGE, 6, "UPDATE", headers="Session-Expires: 90;refresher=uac\r\n"))
    assert one(out, A.Respond).code == 200 and not of(out, A.SendRequest)
    assert A.StartTimer("session", 60.0) in out


def test_an_update_toward_a_peer_that_allows_it_stays_an_update():
    d = Driver(bridge_allow=None)
    d(E.Admitted(plan()), E.Answered(200, "OK", "t1", sdp(9000), "Allow: INVITE, ACK, BYE, UPDATE\r\n"))
    assert one(d(E.Request(BRIDGE, 6, "UPDATE", sdp(7000))), A.SendRequest).method == "UPDATE"
