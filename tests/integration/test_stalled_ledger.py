"""A frozen PostgreSQL ledger (SIGSTOP on the server) must not freeze the gateway.

While the ledger is frozen: refusals that need no ledger are answered at
once, OPTIONS too; a call that needs a reservation gets `503` with
`Retry-After` at `store.timeout_s`, never a bridge timeout. Once the server
thaws, calls relay again, the ledger holds no live call, and SIGTERM stops
the gateway within its drain time.

The bounds here are generous (a shared 2-core machine): they tell "answered"
from "hung". The latencies themselves are measured in bench/.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.raw_sip import SipSocket, ack_for, final_response, rewrite_top_via_sent_by
from tests.integration.test_edge import invite
from tests.integration.test_relay import bridge, start_trunk

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(240)]

FAST_S = 1.0  # "at once" on a loaded test machine; the benchmark measures the real figure


def timed_exchange(gw, data: bytes, timeout_s: float = 5.0):
    """(final response, seconds from sending to it, the 100 Trying's delay or None)."""
    with SipSocket("udp", gw.target) as sock:
        msg = rewrite_top_via_sent_by(data, "127.0.0.1", sock.local_port)
        sent = time.monotonic()
        got = sock.exchange(msg, timeout_s=timeout_s, settle_s=0)
        final = final_response(got)
        if final is not None and final.status >= 300:
            sock.send(ack_for(msg, final))
        trying = next((r.received_at - sent for r in got if r.status == 100), None)
        return final, (final.received_at - sent) if final else None, trying


def options(gw) -> bytes:
    return (
        f"OPTIONS sip:{gw.target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-opt-1\r\n"
        "From: <sip:bridge@127.0.0.1>;tag=o1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: opt-1@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_frozen_postgresql_ledger_keeps_signalling_alive(own_pg_server, make_gateway, tmp_path):
    gw = make_gateway(store_url=own_pg_server.url, store_extra="timeout_s = 0.5")
    warm = start_trunk(gw, tmp_path / "warm", "trunk_answer.xml")
    assert bridge(gw, tmp_path / "warm").returncode == 0  # the writer is connected
    warm.communicate(timeout=20)
    gw.wait_calls(1)

    own_pg_server.freeze()
    try:
        # A refusal by rules 2-6 needs no ledger: answered at once.
        unknown = invite(gw, call_id="frozen-unknown@127.0.0.1").replace(
            b"X-Dialout-Organizer: alice@contoso.com", b"X-Dialout-Organizer: nobody@nowhere.example"
        )
        final, elapsed, _ = timed_exchange(gw, unknown)
        assert final is not None and final.status == 403 and elapsed < FAST_S
        # So is anything out of dialog.
        final, elapsed, _ = timed_exchange(gw, options(gw))
        assert final is not None and final.status == 200 and elapsed < FAST_S
        # A call that needs a reservation: 100 at once, then 503 + Retry-After at the ledger deadline.
        final, elapsed, trying = timed_exchange(gw, invite(gw, call_id="frozen-1@127.0.0.1"))
        assert final is not None and final.status == 503, final
        assert final.header("Retry-After") and 'text="overloaded"' in final.header("Reason")
        assert trying is not None and trying < FAST_S and elapsed < 0.5 + 2.0
        # The next one does not wait for the deadline again: the ledger is known to be stuck.
        final, elapsed, _ = timed_exchange(gw, invite(gw, call_id="frozen-2@127.0.0.1"))
        assert final is not None and final.status == 503 and elapsed < FAST_S
    finally:
        own_pg_server.unfreeze()

    lines = {line["call_id"]: line for line in gw.wait_calls(4, timeout_s=30)}
    assert lines["frozen-1@127.0.0.1"]["reason"] == "overloaded"
    assert lines["frozen-unknown@127.0.0.1"]["bridge_status"] == 403

    # Thawed: calls relay again (the writer's backlog drains first).
    deadline = time.monotonic() + 30
    while True:
        trunk = start_trunk(gw, tmp_path / "after", "trunk_answer.xml")
        result = bridge(gw, tmp_path / "after")
        trunk.communicate(timeout=20)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr[-1500:]
    # The fixture then checks that the ledger holds no live call (the frozen
    # calls' late reservations were released) and that SIGTERM stops it in time.
