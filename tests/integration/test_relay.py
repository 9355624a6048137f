"""Relay through the real gateway: SIPp bridge -> gateway -> SIPp trunk."""

import pytest

from sip import media_ports
from tests.integration.sipp_runner import free_port, run_sipp

pytestmark = pytest.mark.integration

FR_NUMBER = "+33142685300"


def start_trunk(gw, tmp_path, scenario="trunk_answer.xml", calls=1, extra=None, timeout_s=30, media_port=None):
    """A SIPp trunk on the gateway's trunk port (media on a free port, or `media_port`)."""
    return run_sipp(
        scenario,
        "",
        tmp_path / "trunk",
        calls=calls,
        local_port=gw.trunk_port,
        extra=["-mp", str(media_port or free_port()), "-trace_msg", *(extra or [])],
        background=True,
        timeout_s=timeout_s,
    )


def bridge(
    gw,
    tmp_path,
    scenario="bridge_call.xml",
    *,
    organizer="alice@contoso.com",
    number=FR_NUMBER,
    location="FR",
    calls=1,
    rate=10,
    talk_ms=200,
    extra=None,
    media_port=None,
):
    """A SIPp bridge placing `calls` calls through the gateway (media on a free port, or `media_port`)."""
    return run_sipp(
        scenario,
        gw.target,
        tmp_path / "bridge",
        calls=calls,
        rate=rate,
        service=number,
        local_port=free_port(),
        extra=[
            "-key",
            "organizer",
            organizer,
            "-key",
            "location",
            location,
            "-mp",
            str(media_port or free_port()),
            "-d",
            str(talk_ms),
            "-trace_msg",
            *(extra or []),
        ],
        timeout_s=30,
    )


def messages(workdir):
    """Everything SIPp traced (-trace_msg) in workdir, as one string."""
    text = "".join(p.read_text(errors="replace") for p in sorted(workdir.glob("*_messages.log")))
    return text


def message_list(workdir) -> list[str]:
    """The traced SIP messages one by one, without SIPp's separator lines."""
    out = []
    for block in messages(workdir).split("\n-----------------------------------------------"):
        _, _, message = block.partition(":\n\n")
        if message.strip():
            out.append(message.strip("\n"))
    return out


def received_messages(workdir) -> list[str]:
    """Only the messages SIPp received (not those it sent), in order."""
    out = []
    for block in messages(workdir).split("\n-----------------------------------------------"):
        label, _, message = block.partition(":\n\n")
        if message.strip() and "received" in label:
            out.append(message.strip("\n"))
    return out


def test_answered_call_is_relayed_with_sdp_passed_through_and_hung_up_by_bridge(gateway, tmp_path):
    bridge_media, trunk_media = free_port(), free_port()
    trunk = start_trunk(gateway, tmp_path, media_port=trunk_media)
    result = bridge(gateway, tmp_path, media_port=bridge_media)
    trunk_out, trunk_err = trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert trunk.returncode == 0, trunk_err[-2000:]

    trunk_msgs = messages(tmp_path / "trunk")
    bridge_msgs = messages(tmp_path / "bridge")
    # The trunk sees a +E164 Request-URI with user=phone, the configured caller ID,
    # no X-Dialout-* header, and the bridge's own media address and port.
    invite_at_trunk = trunk_msgs[trunk_msgs.index("INVITE sip:") :]
    invite_at_trunk = invite_at_trunk[: invite_at_trunk.index("\n\n", invite_at_trunk.index("m=audio"))]
    assert "INVITE sip:+33142685300@127.0.0.1" in invite_at_trunk and "user=phone" in invite_at_trunk
    assert "+18005550100" in invite_at_trunk.split("From:", 1)[1].split("\n", 1)[0]
    assert "x-dialout" not in invite_at_trunk.lower()
    assert media_ports(invite_at_trunk) == [bridge_media]
    # The bridge gets the trunk's media address and port in the 200.
    ok = bridge_msgs[bridge_msgs.index("SIP/2.0 200 OK") :]
    assert media_ports(ok[: ok.index("\n\n", ok.index("m=audio"))]) == [trunk_media]

    line = gateway.wait_calls(1)[0]
    assert line["decision"] == "allow" and line["reason"] == "allowed"
    assert line["organizer"] == "alice@contoso.com" and line["destination"] == FR_NUMBER
    assert line["region"] == "FR" and line["bucket"] == "tenant_pool"
    assert line["bridge_status"] == 200 and line["trunk_status"] == 200
    assert line["ended_by"] == "bridge" and line["billed_units"] == 1
    assert line["meeting"] == "meeting-1" and line["location"] == "FR"


def test_bridge_over_tcp_is_relayed(gateway, tmp_path):
    trunk = start_trunk(gateway, tmp_path)
    result = bridge(gateway, tmp_path, extra=["-t", "t1"])
    trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert trunk.returncode == 0
    invite = messages(tmp_path / "bridge")
    assert "INVITE sip:" in invite and "SIP/2.0/TCP" in invite
    line = gateway.wait_calls(1)[0]
    assert line["reason"] == "allowed" and line["bridge_status"] == 200 and line["billed_units"] == 1


def test_early_media_183_with_sdp_reaches_the_bridge_before_the_answer(gateway, tmp_path):
    trunk_media = free_port()
    trunk = start_trunk(gateway, tmp_path, "trunk_early_media.xml", media_port=trunk_media)
    result = bridge(gateway, tmp_path)
    trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert trunk.returncode == 0
    received = [m for m in message_list(tmp_path / "bridge") if m.startswith("SIP/2.0 ")]
    codes = [int(m.split(" ", 2)[1]) for m in received if "INVITE" in m.split("CSeq:", 1)[1].split("\n", 1)[0]]
    assert 183 in codes and codes.index(183) < codes.index(200)
    early = received[[int(m.split(" ", 2)[1]) for m in received].index(183)]
    assert media_ports(early.split("\n\n", 1)[1]) == [trunk_media]  # the trunk's announcement media
    line = gateway.wait_calls(1)[0]
    assert line["reason"] == "allowed" and line["bridge_status"] == 200
