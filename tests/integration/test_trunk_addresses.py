"""Where the trunk is, as carriers hand it out: host names looked up as RFC
3263 says (through a DNS server on loopback), registration with a SIPp
registrar, and the trunk's transport kept for a large INVITE.

Each test goes through the real gateway; the fixtures check afterwards that
no call was left live and stdout was JSON.
"""

from __future__ import annotations

import socket
import threading

import pytest

from tests.integration.dns_server import LocalDns
from tests.integration.sipp_runner import free_port
from tests.integration.test_relay import bridge, received_messages
from tests.integration.test_routing import US, carrier, fail_scenario, header, trunk_table, trunks, us_call

pytestmark = pytest.mark.integration


def named_trunk(name: str, uri: str, destinations, priority: int = 1, extra: str = "") -> str:
    dests = ", ".join(f'"{d}"' for d in destinations)
    return (
        f'[[trunks]]\nname = "{name}"\nuri = "{uri}"\ndestinations = [{dests}]\n'
        f"priority = {priority}\nanswer_timeout_s = 6\n{extra}\n"
    )


def test_srv_targets_are_tried_in_order_before_the_next_trunk(make_gateway, tmp_path):
    first, second = free_port(), free_port()
    records = {
        "_sip._udp.carrier.test": [
            ("SRV", (10, 0, first, "a.carrier.test")),
            ("SRV", (20, 0, second, "b.carrier.test")),
        ],
        "a.carrier.test": [("A", "127.0.0.1")],
        "b.carrier.test": [("A", "127.0.0.1")],
    }
    with LocalDns(records) as dns:
        gw = make_gateway(
            sip_extra=f'nameservers = ["127.0.0.1:{dns.port}"]',
            trunks=trunks(named_trunk("carrier", "sip:carrier.test", ["US"])),
        )
        gw.wait_for(lambda e: e.get("event") == "trunk_resolved")
        busy = carrier(tmp_path, "a", first, fail_scenario(tmp_path, 503, "Service Unavailable"))
        good = carrier(tmp_path, "b", second, "trunk_answer.xml")
        result = us_call(gw, tmp_path)
        busy.communicate(timeout=30)
        good.communicate(timeout=30)
        assert ("_sip._udp.carrier.test.", "SRV") in dns.queries
    assert result.returncode == 0, result.stderr[-1500:]
    assert busy.returncode == 0 and good.returncode == 0
    line = gw.wait_calls(1)[0]
    assert line["trunk"] == "carrier" and line["bridge_status"] == 200
    assert line["trunk_attempts"] == [
        {"trunk": "carrier", "status": 503, "next_hop": f"127.0.0.1:{first}"},
        {"trunk": "carrier", "status": 200, "next_hop": f"127.0.0.1:{second}"},
    ]
    invite = next(m for m in received_messages(tmp_path / "b") if m.startswith("INVITE "))
    assert invite.startswith(f"INVITE sip:{US}@carrier.test;user=phone SIP/2.0")  # the name is kept


def test_a_name_the_nameservers_do_not_hold_is_resolved_by_the_system(make_gateway, tmp_path):
    port = free_port()
    with LocalDns({}) as dns:  # NXDOMAIN for everything
        gw = make_gateway(
            sip_extra=f'nameservers = ["127.0.0.1:{dns.port}"]',
            trunks=trunks(named_trunk("carrier", f"sip:localhost:{port}", ["US"])),
        )
        resolved = gw.wait_for(lambda e: e.get("event") == "trunk_resolved")
        assert ("localhost.", "A") in dns.queries
    assert f"udp 127.0.0.1:{port}" in resolved["targets"]
    good = carrier(tmp_path, "t", port, "trunk_answer.xml")
    result = us_call(gw, tmp_path)
    good.communicate(timeout=30)
    assert result.returncode == 0 and good.returncode == 0, result.stderr[-1500:]
    line = gw.wait_calls(1)[0]
    assert line["trunk_attempts"][-1] == {"trunk": "carrier", "status": 200, "next_hop": f"127.0.0.1:{port}"}


def test_registration_answers_the_challenge_and_is_refreshed_before_expiry(make_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("CARRIER_PASSWORD", "s3cret")
    port = free_port()
    registrar = carrier(tmp_path, "reg", port, "trunk_registrar.xml", timeout_s=40)
    gw = make_gateway(
        trunks=trunks(
            trunk_table(
                "carrier", port, ["US"], extra='username = "gw"\npassword_env = "CARRIER_PASSWORD"\nregister = true'
            )
        )
    )
    _, err = registrar.communicate(timeout=40)
    assert registrar.returncode == 0, err[-1500:]  # 401 answered, verifyauth passed, refreshed
    registered = [e for e in gw.events() if e.get("event") == "trunk_registered"]
    assert [e["expires_s"] for e in registered][:2] == [7, 600]
    assert not [e for e in gw.events() if e.get("event") == "trunk_down"]
    assert "s3cret" not in gw.log_path.read_text()
    registers = [m for m in received_messages(tmp_path / "reg") if m.startswith("REGISTER ")]
    assert "Authorization: Digest" in registers[1] and 'username="gw"' in registers[1]


def test_a_refused_registration_marks_the_trunk_down_and_calls_take_the_next(make_gateway, tmp_path):
    reg, backup = free_port(), free_port()
    registrar = carrier(tmp_path, "reg", reg, "trunk_registrar_refuses.xml")
    gw = make_gateway(
        trunks=trunks(
            trunk_table("us-a", reg, ["US"], 1, 'username = "gw"\npassword = "x"\nregister = true'),
            trunk_table("us-b", backup, ["US"], 2),
        )
    )
    down = gw.wait_for(lambda e: e.get("event") == "trunk_down")
    registrar.communicate(timeout=30)
    assert down["trunk"] == "us-a" and "registration failed: 403" in down["reason"]
    good = carrier(tmp_path, "b", backup, "trunk_answer.xml")
    result = us_call(gw, tmp_path)
    good.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-1500:]
    line = gw.wait_calls(1)[0]
    assert [a["trunk"] for a in line["trunk_attempts"]] == ["us-b"]
    assert gw.metric('dialout_trunk_up{trunk="us-a"}') == 0


class _TcpBlackHole:
    """A TCP port that swallows connections and never answers: a firewalled
    SIP-over-TCP port, from the gateway's side. Counts the connections."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_large_invite_to_a_udp_trunk_goes_over_udp(make_gateway, tmp_path):
    port = free_port()
    hole = _TcpBlackHole(port)  # RFC 3261 18.1.1 would switch a large request to TCP: nothing answers there
    try:
        gw = make_gateway(trunks=trunks(trunk_table("udp-only", port, ["FR"], extra='transport = "udp"')))
        trunk = carrier(tmp_path, "t", port, "trunk_answer.xml")
        result = bridge(gw, tmp_path, "bridge_large_offer.xml")
        trunk.communicate(timeout=30)
    finally:
        hole.close()
    assert result.returncode == 0, result.stderr[-1500:]
    assert trunk.returncode == 0
    assert hole.accepted == []
    invite = next(m for m in received_messages(tmp_path / "t") if m.startswith("INVITE "))
    assert len(invite.encode()) > 1300 and "SIP/2.0/UDP" in header(invite, "Via")
    assert invite.count("a=candidate:") == 34
    line = gw.wait_calls(1)[0]
    assert line["bridge_status"] == 200 and line["trunk_attempts"] == [{"trunk": "udp-only", "status": 200}]
