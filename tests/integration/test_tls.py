"""A TLS listener with `gateway.require_tls`: INVITEs over TLS are decided,
the same INVITE over UDP is dropped before any lookup (and logged)."""

import socket
import ssl
import subprocess
import time

import pytest

from tests.integration.gateway_proc import GatewayProcess, gateway_config
from tests.integration.raw_sip import SipSocket, ack_for, final_response, parse_response, split_stream
from tests.integration.sipp_runner import free_port

pytestmark = pytest.mark.integration


def invite(transport: str, local_port: int, organizer: str) -> bytes:
    body = "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    return (
        f"INVITE sip:+33142685300@127.0.0.1;user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK-tls-{transport}-{time.monotonic_ns()}\r\n"
        f"From: <sip:bridge@127.0.0.1>;tag=b1\r\nTo: <sip:+33142685300@127.0.0.1>\r\n"
        f"Call-ID: tls-{transport}-{time.monotonic_ns()}@test\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:bridge@127.0.0.1:{local_port};transport={transport.lower()}>\r\nMax-Forwards: 70\r\n"
        f"X-Dialout-Organizer: {organizer}\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


@pytest.fixture
def tls_gateway(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    sip_port, tls_port, trunk_port = free_port(), free_port(socket.SOCK_STREAM), free_port()
    text = gateway_config(
        sip_port=sip_port, trunk_port=trunk_port, db_path=tmp_path / "ledger.db", extra_gateway="require_tls = true"
    )
    text = text.replace(
        f'{{ transport = "tcp", address = "127.0.0.1", port = {sip_port} }}]',
        f'{{ transport = "tcp", address = "127.0.0.1", port = {sip_port} }},\n'
        f'          {{ transport = "tls", address = "127.0.0.1", port = {tls_port}, '
        f'cert_file = "{cert}", key_file = "{key}" }}]',
    )
    assert f"port = {tls_port}" in text
    gw = GatewayProcess(tmp_path, text, sip_port=sip_port, trunk_port=trunk_port).start()
    gw.tls_port = tls_port
    yield gw
    gw.stop()


def test_invite_over_tls_is_decided_and_plain_udp_is_refused(tls_gateway):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", tls_gateway.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        request = invite("TLS", tls.getsockname()[1], "nobody@contoso.com")
        tls.sendall(request)
        buffer, responses = b"", []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(r.status >= 200 for r in responses):
            tls.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = tls.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            messages, buffer = split_stream(buffer + chunk)
            responses += [parse_response(m) for m in messages if m.strip()]
        final = final_response(responses)
        assert final is not None and final.status == 403
        assert final.header("Reason") == 'SIP;cause=403;text="organizer_unknown"'
        tls.sendall(ack_for(request, final))

    with SipSocket("udp", tls_gateway.target) as udp:
        # Not over TLS: dropped before any lookup (untrusted = "drop", the default).
        request = invite("UDP", udp.local_port, "alice@contoso.com")
        assert udp.exchange(request, timeout_s=1.5) == []
    refused = tls_gateway.wait_for(lambda e: e.get("event") == "admission_refused")
    assert refused["transport"] == "udp" and "TLS" in refused["explanation"]
