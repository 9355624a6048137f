"""gateway/pjsip_fallback.py: the decisions (pure) and the ctypes modules in a
real pjsua endpoint (in a child process: pjsua allows one endpoint per process
and a C fault must not take pytest down)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.pjsip_fallback import (
    STANDARD_METHODS,
    Answer,
    PjsipFromToHdr,
    PjsipHdr,
    PjsipModule,
    PjsipMsg,
    cseq_method_of,
    fallback_answer,
    header_value,
    method_from_info,
    precheck_answer,
    token_list,
)

REPO = Path(__file__).resolve().parents[2]
ALLOW = frozenset("INVITE ACK BYE CANCEL OPTIONS INFO MESSAGE NOTIFY PRACK REFER SUBSCRIBE UPDATE".split())
SUPPORTED = frozenset({"replaces", "100rel", "timer", "norefersub", "trickle-ice"})


@pytest.mark.parametrize("info,method", [
    ("Request msg REGISTER/cseq=8/call-id=abc/to=x (rdata0x55d0c8a0)", "REGISTER"),
    ("Request msg !interesting-Method0123456789_*+`.%indeed'~/cseq=139122385 (rdata0x1)",
     "!interesting-Method0123456789_*+`.%indeed'~"),
    ("Request msg RE%47IST%45R/cseq=29344 (rdata0x1)", "RE%47IST%45R"),
    ("Response msg 200/OPTIONS/cseq=1 (rdata0x1)", None),
    ("INVALID MSG", None),
    ("", None),
])
def test_method_from_info(info, method):
    assert method_from_info(info) == method


def test_header_helpers():
    assert header_value("Allow: INVITE, ACK") == "INVITE, ACK"
    assert header_value("garbage") == ""
    assert token_list("nothingSupportsThis, nothingSupportsThisEither") == [
        "nothingSupportsThis", "nothingSupportsThisEither"]
    assert token_list(" a ,b\t, ,c ") == ["a", "b", "c"]
    assert token_list("") == []
    assert cseq_method_of("8 INVITE") == "INVITE"
    assert cseq_method_of("8") is None
    assert cseq_method_of("") is None


def test_fallback_never_answers_ack():
    assert fallback_answer("ACK", ALLOW) is None


@pytest.mark.parametrize("method", sorted(STANDARD_METHODS - ALLOW))
def test_fallback_405_with_allow_for_a_standard_method_not_implemented(method):
    answer = fallback_answer(method, ALLOW)
    assert answer.status == 405 and answer.reason == "Method Not Allowed"
    (name, value), = answer.headers
    assert name == "Allow" and set(token_list(value)) == ALLOW
    assert token_list(value)[:5] == ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]


@pytest.mark.parametrize("method", ["NEWMETHOD", "RE%47IST%45R", "register", "!interesting-Method"])
def test_fallback_501_for_an_unknown_method(method):
    assert fallback_answer(method, ALLOW) == Answer(501, "Not Implemented")


@pytest.mark.parametrize("method", ["BYE", "CANCEL", "INFO", "UPDATE", "PRACK", "NOTIFY"])
def test_fallback_481_for_an_implemented_method_without_its_dialog(method):
    assert fallback_answer(method, ALLOW).status == 481


def test_precheck_lets_good_requests_and_invite_through():
    assert precheck_answer("OPTIONS", ["OPTIONS"], 1, [], SUPPORTED, ALLOW) is None
    assert precheck_answer("OPTIONS", ["OPTIONS"], 0, ["timer", "100rel"], SUPPORTED, ALLOW) is None
    assert precheck_answer("INVITE", ["BYE"], 2, ["x"], SUPPORTED, ALLOW) is None
    assert precheck_answer("ACK", ["INVITE"], 2, ["x"], SUPPORTED, ALLOW) is None


def test_precheck_400_for_a_cseq_method_mismatch():
    answer = precheck_answer("OPTIONS", ["INVITE"], 1, [], SUPPORTED, ALLOW)
    assert answer.status == 400
    assert answer.headers == (("Warning", '399 - "CSeq method (INVITE) does not match the request method OPTIONS"'),)
    assert precheck_answer("OPTIONS", [], 0, [], SUPPORTED, ALLOW).status == 400
    assert precheck_answer("OPTIONS", ["OPTIONS", "OPTIONS"], 0, [], SUPPORTED, ALLOW).status == 400
    assert precheck_answer("NEWMETHOD", ["INVITE"], 0, [], SUPPORTED, ALLOW).status == 400


def test_precheck_400_for_several_content_lengths():
    answer = precheck_answer("OPTIONS", ["OPTIONS"], 2, [], SUPPORTED, ALLOW)
    assert answer.status == 400 and "Content-Length" in answer.headers[0][1]


def test_precheck_420_lists_every_unsupported_require_tag_once():
    answer = precheck_answer("OPTIONS", ["OPTIONS"], 1, ["nothingSupportsThis", "timer", "nothingSupportsThisEither",
                                                          "nothingSupportsThis"], SUPPORTED, ALLOW)
    assert answer == Answer(420, "Bad Extension",
                            (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),))


def test_precheck_leaves_require_of_an_unimplemented_method_to_the_405():
    # RFC 3261 §8.2.1 (method) comes before §8.2.2 (Require): REGISTER gets the fallback's 405.
    assert precheck_answer("REGISTER", ["REGISTER"], 1, ["nothingSupportsThis"], SUPPORTED, ALLOW) is None


def test_struct_layouts_match_the_lp64_headers():
    # offsetof() from sip_module.h and sip_msg.h compiled with gcc on x86-64 Linux (LP64).
    assert PjsipModule.on_rx_request.offset == 72 and PjsipModule.on_tsx_state.offset == 104
    assert ctypes.sizeof(PjsipModule) == 112 and ctypes.sizeof(PjsipHdr) == 64
    assert PjsipHdr.vptr.offset == 56 and PjsipFromToHdr.tag.offset == 72
    assert PjsipMsg.req.offset == 8 and PjsipMsg.hdr.offset == 40


CHILD = textwrap.dedent(r"""
    import json, socket, sys, time, uuid
    from gateway.settings import Listener
    from gateway.sipstack import SipStack
    from gateway import pjsip_fallback

    stack = SipStack(max_calls=4)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
    stack.listen(Listener("udp", "127.0.0.1", port))
    stack.start()
    fb = pjsip_fallback.install()
    assert pjsip_fallback.install() is fb  # idempotent: a second registration would assert in pjsip

    def send(method, cseq_method=None, to_tag="", extra=""):
        branch = "z9hG4bK" + uuid.uuid4().hex
        msg = (f"{method} sip:x@127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};branch={branch}\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\n"
               f"To: <sip:x@example.com>{';tag=' + to_tag if to_tag else ''}\r\n"
               f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {cseq_method or method}\r\n{extra}Content-Length: 0\r\n\r\n")
        sock.sendto(msg.encode(), ("127.0.0.1", port))
        sock.settimeout(0.01)
        got, deadline = [], time.monotonic() + 0.6
        while time.monotonic() < deadline:
            stack.poll(10)
            try:
                got.append(sock.recv(65535).decode("latin-1"))
            except socket.timeout:
                pass
        return [(int(r.split(" ", 2)[1]), [l for l in r.split("\r\n") if l.startswith(("Allow:", "Unsupported:"))])
                for r in got]

    out = {
        "register": send("REGISTER"),
        "unknown": send("FOO"),
        "ack": send("ACK"),
        "bye": send("BYE"),
        "in_dialog_register": send("REGISTER", to_tag="abc"),
        "options": send("OPTIONS"),
        "options_require": send("OPTIONS", extra="Require: nope, timer\r\n"),
        "options_cseq": send("OPTIONS", cseq_method="INVITE"),
        "options_after": send("OPTIONS"),
        "answered": fb.answered, "disabled": fb.disabled,
    }
    print(json.dumps(out))
    stack.shutdown()
""")


@pytest.mark.integration
def test_modules_in_a_real_pjsua_endpoint():
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["disabled"] is None
    assert [s for s, _ in out["register"]] == [405] and out["register"][0][1][0].startswith("Allow: INVITE, ACK")
    assert out["unknown"] == [[501, []]]
    assert out["ack"] == [] and out["in_dialog_register"] == []
    assert [s for s, _ in out["bye"]] == [481]
    assert [s for s, _ in out["options"]] == [200] and [s for s, _ in out["options_after"]] == [200]
    assert out["options_require"] == [[420, ["Unsupported: nope"]]]
    assert [s for s, _ in out["options_cseq"]] == [400]
    assert out["answered"] == 5
