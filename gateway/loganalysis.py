"""Read the gateway's JSON log: a summary of many calls, or everything about one.

Pure: stdlib only, no pjsua2, no clock. `gateway.commands.logs` is the thin
CLI on top (`dialout-gw logs`).

The gateway writes one JSON object per line (structlog's JSONRenderer). The
canonical per-call line has `"event": "call"` (see `GatewayService._canonical_line`);
`admission_refused` lines count refusals that never became calls. Anything
else (pjsip lines, lifecycle events, non-JSON noise) is counted, not parsed.

Speed: a million lines must take seconds, so the work per line is one or two
substring tests on bytes; `json.loads` only runs on lines that can be what we
look for (`"call"` or `"admission_refused"` somewhere in them, the quoted id
for a call lookup), and the event name is checked after parsing.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterable, Iterator

UTC = timezone.utc
GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 22

# Cheap pre-filters (bytes). A JSON string cannot contain an unescaped quote,
# so `"call"` inside a line is either the value "call" or a key named call;
# the event is checked again after parsing, so false positives cost time only.
_CALL_MARK = b'"call"'
_REFUSAL_MARK = b'"admission_refused"'

# Keys of an event line that the readable timeline does not repeat.
_COMMON_KEYS = frozenset(("event", "timestamp", "level", "component", "call_id"))


class LogInputError(ValueError):
    """Bad input from the operator: missing file, bad filter value, broken gzip."""


# --- filters --------------------------------------------------------------------------


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 date or date-time; without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LogInputError(f"{what}: expected an ISO 8601 date or date-time such as 2026-11-22T05:00:00Z, "
                            f"got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _canonical_ts(when: datetime) -> str:
    """The layout structlog's TimeStamper(fmt="iso", utc=True) writes."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_canonical_ts(ts: str) -> bool:
    return len(ts) == 27 and ts[26] == "Z" and ts[10] == "T" and ts[19] == "."


@dataclass(frozen=True, slots=True)
class Filters:
    """`--tenant`, `--since` (inclusive), `--until` (exclusive) and `--reason`."""

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None

    @classmethod
    def from_strings(cls, tenant: str | None = None, since: str | None = None, until: str | None = None,
                     reason: str | None = None) -> Filters:
        s = parse_time(since, "--since") if since is not None else None
        u = parse_time(until, "--until") if until is not None else None
        if s is not None and u is not None and u <= s:
            raise LogInputError(f"--until ({until}) must be later than --since ({since})")
        return cls(tenant=tenant or None, since=s, until=u, reason=reason or None)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.tenant, self.since, self.until, self.reason))

    def to_dict(self) -> dict[str, str | None]:
        return {
            "tenant": self.tenant,
            "since": _canonical_ts(self.since) if self.since else None,
            "until": _canonical_ts(self.until) if self.until else None,
            "reason": self.reason,
        }


class _Matcher:
    """Filters compiled for the hot loop."""

    __slots__ = ("tenant", "reason", "since", "until", "since_s", "until_s", "timed", "tenant_mark", "active")

    def __init__(self, f: Filters):
        self.tenant = f.tenant
        self.reason = f.reason
        self.since = f.since
        self.until = f.until
        self.since_s = _canonical_ts(f.since) if f.since else None
        self.until_s = _canonical_ts(f.until) if f.until else None
        self.timed = f.since is not None or f.until is not None
        # The tenant's JSON-encoded value must be somewhere in a matching line.
        self.tenant_mark = json.dumps(f.tenant).encode() if f.tenant else None
        self.active = f.active

    def in_time(self, ts: Any) -> bool:
        if not self.timed:
            return True
        if not isinstance(ts, str):
            return False
        if _is_canonical_ts(ts):
            if self.since_s is not None and ts < self.since_s:
                return False
            return self.until_s is None or ts < self.until_s
        try:
            when = parse_time(ts)
        except LogInputError:
            return False
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)

    def call(self, e: dict) -> bool:
        if self.tenant is not None and e.get("tenant") != self.tenant:
            return False
        if self.reason is not None and e.get("reason") != self.reason:
            return False
        return self.in_time(e.get("timestamp"))

    def refusal(self, e: dict) -> bool:
        # Admission refusals carry no tenant (nothing about the call is read).
        if self.tenant is not None:
            return False
        if self.reason is not None and e.get("reason") != self.reason:
            return False
        return self.in_time(e.get("timestamp"))


# --- reading --------------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff the gzip magic)."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


@contextmanager
def open_log(source: str | BinaryIO, stdin: BinaryIO | None = None) -> Iterator[BinaryIO]:
    """A binary stream of log text from a path, `-` (stdin) or an open binary file.

    Gzip is recognised by its magic bytes, whatever the file is called. A file
    opened here is closed on exit; stdin and a caller's stream are left open.
    """
    owned = None
    if isinstance(source, str) and source != "-":
        try:
            owned = raw = open(source, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise LogInputError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise LogInputError(f"{source}: is a directory") from None
        except OSError as exc:
            raise LogInputError(f"{source}: {exc.strerror or exc}") from None
    elif isinstance(source, str):
        if stdin is None:
            import sys

            stdin = sys.stdin.buffer
        raw = stdin
    else:
        raw = source
    try:
        head = b""
        while len(head) < 2:
            more = raw.read(2 - len(head))
            if not more:
                break
            head += more
        stream: BinaryIO = io.BufferedReader(_Prefixed(head, raw), CHUNK_BYTES)  # type: ignore[arg-type]
        if head == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        yield stream
    finally:
        if owned is not None:
            owned.close()


def _name(source: str | BinaryIO) -> str:
    if isinstance(source, str):
        return "<stdin>" if source == "-" else source
    return getattr(source, "name", "log")


def iter_blocks(stream: BinaryIO, name: str = "log", chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The log in blocks of about `chunk` bytes, each cut just after a newline
    (except the last one if the log does not end with a newline)."""
    rest = b""
    while True:
        try:
            data = stream.read(chunk)
        except EOFError:
            raise LogInputError(f"{name}: gzip stream is truncated") from None
        except gzip.BadGzipFile as exc:
            raise LogInputError(f"{name}: not a valid gzip file ({exc})") from None
        except zlib.error as exc:
            raise LogInputError(f"{name}: corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise LogInputError(f"{name}: {exc.strerror or exc}") from None
        if not data:
            break
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest += data
            continue
        block = rest + data[:cut] if rest else data[:cut]
        rest = data[cut:]
        yield block
    if rest:
        yield rest


def split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def line_batches(stream: BinaryIO, name: str = "log", chunk: int = CHUNK_BYTES) -> Iterator[list[bytes]]:
    """Lines (bytes, no newline) in batches of a few megabytes."""
    for block in iter_blocks(stream, name, chunk):
        yield split_lines(block)


# --- summary --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default, Excel PERCENTILE.INC)."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def _dist(values: list[float]) -> dict[str, Any]:
    values.sort()
    return {
        "count": len(values),
        "p50": _round(percentile(values, 50)),
        "p99": _round(percentile(values, 99)),
        "max": _round(values[-1]) if values else None,
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


@dataclass
class Summary:
    """What `dialout-gw logs FILE summary` reports; `to_dict()` is the `--json` form.

    Calls are counted per (tenant, organizer, region, allowed, reason,
    answered): one dict update per call in the hot loop; the top-N tables are
    derived at the end. Partial summaries (one per block or worker) merge.
    """

    filters: Filters = field(default_factory=Filters)
    lines: int = 0
    non_json: int = 0
    malformed: int = 0
    filtered_out: int = 0
    combos: dict[tuple, list] = field(default_factory=dict)   # key -> [calls, billed_units, talk_s]
    setup_relayed: list[float] = field(default_factory=list)
    setup_rejected: list[float] = field(default_factory=list)
    refusal_lines: int = 0
    refusals_total: int = 0
    refusal_reasons: dict[str, int] = field(default_factory=dict)
    first_ts: str | None = None
    last_ts: str | None = None

    def add_call(self, e: dict) -> None:
        allowed = e.get("decision") == "allow"
        key = (e.get("tenant"), e.get("organizer"), e.get("region"), allowed, e.get("reason"),
               e.get("bridge_status") == 200)
        row = self.combos.get(key)
        if row is None:
            row = self.combos[key] = [0, 0, 0.0]
        row[0] += 1
        row[1] += e.get("billed_units") or 0
        row[2] += e.get("talk_s") or 0.0
        setup = e.get("setup_ms")
        if setup is not None:
            (self.setup_relayed if allowed else self.setup_rejected).append(setup)
        ts = e.get("timestamp")
        if type(ts) is str:
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts

    def add_refusal(self, e: dict) -> None:
        self.refusal_lines += 1
        suppressed = e.get("suppressed_since_last") or 0
        n = 1 + (suppressed if isinstance(suppressed, int) else 0)
        self.refusals_total += n
        reason = e.get("reason") or "unknown"
        self.refusal_reasons[reason] = self.refusal_reasons.get(reason, 0) + n
        ts = e.get("timestamp")
        if isinstance(ts, str):
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts

    def merge(self, other: Summary) -> Summary:
        for name in ("lines", "non_json", "malformed", "filtered_out", "refusal_lines", "refusals_total"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, (calls, billed, talk) in other.combos.items():
            row = self.combos.get(key)
            if row is None:
                self.combos[key] = [calls, billed, talk]
            else:
                row[0] += calls
                row[1] += billed
                row[2] += talk
        self.setup_relayed.extend(other.setup_relayed)
        self.setup_rejected.extend(other.setup_rejected)
        for reason, n in other.refusal_reasons.items():
            self.refusal_reasons[reason] = self.refusal_reasons.get(reason, 0) + n
        for ts in (other.first_ts, other.last_ts):
            if isinstance(ts, str):
                if self.first_ts is None or ts < self.first_ts:
                    self.first_ts = ts
                if self.last_ts is None or ts > self.last_ts:
                    self.last_ts = ts
        return self

    # derived counts
    @property
    def calls(self) -> int:
        return sum(row[0] for row in self.combos.values())

    @property
    def relayed(self) -> int:
        return sum(row[0] for key, row in self.combos.items() if key[3])

    @property
    def rejected(self) -> int:
        return self.calls - self.relayed

    @property
    def answered(self) -> int:
        return sum(row[0] for key, row in self.combos.items() if key[3] and key[5])

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, row in self.combos.items():
            reason = key[4] or "unknown"
            out[reason] = out.get(reason, 0) + row[0]
        return out

    def group(self, index: int) -> dict[str, list]:
        """Per tenant (0), organizer (1) or region (2): [calls, relayed, rejected, billed_units, talk_s]."""
        out: dict[str, list] = {}
        for key, (calls, billed, talk) in self.combos.items():
            name = key[index] if key[index] is not None else "-"
            g = out.get(name)
            if g is None:
                g = out[name] = [0, 0, 0, 0, 0.0]
            g[0] += calls
            g[1 if key[3] else 2] += calls
            g[3] += billed
            g[4] += talk
        return out

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        calls, relayed = self.calls, self.relayed

        def cut(rows: list) -> list:
            return rows[:top] if top > 0 else rows

        def ranked(index: int, name: str, money: bool = True) -> list[dict[str, Any]]:
            rows = cut(sorted(self.group(index).items(), key=lambda kv: (-kv[1][0], kv[0])))
            out = []
            for key, (n, rel, rej, billed, talk) in rows:
                row: dict[str, Any] = {name: key, "calls": n, "relayed": rel, "rejected": rej}
                if money:
                    row["billed_units"] = billed
                    row["talk_s"] = round(talk, 3)
                out.append(row)
            return out

        reasons = cut(sorted(self.reasons().items(), key=lambda kv: (-kv[1], kv[0])))
        return {
            "filters": self.filters.to_dict(),
            "lines": {
                "total": self.lines,
                "non_json": self.non_json,
                "malformed": self.malformed,
                "filtered_out": self.filtered_out,
            },
            "period": {"first": self.first_ts, "last": self.last_ts},
            "calls": {
                "total": calls,
                "relayed": relayed,
                "rejected": calls - relayed,
                "answered": self.answered,
                "relay_ratio": round(relayed / calls, 4) if calls else None,
                "reject_ratio": round((calls - relayed) / calls, 4) if calls else None,
            },
            "reasons": [{"reason": r, "calls": n, "share": round(n / calls, 4)} for r, n in reasons],
            "tenants": ranked(0, "tenant"),
            "organizers": ranked(1, "organizer"),
            "regions": ranked(2, "region", money=False),
            "setup_ms": {
                "all": _dist(self.setup_relayed + self.setup_rejected),
                "relayed": _dist(list(self.setup_relayed)),
                "rejected": _dist(list(self.setup_rejected)),
            },
            "admission_refusals": {
                "lines": self.refusal_lines,
                "total": self.refusals_total,
                "by_reason": dict(sorted(self.refusal_reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            },
        }


# json.loads(bytes) spends a third of its time detecting the encoding and
# wrapping the C scanner; the hot loop calls the scanner itself on the decoded
# line and falls back to json.loads for anything unusual (leading spaces, a BOM).
_SCAN_ONCE = json.JSONDecoder().scan_once


def _slow_loads(line: bytes) -> Any:
    """json.loads, None when the line is not one JSON value."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def _scan(lines: list[bytes], m: _Matcher, s: Summary) -> None:
    """The hot loop. Per line: a couple of substring tests; JSON only for candidates."""
    tenant_mark = m.tenant_mark
    scan_once = _SCAN_ONCE
    call_mark, refusal_mark = _CALL_MARK, _REFUSAL_MARK
    add_call, add_refusal = s.add_call, s.add_refusal
    match_call = m.call if m.active else None
    match_refusal = m.refusal if m.active else None
    n = len(lines)
    non_json = malformed = filtered_out = 0
    for line in lines:
        if call_mark in line:
            if tenant_mark is not None and tenant_mark not in line:
                filtered_out += 1
                continue
            try:
                text = line.decode()
                e, end = scan_once(text, 0)
                if end != len(text) and text[end:].strip():
                    raise ValueError
            except (ValueError, StopIteration):
                e = _slow_loads(line)
                if e is None:
                    if line.lstrip()[:1] == b"{":
                        malformed += 1
                    else:
                        non_json += 1
                    continue
            if type(e) is not dict or e.get("event") != "call":
                continue
            if match_call is not None and not match_call(e):
                filtered_out += 1
                continue
            add_call(e)
        elif refusal_mark in line:
            e = _slow_loads(line)
            if e is None:
                if line.lstrip()[:1] == b"{":
                    malformed += 1
                else:
                    non_json += 1
                continue
            if type(e) is not dict or e.get("event") != "admission_refused":
                continue
            if match_refusal is not None and not match_refusal(e):
                filtered_out += 1
                continue
            add_refusal(e)
        elif line[:1] != b"{":
            stripped = line.strip()
            if not stripped:
                n -= 1  # blank lines are not lines of the log
            elif stripped[:1] != b"{":
                non_json += 1
    s.lines += n
    s.non_json += non_json
    s.malformed += malformed
    s.filtered_out += filtered_out


def summarize(batches: Iterable[list[bytes]], filters: Filters | None = None) -> Summary:
    """Summarise batches of lines (bytes) in this process."""
    filters = filters or Filters()
    m = _Matcher(filters)
    s = Summary(filters=filters)
    for batch in batches:
        _scan(batch, m, s)
    return s


def _summarize_block(job: tuple[bytes, Filters]) -> Summary:
    block, filters = job
    s = Summary(filters=filters)
    _scan(split_lines(block), _Matcher(filters), s)
    return s


def default_jobs() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(8, os.cpu_count() or 1))


def summarize_path(source: str | BinaryIO, filters: Filters | None = None, stdin: BinaryIO | None = None,
                   jobs: int = 1) -> Summary:
    """Summarise a log file, '-' or a binary stream.

    With `jobs > 1` and more than one block of input, blocks are parsed in
    worker processes (fork) while this one reads and decompresses; partial
    summaries are merged, so the result is the same as with `jobs=1`.
    """
    filters = filters or Filters()
    with open_log(source, stdin) as stream:
        blocks = iter_blocks(stream, _name(source))
        first = next(blocks, b"")
        second = next(blocks, None) if jobs > 1 else None
        if second is None:
            total = _summarize_block((first, filters))
            for block in blocks:
                total.merge(_summarize_block((block, filters)))
            return total
        import multiprocessing

        def jobs_iter():
            yield first, filters
            yield second, filters
            for block in blocks:
                yield block, filters

        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        total = Summary(filters=filters)
        with ctx.Pool(jobs) as pool:
            for part in pool.imap_unordered(_summarize_block, jobs_iter()):
                total.merge(part)
        return total


# --- one call -------------------------------------------------------------------------


@dataclass
class CallReport:
    """Every line about one SIP Call-ID: canonical line(s), its other events, and
    pjsip lines that mention it (in log order)."""

    call_id: str
    events: list[dict] = field(default_factory=list)
    lines: int = 0
    malformed: int = 0

    @property
    def canonical(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "call" and e.get("call_id") == self.call_id]

    @property
    def found(self) -> bool:
        return bool(self.events)

    def to_dict(self) -> dict[str, Any]:
        canonical = self.canonical
        return {
            "call_id": self.call_id,
            "found": self.found,
            "call": canonical[-1] if canonical else None,
            "calls": len(canonical),
            "events": self.events,
        }


def _needles(call_id: str) -> tuple[bytes, ...]:
    # structlog writes JSON with ensure_ascii: search for the escaped form (and the raw one).
    escaped = json.dumps(call_id)[1:-1].encode()
    raw = call_id.encode("utf-8", "surrogatepass")
    return (escaped,) if raw == escaped else (escaped, raw)


def _lines_with(block: bytes, needles: tuple[bytes, ...]) -> list[bytes]:
    """The lines of `block` that contain one of `needles`, without splitting the block."""
    found: dict[int, bytes] = {}
    for needle in needles:
        pos = block.find(needle)
        while pos != -1:
            start = block.rfind(b"\n", 0, pos) + 1
            end = block.find(b"\n", pos)
            if end == -1:
                end = len(block)
            found[start] = block[start:end]
            pos = block.find(needle, end)
    return [found[k] for k in sorted(found)]


class _CallCollector:
    def __init__(self, call_id: str, filters: Filters):
        if not call_id:
            raise LogInputError("CALL-ID must not be empty")
        self.filters = filters
        self.matcher = _Matcher(filters)
        self.needles = _needles(call_id)
        self.report = CallReport(call_id)

    def take(self, line: bytes) -> None:
        call_id = self.report.call_id
        try:
            e = json.loads(line)
        except ValueError:
            if line.lstrip()[:1] == b"{":
                self.report.malformed += 1
            return
        if type(e) is not dict:
            return
        if e.get("call_id") != call_id:
            msg = e.get("message")
            if e.get("event") != "pjsip" or not isinstance(msg, str) or call_id not in msg:
                return
        if self.matcher.timed and not self.matcher.in_time(e.get("timestamp")):
            return
        self.report.events.append(e)

    def finish(self) -> CallReport:
        f, report = self.filters, self.report
        if f.tenant is not None or f.reason is not None:
            keep = [e for e in report.canonical
                    if (f.tenant is None or e.get("tenant") == f.tenant)
                    and (f.reason is None or e.get("reason") == f.reason)]
            if not keep:
                report.events = []
        return report


def find_call(batches: Iterable[list[bytes]], call_id: str, filters: Filters | None = None) -> CallReport:
    """All lines whose `call_id` is `call_id`, plus pjsip lines whose text mentions it.

    `--since/--until` keep lines in that window; `--tenant/--reason` keep the
    call only if one of its canonical lines matches them.
    """
    c = _CallCollector(call_id, filters or Filters())
    needles = c.needles
    for batch in batches:
        c.report.lines += len(batch)
        for line in batch:
            for n in needles:
                if n in line:
                    c.take(line)
                    break
    return c.finish()


def find_call_path(source: str | BinaryIO, call_id: str, filters: Filters | None = None,
                   stdin: BinaryIO | None = None) -> CallReport:
    """`find_call` on a file: blocks are searched whole, only lines with the id are parsed."""
    c = _CallCollector(call_id, filters or Filters())
    with open_log(source, stdin) as stream:
        for block in iter_blocks(stream, _name(source)):
            c.report.lines += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            for line in _lines_with(block, c.needles):
                c.take(line)
    return c.finish()


# --- human output -----------------------------------------------------------------------


def _n(v: int) -> str:
    return f"{v:,}"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f} %" if whole else "    - "


def _table(headers: list[str], rows: list[list[Any]], indent: str = "  ") -> list[str]:
    cells = [[str(c) for c in headers]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for i, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        out.append(indent + "  ".join(parts).rstrip())
        if i == 0:
            out.append(indent + "  ".join("-" * w for w in widths))
    return out


def format_summary(d: dict[str, Any], name: str) -> str:
    """The human table for `summary` (from `Summary.to_dict()`)."""
    lines_info = d["lines"]
    calls = d["calls"]
    total = calls["total"]
    out = [f"{name}: {_n(lines_info['total'])} lines, {_n(lines_info['non_json'])} not JSON, "
           f"{_n(lines_info['malformed'])} malformed"]
    active = {k: v for k, v in d["filters"].items() if v is not None}
    if active:
        out.append("filters: " + "  ".join(f"--{k} {v}" for k, v in active.items())
                   + f"  ({_n(lines_info['filtered_out'])} lines filtered out)")
    if d["period"]["first"]:
        out.append(f"period: {d['period']['first']} .. {d['period']['last']}")
    out.append("")
    out.append(f"calls               {_n(total):>10}")
    out.append(f"  relayed (allow)   {_n(calls['relayed']):>10}  {_pct(calls['relayed'], total)}"
               f"   answered {_n(calls['answered'])}")
    out.append(f"  rejected (deny)   {_n(calls['rejected']):>10}  {_pct(calls['rejected'], total)}")
    adm = d["admission_refusals"]
    note = (f"  ({_n(adm['lines'])} logged, {_n(adm['total'] - adm['lines'])} counted in suppressed_since_last)"
            if adm["total"] > adm["lines"] else "")
    out.append(f"admission refusals  {_n(adm['total']):>10}{note}")
    out.append("")
    setup = d["setup_ms"]
    out.append("setup time (ms)")
    out += _table(["calls", "count", "p50", "p99", "max"],
                  [[label, _n(setup[k]["count"]), setup[k]["p50"], setup[k]["p99"], setup[k]["max"]]
                   for label, k in (("all", "all"), ("relayed", "relayed"), ("rejected", "rejected"))])
    out.append("")
    out.append("top reasons")
    out += _table(["reason", "calls", "share"],
                  [[r["reason"], _n(r["calls"]), _pct(r["calls"], total)] for r in d["reasons"]])
    for title, key, col in (("top tenants", "tenants", "tenant"), ("top organisers", "organizers", "organizer")):
        out.append("")
        out.append(title)
        out += _table([col, "calls", "relayed", "rejected", "billed_units", "talk_min"],
                      [[r[col], _n(r["calls"]), _n(r["relayed"]), _n(r["rejected"]), _n(r["billed_units"]),
                        f"{r['talk_s'] / 60:,.1f}"] for r in d[key]])
    out.append("")
    out.append("top destination regions")
    out += _table(["region", "calls", "relayed", "rejected"],
                  [[r["region"], _n(r["calls"]), _n(r["relayed"]), _n(r["rejected"])] for r in d["regions"]])
    if adm["by_reason"]:
        out.append("")
        out.append("admission refusals by reason")
        out += _table(["reason", "refusals"], [[r, _n(n)] for r, n in adm["by_reason"].items()])
    return "\n".join(out) + "\n"


_CALL_FIELDS = (
    ("tenant", "tenant"), ("organizer", "organiser"), ("meeting", "meeting"), ("initiator", "initiator"),
    ("location", "location"),
)


def _v(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def format_call(report: CallReport) -> str:
    """The readable form of `call CALL-ID`: the canonical line(s) laid out, then a timeline."""
    out = [f"call {report.call_id}"]
    for e in report.canonical:
        out.append("")
        status = f"bridge {_v(e.get('bridge_status'))}, trunk {_v(e.get('trunk_status'))}"
        out.append(f"  decision      {e.get('decision', '-')}  {e.get('reason', '-')}  ({status})")
        out.append(f"  at            {_v(e.get('timestamp'))}")
        for key, label in _CALL_FIELDS:
            out.append(f"  {label:<13} {_v(e.get(key))}")
        dest = f"{_v(e.get('dialled'))} -> {_v(e.get('destination'))}"
        if e.get("region") or e.get("number_type"):
            dest += f"  ({_v(e.get('region'))}, {_v(e.get('number_type'))})"
        out.append(f"  number        {dest}")
        bucket = _v(e.get("bucket"))
        if e.get("fallback_buckets"):
            bucket += "  (fallback: " + ", ".join(map(str, e["fallback_buckets"])) + ")"
        if e.get("max_duration_s") is not None:
            bucket += f"  max {e['max_duration_s']} s"
        out.append(f"  bucket        {bucket}")
        out.append(f"  timing        setup {_v(e.get('setup_ms'))} ms, talk {_v(e.get('talk_s'))} s, "
                   f"ended by {_v(e.get('ended_by'))}")
        charges = e.get("charges") or {}
        out.append(f"  billed        {_v(e.get('billed_units'))} unit(s)"
                   + ("  " + ", ".join(f"{k} {v}" for k, v in charges.items()) if charges else ""))
        out.append(f"  explanation   {_v(e.get('explanation'))}")
        trace = e.get("trace")
        if trace:
            out.append("  trace")
            for i, step in enumerate(trace, 1):
                out.append(f"    {i:>2}. {_v(step)}")
    out.append("")
    out.append(f"  timeline ({len(report.events)} line{'s' if len(report.events) != 1 else ''})")
    for e in report.events:
        event = e.get("event", "-")
        if event == "call" and e.get("call_id") == report.call_id:
            detail = f"{e.get('decision', '-')} {e.get('reason', '-')} (canonical line)"
        else:
            detail = " ".join(f"{k}={_v(v)}" for k, v in e.items() if k not in _COMMON_KEYS)
        out.append(f"    {_v(e.get('timestamp')):<27}  {_v(e.get('level')):<7}  {event:<18}  {detail}".rstrip())
    return "\n".join(out) + "\n"
