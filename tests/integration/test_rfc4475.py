"""The real gateway against the 49 RFC 4475 torture messages, over the wire.

tests/sip/test_rfc4475.py checks our Python parser; this checks what the
running gateway (pjsip first, then gateway/service.py for the INVITEs pjsua
accepts) *answers* to each message, against what RFC 4475 says the element
should do, and that it survives every one of them.

How each message is delivered (and the only bytes ever changed)
---------------------------------------------------------------
* Transport: the one the message's top Via names: UDP for ``SIP/2.0/UDP``,
  TCP for ``SIP/2.0/TCP``. ``bext01`` names TLS; we have no TLS listener
  and its point (420 for an unknown Require) does not depend on it, so it
  goes over TCP. Messages without a Via (``test.dat``) go over UDP. The
  largest message (``longreq``, 3515 bytes) names TCP anyway; everything
  would fit pjsip's PJSIP_MAX_PKT_LEN over UDP too.
* UDP requests: the top Via's *sent-by* (host[:port], nothing else) is
  replaced by ``127.0.0.1:<our socket's port>``. RFC 3261 §18.2.2: without
  ``rport`` a UAS answers a UDP request at the ``received`` address (the
  source IP) and the sent-by port (5060 if none): 192.0.2.x:5060 would be
  unreachable and 127.0.0.1:5060 is not our socket. Only header bytes
  change, so the body and the Content-Length keep exactly the (in)consistency
  the RFC wrote (clerr's 9999, ncl's -999, mcl01's two values, inv2543's
  none), and broken Via parameters (badinv01's ``;;,;,,``) stay broken.
* TCP requests and all responses: sent byte for byte. Over TCP the UAS
  answers on the connection (§18.2.2); a response is never answered.
* Non-2xx finals to INVITEs are ACKed (RFC 3261 §17.1.1.3) so the gateway's
  server transactions stop retransmitting.

Transaction spacing (a test artifact, not a change to the messages)
-------------------------------------------------------------------
Many torture messages share ``branch=z9hG4bKkdjuw``. RFC 3261 §17.2.3
matches a request to a server transaction by branch *and* sent-by *and*
method, so they are independent requests. pjsip keys server transactions
by the CSeq method and the branch only (sip_transaction.c
mod_tsx_layer_on_rx_request, create_tsx_key_3261), so while an earlier
INVITE's transaction holds the branch, a new INVITE with it is answered
"400, Warning: Retransmission with different CSeq", and a request whose
CSeq method is INVITE (mismatch01's OPTIONS, mismatch02's NEWMETHOD) is
silently absorbed by that transaction. An INVITE server transaction over
UDP lives T4 = 5 s after the ACK (Timer I), so ``TransactionSpacer`` waits
that long before re-using such a key. MESSAGE (pjsua_im) and SUBSCRIBE
(pjsua_pres) answered over UDP are assumed to hold their key for Timer J
(32 s). Every other request leaves no transaction: csrc/sipcore.c answers
requests outside a dialog statelessly (answer_out_of_dialog), and those
pjsip's parser refuses from their raw lines (on_dropped). A response with that
pjsip warning, or answering another Call-ID, fails the test as an artifact
rather than passing as a "400".

Expectations
------------
``Case.accept`` is the set of reactions RFC 4475 asks for or explicitly
allows (its "could be liberal" alternatives included, and, for the 3.1.2
invalid messages, "dropped": pjsip cannot answer a message its parser
refuses, which the corpus README accepts). A reaction is the final status,
or DROP when nothing at all came back. Where the gateway does something
else today, the case carries ``mismatch`` (the diagnosis) and is an
``xfail(strict=True, raises=RfcMismatch)``: only the RFC comparison may
fail; a crash, a dead process or a test artifact still fails outright, and
a fix turns the xfail into an XPASS failure that says to drop the mark.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.gateway_proc import GatewayProcess
from tests.integration.raw_sip import (
    SipResponse,
    SipSocket,
    ack_for,
    cseq_method,
    final_response,
    request_line,
    rewrite_top_via_sent_by,
    top_via_transport,
)

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "data" / "rfc4475"

DROP = "no response"  # the reaction "nothing came back"
NO_FINAL = "provisional only"  # an INVITE left without a final answer
ORGANIZER_MISSING = 'SIP;cause=403;text="organizer_missing"'

T4_S = 5.0  # pjsip PJSIP_T4_TIMEOUT: INVITE server tsx lifetime after ACK over UDP (Timer I)
TIMER_J_S = 32.0  # 64 * T1: non-INVITE server tsx lifetime over UDP
# Requests pjsua answers through a server transaction (pjsua_call, pjsua_im, pjsua_pres).
STATEFUL_METHODS = frozenset({"INVITE", "MESSAGE", "SUBSCRIBE"})
WAIT_NO_ANSWER_S = 1.0
SETTLE_S = 0.25


class RfcMismatch(AssertionError):
    """The gateway's reaction is not one RFC 4475 asks for or allows."""


# --- expectations -------------------------------------------------------------------------


def _reason_organizer_missing(final: SipResponse) -> str | None:
    if final.status == 403 and final.header("reason") != ORGANIZER_MISSING:
        return f"403 without Reason {ORGANIZER_MISSING}: {final.header('reason')!r}"
    return None


def _allow_on_405(final: SipResponse) -> str | None:
    if final.status == 405 and not final.header("allow"):
        return "405 without the Allow header RFC 3261 §21.4.6 requires"
    return None


def _unsupported_lists_require(final: SipResponse) -> str | None:
    if final.status != 420:
        return None
    tags = {t.strip() for v in final.headers_all("unsupported") for t in v.split(",")}
    if tags != {"nothingSupportsThis", "nothingSupportsThisEither"}:
        return f"420 must list exactly the Require tags (not the Proxy-Require ones), got {tags}"
    return None


def _accept_sdp_on_415(final: SipResponse) -> str | None:
    if final.status == 415 and "application/sdp" not in (final.header("accept") or ""):
        return "415 without Accept: application/sdp (RFC 3261 §8.2.3)"
    return None


def _missing_contact_400(final: SipResponse) -> str | None:
    if final.status == 400 and "contact" not in ((final.header("warning") or "") + final.reason).lower():
        return (
            f"a 400 to inv2543 is only right for its missing Contact, got {final.reason!r} {final.header('warning')!r}"
        )
    return None


@dataclass(frozen=True)
class Case:
    section: str
    file: str
    accept: frozenset
    rfc: str  # what RFC 4475 (and RFC 3261) say
    liberal_2xx: bool = False  # invalid, but the RFC allows a liberal element to accept it
    checks: tuple[Callable[[SipResponse], str | None], ...] = ()
    mismatch: str | None = None  # diagnosis of today's deviation -> strict xfail

    @property
    def invalid(self) -> bool:
        return self.section.startswith("3.1.2")


def case(section, file, accept, rfc, **kw) -> Case:
    accept = frozenset(accept if isinstance(accept, (set, frozenset, tuple, list)) else {accept})
    return Case(section, file, accept, rfc, **kw)


# Where the answers come from (pjproject 2.17 below csrc/sipcore.c): requests outside a dialog other
# than INVITE (REGISTER, unknown methods: 405 + Allow / 501; CSeq method mismatch and several
# Content-Length: 400; unknown Require tags: 420 + Unsupported; OPTIONS: 200) are answered statelessly
# by answer_out_of_dialog; a request pjsip's parser refuses gets its stateless 400 (405 for a method
# the gateway implements for nobody, 416 for a Request-URI scheme other than sip/sips/tel) from
# on_dropped; INVITEs go to gateway/service.py.

CASES: list[Case] = [
    # 3.1.1 valid messages: the parser must accept them; the answer is the application's.
    case(
        "3.1.1.01",
        "wsinv.dat",
        481,
        "valid INVITE; its To carries a tag, so it is a mid-dialog request for a dialog the gateway "
        "does not have: RFC 3261 §12.2.2 answer 481 (not the policy's 403)",
    ),
    case(
        "3.1.1.02",
        "intmeth.dat",
        501,
        "valid request with an unknown method: RFC 3261 §8.2.1/§21.5.2 answer 501 Not Implemented",
    ),
    case(
        "3.1.1.03",
        "esc01.dat",
        403,
        "valid INVITE: normal processing -> 403 organizer_missing",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.1.04",
        "escnull.dat",
        405,
        "valid REGISTER; a UA that is no registrar rejects it: 405 + Allow (RFC 4475 §3.3.7, RFC 3261 §8.2.1)",
        checks=(_allow_on_405,),
    ),
    case("3.1.1.05", "esc02.dat", 501, "valid request; RE%47IST%45R is an unknown method, not REGISTER: 501"),
    case("3.1.1.06", "lwsdisp.dat", 200, "valid OPTIONS: 200"),
    case(
        "3.1.1.07",
        "longreq.dat",
        403,
        "valid INVITE: normal processing -> 403 organizer_missing",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.1.08",
        "dblreq.dat",
        405,
        "one REGISTER in one datagram, handled normally (405 + Allow here); the trailing INVITE-looking "
        "octets are noise and must be ignored (RFC 3261 §18.3)",
        checks=(_allow_on_405,),
    ),
    case("3.1.1.09", "semiuri.dat", 200, "valid OPTIONS: 200"),
    case("3.1.1.10", "transports.dat", 200, "valid OPTIONS: 200"),
    case(
        "3.1.1.11",
        "mpart01.dat",
        {200, 202, 405, 415, 501},
        "valid MESSAGE with a binary multipart body: parsed and framed correctly; the application may "
        "refuse the method or the body type, but not as malformed",
    ),
    case("3.1.1.12", "unreason.dat", DROP, "valid response matching no transaction: discarded"),
    case("3.1.1.13", "noreason.dat", DROP, "valid response matching no transaction: discarded"),
    # 3.1.2 invalid messages: 400 (or the RFC's status) or dropped; never a crash, never a call.
    case("3.1.2.01", "badinv01.dat", {400, DROP}, "extraneous separators in Via/Contact: 400"),
    case("3.1.2.02", "clerr.dat", {400, DROP}, "Content-Length larger than the UDP datagram's body: 400"),
    case("3.1.2.03", "ncl.dat", {400, DROP}, "negative Content-Length: an error, rest of datagram discarded"),
    case("3.1.2.04", "scalar02.dat", {400, DROP}, "CSeq beyond 2**32-1: 400"),
    case("3.1.2.05", "scalarlg.dat", DROP, "response with overlarge scalars: discarded"),
    case(
        "3.1.2.06",
        "quotbal.dat",
        {400, DROP, 403},
        "unterminated quoted display name: 400, or infer the quote and accept (-> 403 organizer_missing)",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.2.07",
        "ltgtruri.dat",
        {400, DROP, 403},
        "Request-URI in <>: 400, or ignore the brackets (-> 403 organizer_missing)",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.2.08",
        "lwsruri.dat",
        {400, DROP, 481},
        "LWS inside the Request-URI: 400, or ignore it (then its To tag makes it 481)",
    ),
    case(
        "3.1.2.09",
        "lwsstart.dat",
        {400, DROP, 403},
        "several SP between request-line elements: reject, or ignore them (-> 403 organizer_missing)",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.2.10",
        "trws.dat",
        {400, DROP, 200},
        "SP after SIP-Version: reject, or ignore them (OPTIONS -> 200)",
        liberal_2xx=True,
    ),
    case(
        "3.1.2.11",
        "escruri.dat",
        {400, DROP, 403},
        "escaped headers in the Request-URI: 400, or ignore them (-> 403 organizer_missing)",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.2.12",
        "baddate.dat",
        {403, 400},
        "non-GMT Date: an element that does not use Date ignores it (-> 403 organizer_missing); 400 allowed",
        checks=(_reason_organizer_missing,),
    ),
    case(
        "3.1.2.13",
        "regbadct.dat",
        {400, DROP, 405},
        "Contact URI with '?' not in <>: 400, or infer the brackets (REGISTER -> 405)",
        checks=(_allow_on_405,),
    ),
    case(
        "3.1.2.14",
        "badaspec.dat",
        {400, DROP, 200},
        "spaces inside <addr-spec>: 400, or ignore them (OPTIONS -> 200)",
        liberal_2xx=True,
    ),
    case(
        "3.1.2.15",
        "baddn.dat",
        {400, DROP, 200},
        "unquoted display names with separators: 400, or infer the quotes (OPTIONS -> 200)",
        liberal_2xx=True,
    ),
    case(
        "3.1.2.16",
        "badvers.dat",
        {505, DROP},
        "SIP/7.0: 505 Version Not Supported (pjsip's parser refuses it and drops it, the 3.1.2 fallback)",
    ),
    case("3.1.2.17", "mismatch01.dat", {400, DROP}, "OPTIONS with CSeq method INVITE: 400 (answer_out_of_dialog)"),
    case(
        "3.1.2.18",
        "mismatch02.dat",
        {501, 400, DROP},
        "unknown method with a CSeq method mismatch: 501 (400 also acceptable)",
    ),
    case("3.1.2.19", "bigcode.dat", DROP, "response with status 4294967301: discarded"),
    # 3.2 transaction layer
    case(
        "3.2.0.10",
        "badbranch.dat",
        {400, 200},
        "branch is the bare magic cookie: 400 (preferably stateless), or fall back to RFC 2543 "
        "matching and process normally (OPTIONS -> 200)",
    ),
    # 3.3 application layer
    case(
        "3.3.0.10",
        "insuf.dat",
        {400, DROP},
        "no Call-ID, From or To: must not break; ideally 400 (pjsip drops it before any module: PJSIP_EMISSINGHDR)",
    ),
    case(
        "3.3.0.20",
        "unkscm.dat",
        416,
        "unknown Request-URI scheme: 416 Unsupported URI Scheme (pjsip's parser has no URI parser for the "
        "scheme and refuses the whole request; csrc/sipcore.c answers it from the request line)",
    ),
    case(
        "3.3.0.30",
        "novelsc.dat",
        416,
        "soap.beep Request-URI, a scheme the gateway never accepts: 416 (answered from the request line, as unkscm)",
    ),
    case(
        "3.3.0.40",
        "unksm2.dat",
        {405, 400},
        "valid REGISTER with non-SIP URIs in To/From/Contact; a non-registrar rejects it (405; a registrar 400)",
        checks=(_allow_on_405,),
    ),
    case(
        "3.3.0.50",
        "bext01.dat",
        420,
        "unknown option tags in Require: a UAS answers 420 with Unsupported listing the Require tags "
        "(Proxy-Require is a proxy's business; pjsip checks Require for INVITE, answer_out_of_dialog "
        "for the other methods)",
        checks=(_unsupported_lists_require,),
    ),
    case(
        "3.3.0.60",
        "invut.dat",
        415,
        "INVITE with an unknown body type: 415 with Accept: application/sdp",
        checks=(_accept_sdp_on_415,),
    ),
    case(
        "3.3.0.70",
        "regaut01.dat",
        405,
        "REGISTER with an unknown Authorization scheme; an endpoint that is no registrar: 405 (pjsip's "
        "Authorization parser knows only Digest and PGP and refuses the whole request; csrc/sipcore.c answers "
        "a method it implements for nobody with 405 + Allow from the request line, RFC 3261 8.2.1)",
        checks=(_allow_on_405,),
    ),
    case("3.3.0.80", "multi01.dat", 400, "several Call-ID/To/From/CSeq/Max-Forwards values: 400"),
    case(
        "3.3.0.90",
        "mcl01.dat",
        400,
        "conflicting Content-Length values: respond with an error (400; pjsip keeps both headers without "
        "complaint, answer_out_of_dialog rejects more than one)",
    ),
    case("3.3.1.00", "bcast.dat", DROP, "200 OK with a broadcast Via matching no transaction: discarded"),
    case(
        "3.3.1.10",
        "zeromf.dat",
        {200, 483},
        "Max-Forwards 0: an endpoint processes it as if positive (OPTIONS -> 200); 483 is a proxy's answer",
    ),
    case(
        "3.3.1.20",
        "cparam01.dat",
        405,
        "REGISTER for a registrar; a UA that is no registrar: 405",
        checks=(_allow_on_405,),
    ),
    case(
        "3.3.1.30",
        "cparam02.dat",
        405,
        "REGISTER for a registrar; a UA that is no registrar: 405",
        checks=(_allow_on_405,),
    ),
    case(
        "3.3.1.40",
        "regescrt.dat",
        405,
        "REGISTER for a registrar; a UA that is no registrar: 405",
        checks=(_allow_on_405,),
    ),
    case(
        "3.3.1.50",
        "sdp01.dat",
        {406, 400},
        "INVITE whose Accept excludes application/sdp: 406 (Warning 399), or 400 since every UA "
        "supporting INVITE must take SDP",
    ),
    # 3.4 backward compatibility
    case(
        "3.4.0.10",
        "inv2543.dat",
        {403, 400},
        "RFC 2543 INVITE (no branch, no From tag, no Content-Length, no Max-Forwards): accepted by a "
        "backward-compatible element (-> 403 organizer_missing). It also lacks the Contact RFC 3261 "
        "§8.1.1.8 makes mandatory, which pjsip's dialog layer refuses with 400: acceptable, not a crash",
        checks=(_reason_organizer_missing, _missing_contact_400),
    ),
]
# In the corpus directory but not in RFC 4475: no SIP version, no Via.
EXTRA = [case("-", "test.dat", {400, DROP}, "not an RFC 4475 message: malformed request line, no Via")]

# The INVITE hidden after dblreq's REGISTER: must never reach the gateway's call handling.
DBLREQ_HIDDEN_CALL_ID = "dblreq.0ha0isnda977644900765@192.0.2.15"


# The order the messages are sent in: roughly RFC order, except that the
# requests pjsip keys as INVITE with branch z9hG4bKkdjuw (esc01, sdp01,
# escruri, baddate, invut, multi01, which leave a transaction; ncl,
# mismatch01 and mismatch02, whose *CSeq* method is INVITE, which do not)
# are spread so that TransactionSpacer rarely has to sleep (each answered
# INVITE holds the branch for T4 = 5 s after its ACK).
DELIVERY_ORDER = [
    "wsinv",
    "intmeth",
    "ncl",
    "esc01",
    "escnull",
    "esc02",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "noreason",
    "sdp01",
    "badinv01",
    "clerr",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "badbranch",
    "insuf",
    "bigcode",
    "mismatch01",
    "mismatch02",
    "baddate",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "regaut01",
    "mcl01",
    "zeromf",
    "cparam01",
    "cparam02",
    "invut",
    "regescrt",
    "bcast",
    "unreason",
    "lwsdisp",
    "inv2543",
    "test",
    "multi01",
]


def _params():
    out = []
    by_name = {c.file.removesuffix(".dat"): c for c in CASES + EXTRA}
    assert sorted(DELIVERY_ORDER) == sorted(by_name), "DELIVERY_ORDER must name every case once"
    for c in (by_name[name] for name in DELIVERY_ORDER):
        marks = []
        if c.mismatch:
            marks.append(pytest.mark.xfail(strict=True, raises=RfcMismatch, reason=c.mismatch))
        out.append(pytest.param(c, id=f"{c.section}-{c.file.removesuffix('.dat')}", marks=marks))
    return out


# --- delivery ---------------------------------------------------------------------------------


def _branch(raw: bytes) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in re.split(rb"\r?\n(?![ \t])", head)[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v"):
            m = re.search(rb";[ \t\r\n]*branch[ \t\r\n]*=[ \t\r\n]*([^;, \t\r\n]+)", line, re.I)
            return m.group(1).decode("latin-1") if m else None
    return None


def _cseq_method(raw: bytes) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"(?im)^cseq[ \t]*:[ \t]*\d+[ \t]+(\S+)", head)
    return m.group(1) if m else None


def _call_ids(raw: bytes) -> set[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return {m.group(1).strip() for m in re.finditer(r"(?im)^(?:call-id|i)[ \t]*:[ \t]*(.*?)\r?$", head)}


@dataclass
class TransactionSpacer:
    """Waits until pjsip can no longer take a request for a retransmission of
    an earlier, unrelated one with the same branch (see the module doc)."""

    busy_until: dict[tuple[str, str], float] = field(default_factory=dict)

    @staticmethod
    def key(raw: bytes) -> tuple[str, str] | None:
        """pjsip's server transaction key: the *CSeq* method (INVITE and ACK
        alike) and the branch (sip_transaction.c mod_tsx_layer_on_rx_request)."""
        branch = _branch(raw)
        if not branch or not branch.startswith("z9hG4bK"):
            return None  # RFC 2543 keys include Call-ID, CSeq and From tag: never shared here
        method = _cseq_method(raw) or request_line(raw).split(" ", 1)[0]
        return ("INVITE" if method in ("INVITE", "ACK") else method, branch)

    def wait(self, raw: bytes) -> float:
        key = self.key(raw)
        delay = max(0.0, self.busy_until.get(key, 0.0) - time.monotonic()) if key else 0.0
        if delay:
            time.sleep(delay)
        return delay

    def done(self, raw: bytes, transport: str, answered: bool) -> None:
        key = self.key(raw)
        if key is None or not answered or transport != "udp":
            return  # over TCP Timers I and J are 0; an unanswered request made no transaction
        method = request_line(raw).split(" ", 1)[0]
        if method not in STATEFUL_METHODS:
            return  # answered statelessly by csrc/sipcore.c (answer_out_of_dialog)
        life = T4_S if key[0] == "INVITE" else TIMER_J_S
        self.busy_until[key] = time.monotonic() + life + 0.5


@dataclass
class Outcome:
    reaction: int | str
    responses: list[SipResponse]
    sent: bytes
    transport: str

    @property
    def final(self) -> SipResponse | None:
        return final_response(self.responses)


def deliver(gw: GatewayProcess, raw: bytes, spacer: TransactionSpacer) -> Outcome:
    is_response = raw.startswith(b"SIP/")
    via = top_via_transport(raw) or "UDP"
    transport = "udp" if via == "UDP" else "tcp"
    spacer.wait(raw)
    with SipSocket(transport, gw.target) as sock:
        message = raw
        if transport == "udp" and not is_response:
            message = rewrite_top_via_sent_by(raw, "127.0.0.1", sock.local_port)
        responses = sock.exchange(message, timeout_s=WAIT_NO_ANSWER_S, settle_s=SETTLE_S)
        final = final_response(responses)
        if final is not None and final.status >= 300 and cseq_method(final) == "INVITE":
            sock.send(ack_for(message, final))
            responses += sock.receive(SETTLE_S)  # a retransmitted final would show the ACK missed
        spacer.done(raw, transport, final is not None)
    if final is not None:
        reaction: int | str = final.status
    else:
        reaction = NO_FINAL if responses else DROP
    return Outcome(reaction, responses, message, transport)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torture_gw(tmp_path_factory):
    gw = GatewayProcess.create(tmp_path_factory.mktemp("rfc4475") / "gw").start()
    yield gw
    rc = gw.stop()
    assert rc == 0, f"gateway exited with {rc} after the torture run: {gw.err_path.read_text()[-2000:]}"


@pytest.fixture(scope="module")
def spacer():
    return TransactionSpacer()


_FAILURE_EVENTS = {"invite_failed", "callback_failed", "loop_job_failed"}


def _failures(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") in _FAILURE_EVENTS]


# --- tests ------------------------------------------------------------------------------------------


def test_corpus_matches_the_rfc_sections():
    assert CORPUS.is_dir(), f"RFC 4475 corpus not found at {CORPUS}"
    readme = (CORPUS / "README.md").read_text()
    table = dict(re.findall(r"^\| (3\.\d\.\d\.\d\d) \| (\S+\.dat) \|$", readme, flags=re.M))
    assert len(table) == 49
    assert table == {c.section: c.file for c in CASES}
    assert {p.name for p in CORPUS.glob("*.dat")} == {c.file for c in CASES + EXTRA}


@pytest.mark.parametrize("tc", _params())
def test_torture_message(torture_gw, spacer, tc: Case):
    gw = torture_gw
    raw = (CORPUS / tc.file).read_bytes()
    events_before = len(gw.events())
    out = deliver(gw, raw, spacer)

    # Never a crash: the process is up and no handler raised.
    assert gw.proc.poll() is None, f"gateway died on {tc.file}: {gw.err_path.read_text()[-3000:]}"
    new_events = gw.events()[events_before:]
    assert not _failures(new_events), f"{tc.file}: {_failures(new_events)}"

    # Test artifacts, not reactions: a shared branch taken for a retransmission,
    # or an answer that belongs to another request.
    for r in out.responses:
        assert "Retransmission with different CSeq" not in (r.header("warning") or ""), (
            f"{tc.file}: pjsip matched an earlier transaction with the same branch; TransactionSpacer too short"
        )
    sent_ids = _call_ids(raw)
    if sent_ids:
        stray = [r for r in out.responses if r.call_id not in sent_ids]
        assert not stray, f"{tc.file}: answers to another request: {stray}"
    finals = [r for r in out.responses if r.status >= 200]
    assert len({r.status for r in finals}) <= 1, f"{tc.file}: conflicting final answers {finals}"

    if tc.file == "dblreq.dat":
        assert not [e for e in gw.events() if e.get("call_id") == DBLREQ_HIDDEN_CALL_ID], (
            "the INVITE after dblreq's REGISTER (same datagram) was processed; RFC 3261 §18.3 says ignore it"
        )

    # An invalid message never gets a 2xx unless the RFC lets the element be liberal.
    if tc.invalid and not tc.liberal_2xx:
        twoxx = [r for r in finals if 200 <= r.status < 300]
        if twoxx:
            raise RfcMismatch(f"{tc.file} is invalid (RFC 4475 {tc.section}: {tc.rfc}) and got {twoxx}")

    if out.reaction not in tc.accept:
        raise RfcMismatch(
            f"{tc.file} (RFC 4475 {tc.section}): expected {sorted(map(str, tc.accept))} ({tc.rfc}); "
            f"got {out.reaction} {out.responses} over {out.transport}"
        )
    problems = [p for check in tc.checks if out.final is not None and (p := check(out.final))]
    if problems:
        raise RfcMismatch(f"{tc.file} (RFC 4475 {tc.section}): {problems}; responses {out.responses}")


def test_gateway_still_serves_after_the_torture(torture_gw):
    """A clean INVITE (no organiser) still gets the policy's 403, and OPTIONS a 200."""
    gw = torture_gw
    assert gw.proc.poll() is None
    with SipSocket("udp", gw.target) as sock:
        tag, branch, call_id = uuid.uuid4().hex[:8], "z9hG4bK" + uuid.uuid4().hex, f"after-torture-{uuid.uuid4().hex}"
        sdp = (
            "v=0\r\no=bridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 8\r\n"
        )
        invite = (
            f"INVITE sip:+33142685300@{gw.target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sock.local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:bridge@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:+33142685300@{gw.target}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:bridge@127.0.0.1:{sock.local_port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode()
        responses = sock.exchange(invite, timeout_s=3.0)
        final = final_response(responses)
        assert final is not None, f"no final answer to a clean INVITE: {responses}"
        sock.send(ack_for(invite, final))
        assert final.status == 403 and final.header("reason") == ORGANIZER_MISSING, final

        options = (
            f"OPTIONS sip:{gw.target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sock.local_port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:bridge@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:{gw.target}>\r\n"
            f"Call-ID: {call_id}-options\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        assert [r.status for r in sock.exchange(options, timeout_s=3.0) if r.status >= 200] == [200]
    gw.wait_for(
        lambda e: e.get("event") == "call" and e.get("call_id") == call_id and e.get("reason") == "organizer_missing", 5
    )
    assert not _failures(gw.events())
