"""Fuzzing the running gateway: a trunk that answers everything, a bridge that
sends mutated INVITEs one at a time, and the invariants checked afterwards.

Everything runs inside a private network namespace (tests/integration/netns.py):
the gateway, the trunk and the bridge's sockets. A mutated Via ``maddr``,
Contact or Record-Route can name any host; there, only loopback exists.

The run, for each case of tests/fuzzing.py (deterministic per case number):

1. the bridge sends the mutated INVITE (UDP, or TCP for some), with the top
   Via's sent-by pointed at its socket when the Via is still readable;
2. it waits briefly for an answer, then *probes* the gateway with an OPTIONS
   over UDP. The gateway handles SIP on one thread, so the probe's 200 means
   the INVITE went through everything the SIP thread does with it. No answer
   to the probe within PROBE_TIMEOUT_S, or a dead process, is a hang or a
   crash: the input is kept under tests/data/fuzz/crashers/ and the gateway
   is restarted to go on;
3. if the INVITE got a provisional, the bridge waits for the final answer; it
   ACKs a failure, and ACKs then BYEs a 200 (CANCEL if no final comes);
4. new error lines in the gateway's log (anything at level error or above
   but pjsip's own lines) are kept as findings, with the input.

Two more roles of a case (tests.fuzzing.FuzzCase.role) fuzz the rest of a
call; the INVITE is then a clean offer:

* "trunk": the trunk answers it with the case's mutated response (after a
  clean 100). When the gateway does not take it (no ACK within 0.3 s) the
  clean response of its seed follows, and a provisional is followed by a
  clean 200, so that every call still ends; such a trunk leg counts as
  answered once the gateway ACKs a 2xx of it. A body the bridge gets in a
  18x or 2xx must be one the trunk sent, as its Content-Length delimits it,
  and the bridge's 200 must carry a body when the 2xx the gateway took had
  one;
* "dialog": once the call is up, the bridge sends the case's mutated request
  inside it (ACKing a 2xx to a re-INVITE), then BYE (the trunk hangs up if
  the gateway refuses that BYE). A request relayed to the trunk must carry
  the bridge's body as its Content-Length delimits it.

The trunk (:class:`PyTrunk`) answers every new INVITE 180 then 200 with an
SDP, answers BYE, CANCEL, re-INVITE and other in-dialog requests, and records
each leg: when it answered and when it was *released* (a BYE or CANCEL
reached it). The dialled number is unique per case (tests.fuzzing.number_for)
and is the trunk's Request-URI user part and the call line's ``destination``,
which is how a trunk leg is matched to its call.

Invariant "no trunk leg stays answered while its bridge leg is not"
-------------------------------------------------------------------
A trunk leg is *answered* from the trunk's 2xx to its INVITE until it is
*released*. The gateway writes a call's ``call`` line once both of its legs
are over; ``bridge_status`` is the final status the bridge leg got. So:

* every trunk leg matched to a call line was released no later than
  RELEASE_GRACE_S after that line was written; in particular a trunk leg
  answered for a call whose ``bridge_status`` is not 2xx (the bridge leg was
  never answered) was released by then;
* once the gateway has no active call, no trunk leg at all is answered and
  not released (this catches legs of calls that never wrote a line).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sip import SipParseError, parse_request
from tests.fuzzing import SDP, TRUNK_SEEDS, FuzzCase, fill_seed, fill_template, number_for
from tests.integration.gateway_proc import GatewayProcess, example_policy_text
from tests.integration.netns import NetNamespace
from tests.integration.raw_sip import (
    SipResponse,
    SipSocket,
    ack_for,
    final_response,
    parse_response,
    rewrite_top_via_sent_by,
)

REPO = Path(__file__).resolve().parents[2]
CRASHERS = REPO / "tests" / "data" / "fuzz" / "crashers"

PRE_WAIT_S = 0.05  # a quick answer (policy refusals, 4xx at the edge) comes within this
PROBE_TIMEOUT_S = 3.0  # the SIP thread answers OPTIONS in a millisecond; 3 s of silence is a hang
FINAL_WAIT_S = 6.0  # after a provisional: the trunk answers at once (answer_timeout_s is 4)
RELEASE_GRACE_S = 2.0
T1_MS = 100  # Timer H (no ACK for a 2xx) = 64*T1 = 6.4 s, so abandoned calls end soon
FAILURE_EVENTS = frozenset(
    {
        "engine_event_failed",
        "call_failed",
        "call_abort_step_failed",
        "call_abort_failed",
        "loop_job_failed",
        "unhandled_exception",
        "invite_failed",
        "callback_failed",
    }
)


def fuzz_policy_text() -> str:
    """The example directory with guards and pool wide enough for thousands of
    sequential calls: the fuzzer tests the SIP edge, not the fraud guards."""
    text = example_policy_text()
    for old, new in [
        ("max_calls_per_minute_per_organizer = 20", "max_calls_per_minute_per_organizer = 1000000"),
        ("max_distinct_destinations_per_day = 200", "max_distinct_destinations_per_day = 1000000"),
        ("max_concurrent_per_organizer = 10", "max_concurrent_per_organizer = 1000"),
        ("subscription_licences = 25 ", "subscription_licences = 100000 "),
    ]:
        assert old in text, f"examples/gateway.toml changed: {old!r} not found"
        text = text.replace(old, new)
    return text


# --- the gateway, inside the namespace ------------------------------------------------------------


class NetnsGateway(GatewayProcess):
    """GatewayProcess started, and its metrics read, inside `ns`."""

    ns: NetNamespace

    @classmethod
    def create_in(cls, ns: NetNamespace, workdir: Path, **kwargs) -> NetnsGateway:
        kwargs.setdefault("policy_text", fuzz_policy_text())
        kwargs.setdefault("t1_ms", T1_MS)
        gw = cls.create(workdir, **kwargs)
        gw.ns = ns
        return gw

    def start(self, timeout_s: float = 20) -> NetnsGateway:
        self.ns.call(super().start, timeout_s)
        return self

    def metric(self, name: str) -> float | None:
        return self.ns.call(super().metric, name)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.start()


# --- the trunk ----------------------------------------------------------------------------------


_COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
}


def _parse_sip(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return lines[0], headers, body


def _get(headers, name):
    return next((v for k, v in headers if k == name), None)


def _tag(value: str | None) -> str | None:
    if not value:
        return None
    for part in value.split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "tag":
            return v.strip()
    return None


def _branch(via: str | None) -> str:
    for part in (via or "").split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "branch":
            return v.strip()
    return ""


def status_class(data: bytes) -> int | None:
    """The class (1-6) of a response as its status line reads, None when it does not read as one."""
    m = re.match(rb"SIP/2\.0 +([1-6])\d\d[ \t\r\n]", data.lstrip(b"\r\n"))
    return int(m.group(1)) if m else None


def delimited_body(data: bytes) -> bytes:
    """A datagram's body as its Content-Length delimits it (RFC 3261 18.3);
    the rest of the datagram when that length is missing or too large."""
    data = data.lstrip(b"\r\n")
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = data[:crlf], data[crlf + 4 :]
    elif lf >= 0:
        head, body = data[:lf], data[lf + 2 :]
    else:
        return b""
    for line in head.split(b"\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            if value.isdigit() and int(value) <= len(body):
                return body[: int(value)]
            break
    return body


def _has_content_type(data: bytes) -> bool:
    head = re.split(rb"\r?\n\r?\n", data.lstrip(b"\r\n"), maxsplit=1)[0]
    return any(line.split(b":", 1)[0].strip().lower() in (b"content-type", b"c") for line in head.split(b"\n")[1:])


@dataclass
class TrunkLeg:
    call_id: str
    number: str
    invite_at: float  # wall clock (time.time())
    to_tag: str
    answered_at: float | None = None
    acked_at: float | None = None
    released_at: float | None = None
    released_by: str | None = None
    last_response: bytes = b""
    body: bytes = b""
    # Scripted answers (fuzzed trunk responses): what was sent, and the 2xx
    # the gateway ACKed (a scripted leg is answered once a 2xx of it is ACKed).
    scripted: bool = False
    branch: str = ""
    sent: list[bytes] = field(default_factory=list)
    last_2xx: bytes | None = None
    acked_2xx: bytes | None = None
    # Requests received inside the dialog: (method, body, wall clock).
    requests: list[tuple[str, bytes, float]] = field(default_factory=list)
    # For a BYE from the trunk's side: where the gateway is, and its INVITE's headers.
    addr: tuple | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def answered_unreleased(self) -> bool:
        return self.answered_at is not None and self.released_at is None


class PyTrunk:
    """A UDP trunk that answers every call (and records what happened to it)."""

    ANSWER_SDP = SDP.replace("bridge {sess}", "trunk 1").replace("7000", "9000").encode()

    def __init__(self, ns: NetNamespace, port: int):
        self.port = port
        self.sock: socket.socket = ns.call(self._bind, port)
        self.legs: dict[str, TrunkLeg] = {}
        self.scripts: dict[str, tuple[bytes, bytes]] = {}  # number -> (mutated, clean) response templates
        self.requests = 0
        self.lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="py-trunk", daemon=True)
        self._thread.start()

    @staticmethod
    def _bind(port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        return s

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()

    def arm(self, number: str, template: bytes, clean: bytes) -> None:
        """Answer the next INVITE to `number` with the response `template`
        (a tests.fuzzing trunk template, mutated or not) instead of 180/200.
        `clean` is the unmutated template: when the gateway does not take the
        scripted answer (no ACK within a moment), the clean one follows, and
        a provisional is always followed by a clean 200."""
        with self.lock:
            self.scripts[number] = (template, clean)

    def bye(self, number: str) -> bool:
        """The trunk hangs up its answered leg to `number` (when the bridge
        could not end the call itself)."""
        with self.lock:
            legs = [leg for leg in self.legs.values() if leg.number == number and leg.addr and leg.headers]
            if not legs:
                return False
            leg = legs[-1]
            contact = _get(leg.headers, "contact") or ""
            uri = contact.split("<", 1)[1].split(">", 1)[0] if "<" in contact else f"sip:{leg.addr[0]}:{leg.addr[1]}"
            lines = [
                f"BYE {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
                "Max-Forwards: 70",
                f"From: {_get(leg.headers, 'to')};tag={leg.to_tag}",
                f"To: {_get(leg.headers, 'from')}",
                f"Call-ID: {leg.call_id}",
                "CSeq: 1 BYE",
                "Content-Length: 0",
            ]
            self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), leg.addr)
            if leg.released_at is None:
                leg.released_at, leg.released_by = time.time(), "trunk_bye"
            return True

    def _scripted(self, leg: TrunkLeg, addr, start: str, headers, template: bytes, clean: bytes) -> None:
        """Answer with `template` (see `arm`); the lock is held."""
        values = {
            "via": _get(headers, "via") or "",
            "from": _get(headers, "from") or "",
            "to": _get(headers, "to") or "",
            "call-id": _get(headers, "call-id") or "",
            "cseq": _get(headers, "cseq") or "",
            "to-tag": leg.to_tag,
            "port": str(self.port),
        }
        leg.scripted = True
        self._respond(addr, start, headers, to_tag=None, status=100, reason="Trying")
        data = fill_template(template, values)
        self._send_scripted(leg, addr, data)
        if status_class(clean) == 1:
            # A provisional: the call is then answered (a clean 200 with SDP),
            # unless the mutation made it a final the gateway took (ACKed).
            follow = fill_template(TRUNK_SEEDS["answer"].encode(), values)
            provisional = status_class(data) in (1, None)
            self._later(0.05 if provisional else 0.3, leg, addr, follow, always=provisional)
        else:
            self._later(0.3, leg, addr, fill_template(clean, values), always=False)

    def _send_scripted(self, leg: TrunkLeg, addr, data: bytes) -> None:
        leg.sent.append(data)
        if status_class(data) == 2:
            leg.last_2xx = data
        leg.last_response = data
        try:
            self.sock.sendto(data[:65000], addr)
        except OSError:
            pass

    def _later(self, delay: float, leg: TrunkLeg, addr, data: bytes, *, always: bool) -> None:
        def send() -> None:
            with self.lock:
                if self._stop:
                    return
                if not always and (leg.acked_at is not None or leg.released_at is not None):
                    return  # the gateway took the scripted answer
                self._send_scripted(leg, addr, data)

        timer = threading.Timer(delay, send)
        timer.daemon = True
        timer.start()

    def _loop(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            try:
                self._handle(data, addr)
            except Exception as exc:  # a trunk bug must not pass as a gateway bug silently
                print(f"py-trunk: cannot handle {data[:200]!r}: {exc!r}")

    def _respond(
        self,
        addr,
        start: str,
        headers,
        *,
        to_tag: str | None,
        status: int,
        reason: str,
        body: bytes = b"",
        extra: tuple[str, ...] = (),
    ) -> bytes:
        out = [f"SIP/2.0 {status} {reason}"]
        for name, value in headers:
            if name == "via":
                out.append(f"Via: {value}")
        out.append(f"From: {_get(headers, 'from')}")
        to = _get(headers, "to") or ""
        if to_tag and not _tag(to):
            to = f"{to};tag={to_tag}"
        out.append(f"To: {to}")
        out.append(f"Call-ID: {_get(headers, 'call-id')}")
        out.append(f"CSeq: {_get(headers, 'cseq')}")
        out.extend(extra)
        if body:
            out.append("Content-Type: application/sdp")
        out.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(out) + "\r\n\r\n").encode() + body
        self.sock.sendto(data, addr)
        return data

    def _handle(self, data: bytes, addr) -> None:
        if data.startswith(b"SIP/2.0"):
            return  # a response: the trunk sends no requests
        start, headers, body = _parse_sip(data)
        method = start.split(" ", 1)[0]
        call_id = _get(headers, "call-id") or ""
        to_tag = _tag(_get(headers, "to"))
        now = time.time()
        contact = f"Contact: <sip:trunk@127.0.0.1:{self.port}>"
        with self.lock:
            self.requests += 1
            leg = self.legs.get(call_id)
            if method == "INVITE" and not to_tag:
                if leg is not None:  # a retransmission
                    if leg.last_response:
                        self.sock.sendto(leg.last_response, addr)
                    return
                uri = start.split(" ")[1] if " " in start else ""
                number = uri.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
                leg = TrunkLeg(call_id, number, now, uuid.uuid4().hex[:10], body=body, addr=addr, headers=headers)
                leg.branch = _branch(_get(headers, "via"))
                self.legs[call_id] = leg
                script = self.scripts.pop(number, None)
                if script is not None:
                    self._scripted(leg, addr, start, headers, *script)
                    return
                self._respond(addr, start, headers, to_tag=None, status=100, reason="Trying")
                self._respond(addr, start, headers, to_tag=leg.to_tag, status=180, reason="Ringing", extra=(contact,))
                leg.answered_at = time.time()
                leg.last_response = self._respond(
                    addr,
                    start,
                    headers,
                    to_tag=leg.to_tag,
                    status=200,
                    reason="OK",
                    body=self.ANSWER_SDP,
                    extra=(contact,),
                )
            elif method == "ACK":
                if leg is not None and leg.acked_at is None:
                    leg.acked_at = now
                if leg is not None and leg.scripted and _branch(_get(headers, "via")) != leg.branch:
                    # The ACK of a 2xx (a new transaction): the gateway took the call.
                    if leg.answered_at is None:
                        leg.answered_at = now
                    if leg.acked_2xx is None:
                        leg.acked_2xx = leg.last_2xx
            elif method == "BYE":
                self._respond(
                    addr,
                    start,
                    headers,
                    to_tag=None,
                    status=200 if leg else 481,
                    reason="OK" if leg else "Call/Transaction Does Not Exist",
                )
                if leg is not None and leg.released_at is None:
                    leg.released_at, leg.released_by = now, "bye"
            elif method == "CANCEL":
                self._respond(addr, start, headers, to_tag=None, status=200 if leg else 481, reason="OK")
                if leg is not None and leg.answered_at is None and leg.released_at is None:
                    leg.released_at, leg.released_by = now, "cancel"
            elif leg is None:
                self._respond(addr, start, headers, to_tag=None, status=481, reason="Call/Transaction Does Not Exist")
            elif method == "INVITE":  # re-INVITE
                leg.requests.append((method, body, now))
                self._respond(
                    addr, start, headers, to_tag=None, status=200, reason="OK", body=self.ANSWER_SDP, extra=(contact,)
                )
            else:  # UPDATE, INFO, OPTIONS, PRACK... in the dialog
                leg.requests.append((method, body, now))
                self._respond(addr, start, headers, to_tag=None, status=200, reason="OK")

    def snapshot(self) -> list[TrunkLeg]:
        with self.lock:
            return list(self.legs.values())


# --- the bridge -----------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: int
    transport: str
    statuses: list[int]
    final: int | None
    started: float
    ended: float
    outcome: str  # "answered", "refused", "provisional", "silent", "crash", "hang"
    findings: list[dict] = field(default_factory=list)
    mutators: tuple[str, ...] = ()


def _request(
    method: str,
    uri: str,
    *,
    port: int,
    call_id: str,
    from_tag: str,
    to: str,
    cseq: int,
    branch: str | None = None,
    transport: str = "UDP",
    body: bytes = b"",
) -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch or 'z9hG4bK' + uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:bridge@127.0.0.1:{port}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:bridge@127.0.0.1:{port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _ack_2xx(invite: bytes, final: SipResponse, port: int, transport: str) -> bytes:
    """The ACK for a 2xx: a new transaction in the dialog the 2xx made."""
    uri = _contact_uri(final) or invite.split(b" ", 2)[1].decode("utf-8", "replace")
    cseq = (final.header("cseq") or "1").split()[0]
    lines = [
        f"ACK {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: {final.header('from')}",
        f"To: {final.header('to')}",
        f"Call-ID: {final.call_id}",
        f"CSeq: {cseq} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _contact_uri(resp: SipResponse) -> str | None:
    contact = resp.header("contact")
    if not contact or "<" not in contact:
        return None
    return contact.split("<", 1)[1].split(">", 1)[0]


def _bye_after_2xx(final: SipResponse, port: int, transport: str, cseq: int | None = None) -> bytes:
    uri = _contact_uri(final) or "sip:gw@127.0.0.1"
    invite_cseq = (final.header("cseq") or "1").split()[0]
    if cseq is not None:
        number = cseq
    else:
        number = int(invite_cseq) + 1 if invite_cseq.isdigit() and int(invite_cseq) < 2**31 - 2 else 2
    lines = [
        f"BYE {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: {final.header('from')}",
        f"To: {final.header('to')}",
        f"Call-ID: {final.call_id}",
        f"CSeq: {number} BYE",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _cancel_for(invite: bytes, first: SipResponse) -> bytes:
    """CANCEL matching the INVITE's transaction (its Via, From, To without tag, Call-ID, CSeq number)."""
    line = invite.split(b"\r\n", 1)[0].decode("utf-8", "replace").split(" ")
    uri = line[1] if len(line) > 1 else "sip:x@127.0.0.1"
    via = (first.header("via") or "").split(",", 1)[0]
    to = first.header("to") or ""
    if ";tag=" in to:
        to = to.split(";tag=", 1)[0]
    cseq = (first.header("cseq") or "1").split()[0]
    lines = [
        f"CANCEL {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {first.header('from')}",
        f"To: {to}",
        f"Call-ID: {first.call_id}",
        f"CSeq: {cseq} CANCEL",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _next_cseq(request: bytes) -> int:
    """A CSeq number above the one `request` carries (for the BYE after it)."""
    m = re.search(rb"(?im)^(?:cseq)[ \t]*:[ \t]*(\d{1,10})", request)
    number = int(m.group(1)) if m else 2
    return min(max(number, 2) + 1, 2**31 - 1)


def _seed_for_class(kind: int | None) -> str:
    """The clean trunk answer of a kept response's kind (when its seed is not known)."""
    return {1: "ringing", 3: "redirect", 4: "busy", 5: "unavailable", 6: "busy"}.get(kind or 2, "answer")


def point_via_at(data: bytes, port: int) -> bytes:
    """The top Via's sent-by pointed at our UDP socket, so that answers reach
    it (leading CRLFs, which pjsip skips, are kept and skipped here too)."""
    body = data.lstrip(b"\r\n")
    return data[: len(data) - len(body)] + rewrite_top_via_sent_by(body, "127.0.0.1", port)


class Fuzzer:
    """Drives one gateway (restarting it after a crash or hang) with fuzz cases."""

    def __init__(
        self,
        ns: NetNamespace,
        gw: NetnsGateway,
        trunk: PyTrunk,
        *,
        crashers: Path = CRASHERS,
        keep_crashers: bool = True,
    ):
        self.ns = ns
        self.gw = gw
        self.trunk = trunk
        self.crashers = crashers
        self.keep_crashers = keep_crashers
        self.results: list[CaseResult] = []
        self.crashes: list[tuple[FuzzCase | bytes, str, Path | None]] = []
        self.findings: list[dict] = []
        self.probe_sock: SipSocket = ns.call(SipSocket, "udp", gw.target)
        self._log_offset = 0
        self._seen_err = 0

    def close(self) -> None:
        self.probe_sock.close()

    # -- probing ----------------------------------------------------------------------------------

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """An OPTIONS round trip: True when the SIP thread answered it."""
        sock = self.probe_sock
        call_id = f"probe-{uuid.uuid4().hex}"
        msg = _request(
            "OPTIONS",
            f"sip:{self.gw.target}",
            port=sock.local_port,
            call_id=call_id,
            from_tag="probe",
            to=f"<sip:{self.gw.target}>",
            cseq=1,
        )
        deadline = time.monotonic() + timeout_s
        interval = 0.25
        while time.monotonic() < deadline:
            sock.send(msg)
            got = sock.receive(min(interval, max(0.0, deadline - time.monotonic())))
            if any(r.call_id == call_id and r.status >= 200 for r in got):
                return True
            interval = min(interval * 2, 1.0)
        return False

    # -- one case ------------------------------------------------------------------------------------

    def run_case(self, fc: FuzzCase) -> CaseResult:
        started = time.time()
        data, transport = fc.data, fc.transport
        if fc.role != "invite":
            # A clean INVITE (an offer); the fuzzed part is the trunk's answer or a request in the call.
            transport = fc.transport if fc.role == "dialog" else "udp"
            salt = f"{fc.role[:2]}{uuid.uuid4().hex[:6]}"
            data = fill_seed("offer", fc.case, transport=transport.upper(), salt=salt)
            if fc.role == "trunk":
                clean = TRUNK_SEEDS.get(fc.seed_name) or TRUNK_SEEDS[_seed_for_class(status_class(fc.data))]
                self.trunk.arm(number_for(fc.case), fc.data, clean.encode())
        in_dialog: tuple[bytes, float, list[SipResponse]] | None = None
        try:
            sock = self.ns.call(SipSocket, transport, self.gw.target)
        except OSError as exc:  # TCP refused: the listener is gone
            return self._after(fc, started, [], "silent", extra=f"connect failed: {exc}")
        with sock:
            if transport == "udp":
                data = point_via_at(data, sock.local_port)[:65000]
            try:
                sock.send(data)
            except OSError:
                pass
            got = sock._collect(PRE_WAIT_S, lambda g: final_response(g) is not None)
            if final_response(got) is None:
                if not self.probe():
                    return self._crash_or_hang(fc, started, got)
                got += sock.receive(0.02)
                if got and final_response(got) is None:
                    got += sock._collect(FINAL_WAIT_S, lambda g: final_response(g) is not None)
            final = final_response(got)
            outcome = "silent" if not got else "provisional"
            tp = "TCP" if transport == "tcp" else "UDP"
            try:
                if final is None and got:
                    sock.send(_cancel_for(data, got[0]))
                    got += sock._collect(2.0, lambda g: final_response(g) is not None)
                    final = final_response(got)
                if final is not None and (final.header("cseq") or "").endswith("INVITE"):
                    if 200 <= final.status < 300:
                        outcome = "answered"
                        sock.send(_ack_2xx(data, final, sock.local_port, tp))
                        bye_cseq = None
                        if fc.role == "dialog":
                            in_dialog = self._in_dialog(fc, sock, final, tp)
                            if in_dialog is None:
                                return self._crash_or_hang(fc, started, got)
                            bye_cseq = _next_cseq(in_dialog[0])
                        bye = _bye_after_2xx(final, sock.local_port, tp, cseq=bye_cseq)
                        ended = False
                        for wait in (0.25, 0.5, 1.0):
                            sock.send(bye)
                            answers = [r for r in sock.receive(wait) if (r.header("cseq") or "").endswith("BYE")]
                            if any(r.status >= 200 for r in answers):
                                ended = any(r.status < 300 or r.status == 481 for r in answers)
                                break
                        if not ended and fc.role == "dialog":
                            # The fuzzed request left the bridge unable to end the call
                            # (a CSeq it cannot go beyond): the trunk hangs up instead.
                            self.trunk.bye(number_for(fc.case))
                    elif final.status >= 300:
                        outcome = "refused"
                        sock.send(ack_for(data, final))
                elif final is not None:
                    outcome = "refused"
            except OSError:
                pass
        if in_dialog is not None:
            # The case's answer is the one to the request in the call.
            got = in_dialog[2]
        result = self._after(fc, started, got, outcome)
        if fc.role == "invite":
            self._check_relayed_body(fc, data, started, result)
        elif fc.role == "trunk":
            self._check_trunk_answer(fc, got if in_dialog is None else [], started, result)
        elif in_dialog is not None:
            self._check_in_dialog_body(fc, in_dialog, started, result)
        return result

    def _in_dialog(
        self, fc: FuzzCase, sock: SipSocket, invite_final: SipResponse, tp: str
    ) -> tuple[bytes, float, list[SipResponse]] | None:
        """Send the case's request inside the call `invite_final` set up:
        (what was sent, when, the answers), or None if the gateway hung."""
        values = {
            "uri": _contact_uri(invite_final) or "sip:gw@127.0.0.1",
            "from": invite_final.header("from") or "",
            "to": invite_final.header("to") or "",
            "call-id": invite_final.call_id or "",
            "cseq": "2",
        }
        data = fill_template(fc.data, values)
        if tp == "UDP":
            data = point_via_at(data, sock.local_port)[:65000]
        sent_at = time.time()
        invite_cseq = invite_final.header("cseq")

        def answers(got: list[SipResponse]) -> list[SipResponse]:
            return [r for r in got if r.header("cseq") != invite_cseq]

        try:
            sock.send(data)
        except OSError:
            pass
        got = answers(sock._collect(PRE_WAIT_S, lambda g: final_response(answers(g)) is not None))
        if final_response(got) is None:
            if not self.probe():
                return None
            got += answers(sock._collect(3.0, lambda g: final_response(answers(g)) is not None))
        final = final_response(got)
        if final is not None and 200 <= final.status < 300 and (final.header("cseq") or "").endswith("INVITE"):
            sock.send(_ack_2xx(data, final, sock.local_port, tp))
        return data, sent_at, got

    def _check_in_dialog_body(
        self, fc: FuzzCase, in_dialog: tuple[bytes, float, list[SipResponse]], started: float, result: CaseResult
    ) -> None:
        """A request relayed inside the call reaches the trunk with the
        bridge's body byte for byte, as its Content-Length delimits it."""
        sent, sent_at, got = in_dialog
        final = final_response(got)
        if final is None or not 200 <= final.status < 300:
            return
        legs = [leg for leg in self.trunk.snapshot() if started <= leg.invite_at <= result.ended]
        if len(legs) != 1:
            return
        relayed = [(m, b) for m, b, at in legs[0].requests if at >= sent_at and m not in ("ACK", "BYE", "CANCEL")]
        if len(relayed) != 1:
            return
        try:
            expected: bytes | None = parse_request(sent).body.encode("utf-8", "surrogateescape")
        except SipParseError:
            return
        if expected is not None and not expected.strip():
            expected = b""
        if relayed[0][1] != expected:
            self._finding(
                fc,
                result,
                {"event": "relayed_body_differs", "sent": expected[:300], "trunk_got": relayed[0][1][:300]},
                "the body relayed to the trunk differs",
            )

    def _check_trunk_answer(self, fc: FuzzCase, got: list[SipResponse], started: float, result: CaseResult) -> None:
        """The trunk's bodies are relayed opaquely too: a body the bridge gets
        in an answer to its INVITE is one the trunk sent, as its Content-Length
        delimits it; and the 200 carries an answer when the 2xx the gateway
        took (ACKed) had one."""
        legs = [leg for leg in self.trunk.snapshot() if started <= leg.invite_at <= result.ended]
        if len(legs) != 1:
            return
        leg = legs[0]
        sent = {delimited_body(m) for m in leg.sent}
        for r in got:
            if 180 <= r.status < 300 and (r.header("cseq") or "").endswith("INVITE") and r.body and r.body not in sent:
                self._finding(
                    fc,
                    result,
                    {
                        "event": "relayed_body_differs",
                        "status": r.status,
                        "trunk_sent": sorted(sent)[:3],
                        "bridge_got": r.body[:300],
                    },
                    "the body relayed to the bridge differs",
                )
                return
        final = final_response(got)
        took = leg.acked_2xx
        if (
            final is not None
            and 200 <= final.status < 300
            and not final.body
            and took is not None
            and delimited_body(took).strip()
            and _has_content_type(took)
        ):
            self._finding(
                fc,
                result,
                {"event": "answer_dropped", "trunk_sent": delimited_body(took)[:300]},
                "the trunk's 2xx had a body, the bridge's 200 none",
            )

    def _finding(self, fc: FuzzCase, result: CaseResult, event: dict, why: str) -> None:
        finding = {
            "case": fc.case,
            "mutators": list(fc.mutators),
            "seed": fc.seed_name,
            "role": fc.role,
            "event": event,
        }
        finding["file"] = str(self.keep(fc.data, fc.transport, why, fc)) if self.keep_crashers else None
        result.findings.append(finding)
        self.findings.append(finding)

    def _check_relayed_body(self, fc: FuzzCase, sent: bytes, started: float, result: CaseResult) -> None:
        """The body is relayed opaquely: the trunk's INVITE carries the bridge's
        body byte for byte, as its Content-Length delimits it."""
        legs = [leg for leg in self.trunk.snapshot() if started <= leg.invite_at <= result.ended]
        if len(legs) != 1 or result.outcome != "answered":
            return
        try:
            expected = parse_request(sent).body.encode("utf-8", "surrogateescape")
        except SipParseError:
            expected = None
        if expected is not None and not expected.strip():
            expected = b""  # a blank body is no offer: relayed as none
        if legs[0].body != expected:
            finding = {
                "case": fc.case,
                "mutators": list(fc.mutators),
                "seed": fc.seed_name,
                "event": {
                    "event": "relayed_body_differs",
                    "sent": expected[:300] if expected else expected,
                    "trunk_got": legs[0].body[:300],
                },
            }
            finding["file"] = (
                str(self.keep(fc.data, fc.transport, "the relayed body differs", fc)) if self.keep_crashers else None
            )
            result.findings.append(finding)
            self.findings.append(finding)

    def _after(self, fc: FuzzCase, started: float, got: list[SipResponse], outcome: str, extra: str = "") -> CaseResult:
        final = final_response(got)
        result = CaseResult(
            fc.case,
            fc.transport,
            [r.status for r in got],
            final.status if final else None,
            started,
            time.time(),
            outcome,
            mutators=fc.mutators,
        )
        if not self.gw.alive():
            return self._crash_or_hang(fc, started, got)
        for event in self._new_failures():
            finding = {
                "case": fc.case,
                "mutators": list(fc.mutators),
                "seed": fc.seed_name,
                "role": fc.role,
                "event": event,
            }
            path = (
                self.keep(fc.data, fc.transport, f"error line {event.get('event')}", fc) if self.keep_crashers else None
            )
            finding["file"] = str(path) if path else None
            result.findings.append(finding)
            self.findings.append(finding)
        self.results.append(result)
        return result

    def _new_log_events(self) -> list[dict]:
        """The gateway's log lines written since the last call (read incrementally)."""
        path = self.gw.log_path
        if not path.exists():
            return []
        with path.open("rb") as f:
            f.seek(self._log_offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._log_offset += end
        out = []
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "non_json_stdout", "level": "error", "text": line[:500].decode("utf-8", "replace")}
            if isinstance(event, dict):
                out.append(event)
        return out

    def _new_failures(self) -> list[dict]:
        out = []
        for event in self._new_log_events():
            if event.get("event") == "pjsip":
                continue
            if event.get("event") in FAILURE_EVENTS or event.get("level") in ("error", "critical"):
                out.append(event)
        err = self.gw.err_path.read_bytes() if self.gw.err_path.exists() else b""
        if len(err) > self._seen_err:
            new = err[self._seen_err :].decode("utf-8", "replace")
            self._seen_err = len(err)
            if any(word in new for word in ("Traceback", "Exception ignored", "Fatal", "Segmentation", "Assertion")):
                out.append({"event": "stderr", "text": new[-2000:]})
        return out

    def _crash_or_hang(self, fc: FuzzCase, started: float, got) -> CaseResult:
        if self.gw.alive():
            time.sleep(5)  # a slow moment, or a hang?
            if self.probe(5.0):
                result = CaseResult(fc.case, fc.transport, [r.status for r in got], None, started, time.time(), "slow")
                self.results.append(result)
                return result
            what = "hang"
        else:
            what = f"crash (exit {self.gw.proc.returncode})"
        path = self.keep(fc.data, fc.transport, what, fc) if self.keep_crashers else None
        self.crashes.append((fc, what, path))
        result = CaseResult(
            fc.case,
            fc.transport,
            [r.status for r in got],
            None,
            started,
            time.time(),
            "hang" if what == "hang" else "crash",
        )
        self.results.append(result)
        self.gw.restart()
        self._new_log_events()
        self.probe_sock.close()
        self.probe_sock = self.ns.call(SipSocket, "udp", self.gw.target)
        return result

    def keep(self, data: bytes, transport: str, why: str, fc: FuzzCase | None = None) -> Path:
        """Write an input under tests/data/fuzz/crashers/ (named by content and
        role, see its README), with a note."""
        self.crashers.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()[:16]
        role = fc.role if fc is not None else "invite"
        name = {"invite": f"{digest}.{transport}", "trunk": f"{digest}.trunk", "dialog": f"{digest}.dialog.{transport}"}
        path = self.crashers / f"{name.get(role, name['invite'])}.sip"
        if not path.exists():
            path.write_bytes(data)
            note = f"{why}\n"
            if fc is not None and fc.mutators:
                note += f"(case {fc.case}, role {role}: seed {fc.seed_name}, mutators {', '.join(fc.mutators)})\n"
            path.with_suffix(".txt").write_text(note)
        return path

    # -- a normal call afterwards ------------------------------------------------------------------------

    def normal_call(self, case: int) -> tuple[int | None, int | None]:
        """A clean INVITE (seed "offer"), ACK, a short talk, BYE: (INVITE status, BYE status)."""
        data = fill_seed("offer", case, salt=f"clean{uuid.uuid4().hex[:6]}")
        with self.ns.call(SipSocket, "udp", self.gw.target) as sock:
            data = rewrite_top_via_sent_by(data, "127.0.0.1", sock.local_port)
            final = final_response(sock.exchange(data, timeout_s=5.0, settle_s=0))
            if final is None or final.status >= 300:
                if final is not None:
                    sock.send(ack_for(data, final))
                return (final.status if final else None), None
            sock.send(_ack_2xx(data, final, sock.local_port, "UDP"))
            time.sleep(0.2)
            got = sock.exchange(_bye_after_2xx(final, sock.local_port, "UDP"), timeout_s=3.0, settle_s=0)
            bye = final_response(got)
            return final.status, bye.status if bye else None


# --- the invariants ---------------------------------------------------------------------------------


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def trunk_leg_violations(
    call_lines: list[dict], legs: list[TrunkLeg], *, grace_s: float = RELEASE_GRACE_S
) -> list[str]:
    """The trunk-leg invariant of the module docstring; returns what is violated."""
    problems = []
    by_number: dict[str, list[TrunkLeg]] = {}
    for leg in legs:
        by_number.setdefault(leg.number, []).append(leg)
    for line in call_lines:
        number = line.get("destination")
        if not number or number not in by_number or not line.get("timestamp"):
            continue
        written = _epoch(line["timestamp"])
        for leg in by_number[number]:
            if leg.invite_at > written + grace_s or leg.answered_at is None:
                continue  # another call to the same number, later; or never answered
            bridge = line.get("bridge_status")
            bridge_answered = isinstance(bridge, int) and 200 <= bridge < 300
            if leg.released_at is None or leg.released_at > written + grace_s:
                problems.append(
                    f"trunk leg {leg.call_id} ({number}) answered at {leg.answered_at:.3f} was "
                    f"{'never released' if leg.released_at is None else f'released at {leg.released_at:.3f}'} "
                    f"although its call {line.get('call_id')!r} ended at {written:.3f} "
                    f"(bridge_status {bridge}, {'answered' if bridge_answered else 'never answered'})"
                )
    for leg in legs:
        if leg.answered_unreleased:
            problems.append(
                f"trunk leg {leg.call_id} ({leg.number}) answered at {leg.answered_at:.3f} "
                f"is still answered and was never released"
            )
    return problems


def summary(fuzzer: Fuzzer, legs: list[TrunkLeg]) -> dict:
    outcomes: dict[str, int] = {}
    for r in fuzzer.results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    finals: dict[str, int] = {}
    for r in fuzzer.results:
        key = str(r.final) if r.final is not None else "none"
        finals[key] = finals.get(key, 0) + 1
    durations = sorted(((r.ended - r.started), r.case) for r in fuzzer.results)
    sdp = [r for r in fuzzer.results if {"radamsa_sdp", "sdp_line"} & set(r.mutators)]
    return {
        "cases": len(fuzzer.results),
        "seconds_per_case": {
            "mean": round(sum(d for d, _ in durations) / len(durations), 3) if durations else None,
            "slowest": [(round(d, 2), case) for d, case in durations[-3:]],
        },
        "outcomes": outcomes,
        "finals": dict(sorted(finals.items())),
        "mutated_sdp": {
            "cases": len(sdp),
            "relayed": sum(r.outcome == "answered" for r in sdp),
            "refused_488": sum(r.final == 488 for r in sdp),
        },
        "trunk_legs": len(legs),
        "trunk_legs_answered": sum(1 for leg in legs if leg.answered_at is not None),
        "crashes": [
            {"case": c.case if isinstance(c, FuzzCase) else None, "what": what, "file": str(p) if p else None}
            for c, what, p in fuzzer.crashes
        ],
        "findings": [
            {k: v for k, v in f.items() if k != "event"} | {"event": f["event"].get("event")} for f in fuzzer.findings
        ],
    }


def write_report(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


__all__ = [
    "CRASHERS",
    "Fuzzer",
    "NetnsGateway",
    "PyTrunk",
    "TrunkLeg",
    "env_int",
    "fuzz_policy_text",
    "number_for",
    "parse_response",
    "summary",
    "trunk_leg_violations",
    "write_report",
]
