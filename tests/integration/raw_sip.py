"""Raw SIP over loopback UDP/TCP for tests: send arbitrary (even malformed)
bytes to the gateway, collect and parse what comes back, ACK final answers.

Nothing here validates what it sends: the point is to deliver broken
messages exactly as written. The only rewrite offered is
:func:`rewrite_top_via_sent_by`, for UDP, so that the answer can reach the
test's socket (RFC 3261 §18.2.2: over an unreliable transport without
``rport`` the UAS answers to the ``received`` address, i.e. the source IP,
at the *sent-by* port, 5060 if none; over TCP it answers on the connection
and the Via needs no change).

Typical use::

    with SipSocket("udp", gw.target) as sock:
        msg = rewrite_top_via_sent_by(raw, "127.0.0.1", sock.local_port)
        responses = sock.exchange(msg)
        final = final_response(responses)
        if final is not None and cseq_method(final) == "INVITE" and final.status >= 300:
            sock.send(ack_for(msg, final))
"""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass, field

__all__ = [
    "SipResponse",
    "SipSocket",
    "ack_for",
    "cseq_method",
    "final_response",
    "parse_response",
    "request_line",
    "rewrite_top_via_sent_by",
    "split_stream",
    "top_via_transport",
]

# RFC 3261 §7.3.3 compact forms.
COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
}


def canonical_name(name: str) -> str:
    name = name.strip().lower()
    return COMPACT.get(name, name)


# --- message structure -----------------------------------------------------------


def _split_head(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, separator, body): the head ends at the first empty line."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[:i], sep, data[i + len(sep) :]
    return data, b"", b""


def _header_fields(head: bytes) -> list[tuple[int, int, bytes]]:
    """Header fields of a head (start line excluded) as (start, end, raw bytes),
    continuation lines (RFC 3261 §7.3.1 folding) included in their field."""
    fields: list[list[int]] = []
    pos = head.find(b"\n") + 1 if b"\n" in head else len(head)
    while pos < len(head):
        nl = head.find(b"\n", pos)
        end = len(head) if nl < 0 else nl + 1
        if head[pos : pos + 1] in (b" ", b"\t") and fields:
            fields[-1][1] = end
        else:
            fields.append([pos, end])
        pos = end
    return [(s, e, head[s:e]) for s, e in fields]


def _field_name(raw: bytes) -> str:
    return raw.split(b":", 1)[0].decode("latin-1").strip(" \t").lower() if b":" in raw else ""


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip(" \t\r\n")


def request_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")


# Top Via: sent-protocol ("SIP / 2.0 / UDP", LWS allowed around the slashes),
# LWS, then sent-by (host or [IPv6], optional ":port", LWS allowed around ":").
_LWS = rb"(?:[ \t]*\r?\n)?[ \t]*"
_SENT_BY = re.compile(
    rb"(?P<proto>[A-Za-z0-9.!%*_+`'~-]+"
    + _LWS
    + rb"/"
    + _LWS
    + rb"[A-Za-z0-9.!%*_+`'~-]+"
    + _LWS
    + rb"/"
    + _LWS
    + rb"(?P<transport>[A-Za-z0-9.!%*_+`'~-]+))"
    + rb"(?:[ \t]*\r?\n)?[ \t]+"
    + rb"(?P<sentby>(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?:"
    + _LWS
    + rb":"
    + _LWS
    + rb"[0-9]+)?)"
)


def _top_via(data: bytes) -> tuple[int, re.Match] | None:
    head, _, _ = _split_head(data)
    for start, _end, raw in _header_fields(head):
        if _field_name(raw) in ("via", "v"):
            colon = raw.index(b":") + 1
            m = _SENT_BY.search(raw, colon)
            return (start, m) if m else None
    return None


def top_via_transport(data: bytes) -> str | None:
    """Transport token of the top Via ("UDP", "TCP", "TLS", ...), None without one."""
    found = _top_via(data)
    return found[1].group("transport").decode("latin-1").upper() if found else None


def rewrite_top_via_sent_by(data: bytes, host: str, port: int) -> bytes:
    """Replace only the sent-by (host[:port]) of the top Via with host:port.

    Every other byte is kept: the Via's parameters (even broken ones), the
    other Vias, the folding, the body, and so Content-Length stays exactly
    as consistent (or inconsistent) as the original. A message without a
    parsable top Via is returned unchanged.
    """
    found = _top_via(data)
    if found is None:
        return data
    start, m = found
    a, b = start + m.start("sentby"), start + m.end("sentby")
    return data[:a] + f"{host}:{port}".encode() + data[b:]


# --- responses ---------------------------------------------------------------------


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # (name as sent, unfolded value), in order
    body: bytes
    raw: bytes
    source: tuple[str, int] | None = None
    received_at: float = 0.0

    def headers_all(self, name: str) -> list[str]:
        want = canonical_name(name)
        return [v for n, v in self.headers if canonical_name(n) == want]

    def header(self, name: str) -> str | None:
        values = self.headers_all(name)
        return values[0] if values else None

    @property
    def call_id(self) -> str | None:
        return self.header("call-id")

    def __repr__(self) -> str:
        extra = f" Reason: {self.header('reason')}" if self.header("reason") else ""
        return f"<{self.status} {self.reason} CSeq: {self.header('cseq')}{extra}>"


def parse_response(data: bytes) -> SipResponse:
    """Parse one SIP response (raises ValueError for anything else)."""
    head, _, body = _split_head(data)
    first = request_line(head)
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)$", first)
    if not m:
        raise ValueError(f"not a SIP response: {first[:80]!r}")
    headers = []
    for _s, _e, raw in _header_fields(head):
        text = raw.decode("utf-8", "replace")
        name, _, value = text.partition(":")
        headers.append((name.strip(" \t"), _unfold(value)))
    return SipResponse(int(m.group(1)), m.group(2), headers, body, data)


def _content_length(head: bytes) -> int | None:
    for _s, _e, raw in _header_fields(head):
        if _field_name(raw) in ("content-length", "l"):
            value = raw.split(b":", 1)[1].strip()
            return int(value) if value.isdigit() else None
    return None


def split_stream(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Frame complete messages off a stream buffer by Content-Length
    (RFC 3261 §18.3); returns (messages, the incomplete rest). Leading CRLF
    keep-alives are skipped."""
    messages = []
    while True:
        buffer = buffer.lstrip(b"\r\n")
        i = buffer.find(b"\r\n\r\n")
        if i < 0:
            return messages, buffer
        head_end = i + 4
        length = _content_length(buffer[:i]) or 0
        if len(buffer) < head_end + length:
            return messages, buffer
        messages.append(buffer[: head_end + length])
        buffer = buffer[head_end + length :]


def cseq_method(response: SipResponse) -> str:
    cseq = response.header("cseq") or ""
    parts = cseq.split()
    return parts[1] if len(parts) > 1 else ""


def final_response(responses: list[SipResponse]) -> SipResponse | None:
    """The first final (>= 200) response, None if only provisional ones (or none)."""
    return next((r for r in responses if r.status >= 200), None)


def ack_for(request: bytes, response: SipResponse) -> bytes:
    """The ACK for a non-2xx final response to `request` (an INVITE), as
    RFC 3261 §17.1.1.3 builds it: the INVITE's Request-URI, its top Via
    (taken from the response, which echoes it), From, Call-ID and CSeq
    number, and the To of the response (with the UAS's tag)."""
    line = request_line(request)
    method = line.split(" ", 1)[0]
    uri = line[len(method) :].strip()
    if uri.endswith("SIP/2.0"):
        uri = uri[: -len("SIP/2.0")].strip()
    via = response.header("via") or ""
    via = via.split(",", 1)[0].strip()
    cseq_number = (response.header("cseq") or "0").split()[0]
    lines = [
        f"ACK {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {response.header('from')}",
        f"To: {response.header('to')}",
        f"Call-ID: {response.call_id}",
        f"CSeq: {cseq_number} ACK",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


# --- sockets ----------------------------------------------------------------------------


def _addr(target: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, tuple):
        return target
    host, _, port = target.rpartition(":")
    return host, int(port)


@dataclass
class SipSocket:
    """One loopback UDP or TCP socket toward `target` ("host:port").

    ``exchange`` sends and collects answers; ``closed_by_peer`` tells
    whether a TCP peer closed the connection; ``garbage`` keeps anything
    received that was not a parsable response (e.g. a request from the peer).
    """

    transport: str
    target: str | tuple[str, int]
    connect_timeout_s: float = 2.0
    responses: list[SipResponse] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)
    closed_by_peer: bool = False

    def __post_init__(self):
        self.transport = self.transport.lower()
        self.addr = _addr(self.target)
        self._buffer = b""
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        elif self.transport == "tcp":
            self.sock = socket.create_connection(self.addr, timeout=self.connect_timeout_s)
        else:
            raise ValueError(f"unsupported transport {self.transport!r}")
        self.sock.setblocking(False)

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def __enter__(self) -> SipSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.addr)
        else:
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.setblocking(False)

    def _take(self, data: bytes, source) -> list[SipResponse]:
        out = []
        for chunk in [data] if self.transport == "udp" else self._frame(data):
            if not chunk.strip(b"\r\n"):
                continue
            try:
                resp = parse_response(chunk)
            except ValueError:
                self.garbage.append(chunk)
                continue
            resp.source, resp.received_at = source, time.monotonic()
            out.append(resp)
        self.responses.extend(out)
        return out

    def _frame(self, data: bytes) -> list[bytes]:
        messages, self._buffer = split_stream(self._buffer + data)
        return messages

    def receive(self, timeout_s: float) -> list[SipResponse]:
        """Everything that arrives within `timeout_s`."""
        return self._collect(timeout_s, lambda got: False)

    def _collect(self, timeout_s: float, done) -> list[SipResponse]:
        got: list[SipResponse] = []
        deadline = time.monotonic() + timeout_s
        while not self.closed_by_peer:
            left = deadline - time.monotonic()
            if left <= 0 or done(got):
                break
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            try:
                data, source = (
                    self.sock.recvfrom(65535) if self.transport == "udp" else (self.sock.recv(65535), self.addr)
                )
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                # ICMP port unreachable on UDP, reset on TCP
                if self.transport == "tcp":
                    self.closed_by_peer = True
                continue
            if not data and self.transport == "tcp":
                self.closed_by_peer = True
                break
            got.extend(self._take(data, source))
        return got

    def exchange(self, data: bytes, *, timeout_s: float = 1.0, settle_s: float = 0.3) -> list[SipResponse]:
        """Send `data`, then collect answers until a final response has been
        followed by `settle_s` of quiet-or-not (to catch a second, unexpected
        answer) or `timeout_s` has passed without a final one."""
        self.send(data)
        got = self._collect(timeout_s, lambda got: final_response(got) is not None)
        if final_response(got) is not None and settle_s > 0:
            got.extend(self.receive(settle_s))
        return got
