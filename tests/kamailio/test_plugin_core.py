"""The Kamailio plugin's core without Kamailio: what it answers, what it reserves,
how its timer extends grants and how every reservation is settled exactly once.

Everything runs on a real SQLite ledger in the test's tmp dir; Kamailio's side
(dialogs, their variables, the clock of the timer) is played by the test.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from structlog.testing import capture_logs

from kamailio_plugin.core import (
    VAR_CALL,
    VAR_GRANTED_S,
    VAR_MAX_S,
    DialogView,
    DialoutPlugin,
    Reject,
    Relay,
    dialogs_from_rpc,
)
from kamailio_plugin.settings import ConfigError, load_settings
from policy import CallRequest, Snapshot, decide
from sip import reject_headers
from store import StoreError
from tests.integration.gateway_proc import example_policy_text, gateway_config

UTC = UTC
NOW = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
FR = "+33142685300"


def make_plugin(tmp_path, *, policy_text=None, store_extra="", gateway_extra="") -> DialoutPlugin:
    text = gateway_config(
        sip_port=5060,
        trunk_port=5080,
        db_path=tmp_path / "ledger.db",
        policy_text=policy_text,
        heartbeat_s=1,
        extra_gateway=gateway_extra,
    )
    if store_extra:
        text = text.replace("\n[store]\n", f"\n[store]\n{store_extra}\n", 1)
    # The plugin does not need [gateway] listen (Kamailio listens): prove it.
    text = re.sub(r"(?ms)^listen = \[.*?\]\n(?=trusted_sources)", "", text)
    assert "listen" not in text.split("[trunk]")[0]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    plugin = DialoutPlugin(load_settings(path), structlog.get_logger().bind(component="kamailio"))
    plugin.start(NOW)
    return plugin


def invite(number=FR, organizer="alice@contoso.com", *, call_id=None, extra=""):
    call_id = call_id or f"{uuid.uuid4().hex}@bridge"
    lines = [
        f"INVITE sip:{number}@127.0.0.1:5060;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1",
        'From: "Weekly sync" <sip:bridge@127.0.0.1:5099>;tag=abc',
        f"To: <sip:{number}@127.0.0.1:5060;user=phone>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Contact: <sip:bridge@127.0.0.1:5099>",
        "Max-Forwards: 70",
    ]
    if organizer:
        lines.append(f"X-Dialout-Organizer: {organizer}")
    lines += ["X-Dialout-Meeting: meeting-1", "x-dialout-location: FR"]
    if extra:
        lines.append(extra)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines)


def row(plugin, call_id):
    return plugin.ledger.get().call_row(call_id)


def dialog(call_id, relay: Relay, *, start_ts: float, timeout_ts: float | None = None, state=4) -> DialogView:
    variables = dict(relay.dialog_vars)
    return DialogView(
        h_entry=1,
        h_id=abs(hash(call_id)) % 10_000,
        call_id=call_id,
        state=state,
        start_ts=int(start_ts),
        timeout_ts=int(timeout_ts or start_ts + relay.timeout_s),
        variables=variables,
    )


# --------------------------------------------------------------------------- the INVITE


REFUSALS = [
    ("", FR),
    ("nobody@contoso.com", FR),
    ("alice@contoso.com", "12ab"),
    ("alice@contoso.com", "112"),
    ("bob@contoso.com", "+4930123456"),
    ("dmitri@contoso.com", FR),
    ("grace@fabrikam.com", "+14165550100"),
    ("frank@fabrikam.com", "+442071234567"),  # rules 7-9: no entitlement
]


@pytest.mark.parametrize("organizer,number", REFUSALS)
def test_a_refusal_is_the_policys_own_decision_with_the_gateways_headers(tmp_path, organizer, number):
    plugin = make_plugin(tmp_path)
    with capture_logs() as logs:
        result = plugin.admit(invite(number, organizer), "127.0.0.1", NOW)
    expected = decide(
        CallRequest(organizer=organizer or None, dialled=number, meeting="meeting-1", location="FR"),
        Snapshot(),
        NOW,
        plugin.policy,
    )
    assert not expected.allow
    assert isinstance(result, Reject)
    assert result.status == expected.status and result.reason == expected.reason.value
    headers = reject_headers(
        expected.reason.value,
        expected.reason.status,
        expected.explanation,
        "gw-under-test",
        1 if expected.reason.transient else None,
    )
    assert list(result.headers) == headers
    (line,) = [e for e in logs if e["event"] == "call"]
    assert line["decision"] == "deny" and line["reason"] == expected.reason.value and line["trace"]


def test_an_admitted_call_is_reserved_and_relayed_to_the_trunk_as_e164(tmp_path):
    plugin = make_plugin(tmp_path)
    result = plugin.admit(invite("0142685300", call_id="c1@bridge", extra="X-Dialout-Whatever: 1"), "127.0.0.1", NOW)
    assert isinstance(result, Relay), result
    assert result.target == f"sip:{FR}@127.0.0.1:5080;user=phone"
    assert result.answer_timeout_ms == 4000
    assert set(result.remove_headers) == {
        "X-Dialout-Organizer",
        "X-Dialout-Meeting",
        "x-dialout-location",
        "X-Dialout-Whatever",
    }
    variables = dict(result.dialog_vars)
    assert variables["dialout_reason"] == "allowed" and variables["dialout_bucket"] == "tenant_pool"
    assert variables["dialout_max_s"] == "14400" and variables["dialout_trunk"] == "127.0.0.1:5080"
    assert int(variables[VAR_GRANTED_S]) == 300 == result.timeout_s  # the first chunk
    assert json.loads(variables[VAR_CALL])["destination"] == FR
    ledger = row(plugin, "c1@bridge")
    assert ledger["state"] == "open" and ledger["granted_s"] == 300


def test_an_untrusted_source_is_dropped_or_refused_before_any_lookup(tmp_path):
    plugin = make_plugin(tmp_path)
    assert plugin.admit(invite(), "192.0.2.7", NOW) is None  # gateway.untrusted = "drop" (default)
    strict = make_plugin(tmp_path / "strict", gateway_extra='untrusted = "reject"')
    result = strict.admit(invite(), "192.0.2.7", NOW)
    assert result == Reject(
        403, "Forbidden", (("Reason", 'SIP;cause=403;text="untrusted_source"'),), "untrusted_source", stateless=True
    )
    assert strict.admit(invite(), "not an address", NOW) is not None


def test_a_malformed_invite_is_answered_with_its_status_and_a_warning(tmp_path):
    plugin = make_plugin(tmp_path)
    result = plugin.admit(invite().replace("INVITE sip:", "INVITE ftp:", 1), "127.0.0.1", NOW)
    assert isinstance(result, Reject) and result.status == 416
    assert result.headers[0][0] == "Warning"
    assert plugin.admit(b"INVITE sip:+33142685300@h SIP/2.0\r\nFrom: \xff\r\n\r\n", "127.0.0.1", NOW).status == 400
    assert plugin.admit(None, "127.0.0.1", NOW).status == 400


def test_an_unreachable_ledger_is_503_overloaded_and_nothing_goes_out(tmp_path, monkeypatch):
    plugin = make_plugin(tmp_path)

    def down():
        raise StoreError("database is locked")

    monkeypatch.setattr(plugin.ledger, "get", down)
    result = plugin.admit(invite(), "127.0.0.1", NOW)
    assert isinstance(result, Reject) and result.status == 503 and result.reason == "overloaded"
    assert ("Retry-After", "5") in result.headers


def test_the_settings_are_the_gateways_own_and_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        gateway_config(sip_port=5060, trunk_port=5080, db_path=tmp_path / "l.db").replace(
            'uri = "sip:127.0.0.1:5080"', 'uri = "http://trunk"'
        )
    )
    with pytest.raises(ConfigError, match=r"bad\.toml: trunk\.uri"):
        load_settings(bad)


# --------------------------------------------------------------------------- the timer


def per_second_policy(max_s: int) -> str:
    text = re.sub(r"(?m)^max_call_length_s = .*$", f"max_call_length_s = {max_s}", example_policy_text())
    return re.sub(r"(?m)^billing_increment = .*$", 'billing_increment = "second"', text)


def test_the_timer_extends_a_grant_before_it_runs_out_and_moves_the_dialogs_end(tmp_path):
    plugin = make_plugin(tmp_path, policy_text=per_second_policy(5), store_extra="chunk_s = 2")
    relay = plugin.admit(invite(call_id="c2@bridge"), "127.0.0.1", NOW)
    assert relay.timeout_s == 2
    t0 = NOW.timestamp() + 1
    plugin.answered("c2@bridge", datetime.fromtimestamp(t0, UTC))

    d = dialog("c2@bridge", relay, start_ts=t0)
    with capture_logs() as logs:
        assert [u.timeout_s for u in plugin.tick([d], t0 + 0.2)] == [4]  # granted 2 -> 4: ends at t0+4
        assert plugin.tick([d], t0 + 1.2) == []  # 4 - 2 s margin not reached
        [update] = plugin.tick([d], t0 + 2.2)  # 4 -> 5, the maximum
        assert update.timeout_s == 3 and (update.h_entry, update.h_id) == (d.h_entry, d.h_id)
        assert plugin.tick([d], t0 + 3.2) == []  # nothing past the maximum
    assert [e["granted_s"] for e in logs if e["event"] == "grant_extended"] == [4, 5]
    assert row(plugin, "c2@bridge")["granted_s"] == 5


def test_the_timer_stops_asking_once_the_entitlement_is_dry(tmp_path, monkeypatch):
    plugin = make_plugin(tmp_path, policy_text=per_second_policy(60), store_extra="chunk_s = 2")
    relay = plugin.admit(invite(call_id="c3@bridge"), "127.0.0.1", NOW)
    t0 = NOW.timestamp()
    calls = []
    store = plugin.ledger.get()
    monkeypatch.setattr(store, "extend", lambda call_id, now: calls.append(call_id))  # -> None: nothing left
    d = dialog("c3@bridge", relay, start_ts=t0)
    with capture_logs() as logs:
        assert plugin.tick([d], t0 + 0.5) == [] and plugin.tick([d], t0 + 1.0) == []
    assert calls == ["c3@bridge"]  # asked once; the dialog ends at its grant
    assert [e["event"] for e in logs].count("grant_exhausted") == 1


def test_a_dialog_first_seen_after_a_reload_keeps_the_grant_its_end_shows(tmp_path):
    plugin = make_plugin(tmp_path, policy_text=per_second_policy(60), store_extra="chunk_s = 10")
    relay = plugin.admit(invite(call_id="c4@bridge"), "127.0.0.1", NOW)
    t0 = NOW.timestamp()
    # A previous timer process extended it to 20 s: the variable still says 10.
    d = dialog("c4@bridge", relay, start_ts=t0, timeout_ts=t0 + 20)
    assert d.variables[VAR_GRANTED_S] == "10" and d.variables[VAR_MAX_S] == "60"
    assert plugin.tick([d], t0 + 9) == []


# --------------------------------------------------------------------------- settlement


def test_settlement_is_once_whoever_asks_again(tmp_path):
    plugin = make_plugin(tmp_path)
    relay = plugin.admit(invite(call_id="c5@bridge"), "127.0.0.1", NOW)
    answered = NOW + timedelta(seconds=1)
    plugin.answered("c5@bridge", answered)
    with capture_logs() as logs:
        first = plugin.settle(
            "c5@bridge",
            dict(relay.dialog_vars),
            outcome="allowed",
            bridge_status=200,
            trunk_status=200,
            ended_by="bridge",
            ended_at=answered + timedelta(seconds=75),
        )
        again = plugin.settle(
            "c5@bridge",
            dict(relay.dialog_vars),
            outcome="duration_exhausted",
            bridge_status=200,
            trunk_status=200,
            ended_by="gateway",
            ended_at=answered + timedelta(seconds=500),
        )
    assert first.billed_units == 2 and first.charges == (("tenant_pool", 2.0),)
    assert again == first  # the stored settlement, nothing charged twice
    pool = plugin.ledger.get().bucket_row("contoso", "2026-03", "tenant_pool")
    assert pool["used"] == 2 and pool["reserved"] == 0
    line = [e for e in logs if e["event"] == "call"][0]
    assert line["billed_units"] == 2 and line["destination"] == FR and line["trunk"] == "127.0.0.1:5080"


def test_a_call_whose_settlement_was_lost_is_swept_to_its_last_heartbeat(tmp_path):
    plugin = make_plugin(tmp_path)
    relay = plugin.admit(invite(call_id="c6@bridge"), "127.0.0.1", NOW)
    t0 = NOW.timestamp() + 1
    plugin.answered("c6@bridge", datetime.fromtimestamp(t0, UTC))
    d = dialog("c6@bridge", relay, start_ts=t0)
    plugin.tick([d], t0 + 30)  # alive and heartbeated at t0+30
    # Its end was never recorded (the ledger failed then); the dialog is gone.
    stale_after = plugin.stale_after_s
    with capture_logs() as logs:
        for k in range(1, int(stale_after) + 10):
            plugin.tick([], t0 + 30 + k)
    recovered = [e for e in logs if e["event"] == "call_recovered"]
    assert [e["call_id"] for e in recovered] == ["c6@bridge"]
    ledger = row(plugin, "c6@bridge")
    assert ledger["state"] == "closed" and ledger["recovered"] and ledger["talk_s"] == pytest.approx(30)
    # The late event, if it ever comes, changes nothing.
    late = plugin.settle(
        "c6@bridge", dict(relay.dialog_vars), outcome="allowed", bridge_status=200, trunk_status=200, ended_by="bridge"
    )
    assert late.recovered and late.billed_units == 1


def test_a_live_call_is_never_swept(tmp_path):
    plugin = make_plugin(tmp_path)
    relay = plugin.admit(invite(call_id="c7@bridge"), "127.0.0.1", NOW)
    t0 = NOW.timestamp() + 1
    plugin.answered("c7@bridge", datetime.fromtimestamp(t0, UTC))
    d = dialog("c7@bridge", relay, start_ts=t0)
    for k in range(60):
        plugin.tick([d], t0 + k)
    assert row(plugin, "c7@bridge")["state"] == "answered"


def test_startup_settles_the_calls_a_previous_run_left_open(tmp_path):
    plugin = make_plugin(tmp_path)
    plugin.admit(invite(call_id="c8@bridge"), "127.0.0.1", NOW)
    assert plugin.start(NOW + timedelta(minutes=1)) == 1
    assert row(plugin, "c8@bridge")["outcome"] == "recovered"


def test_the_dialog_list_is_read_from_the_rpc_answer():
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": [
                {
                    "h_entry": 3740,
                    "h_id": 173,
                    "ref": 2,
                    "call-id": "1-22863@127.0.0.1",
                    "state": 4,
                    "start_ts": 1795960137,
                    "init_ts": 1795960137,
                    "timeout": 1795960140,
                    "lifetime": 3,
                    "profiles": ["dialout"],
                    "variables": [{"dialout_max_s": "5"}, {"dialout_call": "{}"}],
                }
            ],
        }
    )
    [d] = dialogs_from_rpc(body)
    assert (d.h_entry, d.h_id, d.call_id, d.timeout_ts) == (3740, 173, "1-22863@127.0.0.1", 1795960140)
    assert d.answered and d.variables == {"dialout_max_s": "5", "dialout_call": "{}"}
    assert dialogs_from_rpc("") == [] and dialogs_from_rpc('{"jsonrpc":"2.0","error":{"code":500}}') == []
