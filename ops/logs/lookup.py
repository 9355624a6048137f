"""`call CALL-ID`: every line about one SIP Call-ID.

Whole blocks of the log are searched for the Call-ID (as structlog's JSON
writes it); only the lines that contain it are parsed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ops.logs.filters import Filters, Matcher
from ops.logs.reading import LogInputError, iter_blocks, open_log, source_name


@dataclass
class CallReport:
    """Every line about one SIP Call-ID: canonical line(s), its other events, and
    pjsip lines that mention it (in log order)."""

    call_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    malformed: int = 0

    @property
    def canonical(self) -> list[dict[str, Any]]:
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
        self.matcher = Matcher(filters)
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
            keep = [
                e
                for e in report.canonical
                if (f.tenant is None or e.get("tenant") == f.tenant)
                and (f.reason is None or e.get("reason") == f.reason)
            ]
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


def find_call_path(
    source: str | BinaryIO, call_id: str, filters: Filters | None = None, stdin: BinaryIO | None = None
) -> CallReport:
    """`find_call` on a file: blocks are searched whole, only lines with the id are parsed."""
    c = _CallCollector(call_id, filters or Filters())
    with open_log(source, stdin) as stream:
        for block in iter_blocks(stream, source_name(source)):
            c.report.lines += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            for line in _lines_with(block, c.needles):
                c.take(line)
    return c.finish()
