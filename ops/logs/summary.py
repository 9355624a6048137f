"""`summary`: calls, ratios, top reasons, tenants, organisers and regions, setup time.

Speed: a million lines must take seconds, so the work per line is one or two
substring tests on bytes; JSON is parsed only on lines that can be what we
look for (`"call"` or `"admission_refused"` somewhere in them), and the event
name is checked after parsing. Parsing the call lines is most of the cost;
`summarize_path` spreads it over worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import ops.logs.reading as reading
from ops.logs.filters import Filters, Matcher
from ops.logs.reading import (
    byte_ranges,
    iter_blocks,
    iter_range_blocks,
    open_log,
    plain_file_size,
    source_name,
    split_lines,
)
from ops.logs.trunks import TrunkTally

# Cheap pre-filters (bytes). A JSON string cannot contain an unescaped quote,
# so `"call"` inside a line is either the value "call" or a key named call;
# the event is checked again after parsing, so false positives cost time only.
_CALL_MARK = b'"call"'
_REFUSAL_MARK = b'"admission_refused"'


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
    combos: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)  # key -> [calls, billed_units, talk_s]
    setup_relayed: list[float] = field(default_factory=list)
    setup_rejected: list[float] = field(default_factory=list)
    refusal_lines: int = 0
    refusals_total: int = 0
    refusal_reasons: dict[str, int] = field(default_factory=dict)
    trunks: TrunkTally = field(default_factory=TrunkTally)
    first_ts: str | None = None
    last_ts: str | None = None

    def add_call(self, e: dict[str, Any]) -> None:
        allowed = e.get("decision") == "allow"
        key = (
            e.get("tenant"),
            e.get("organizer"),
            e.get("region"),
            allowed,
            e.get("reason"),
            e.get("bridge_status") == 200,
        )
        row = self.combos.get(key)
        if row is None:
            row = self.combos[key] = [0, 0, 0.0]
        row[0] += 1
        row[1] += e.get("billed_units") or 0
        row[2] += e.get("talk_s") or 0.0
        setup = e.get("setup_ms")
        if setup is not None:
            (self.setup_relayed if allowed else self.setup_rejected).append(setup)
        if allowed:  # a rejected call reached no trunk
            self.trunks.add(e)
        ts = e.get("timestamp")
        if type(ts) is str:
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts

    def add_refusal(self, e: dict[str, Any]) -> None:
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
        self.trunks.merge(other.trunks)
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

    def group(self, index: int) -> dict[str, list[Any]]:
        """Per tenant (0), organizer (1) or region (2): [calls, relayed, rejected, billed_units, talk_s]."""
        out: dict[str, list[Any]] = {}
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

        def cut(rows: list[Any]) -> list[Any]:
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
            "trunks": self.trunks.to_dict(top),
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
_SCAN_ONCE = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, not in the stubs


def _slow_loads(line: bytes) -> Any:
    """json.loads, None when the line is not one JSON value."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def _scan(lines: list[bytes], m: Matcher, s: Summary) -> None:
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
                # Neither a call of that tenant nor a refusal (refusals carry no tenant).
                filtered_out += 1
                continue
        elif refusal_mark not in line:
            if line[:1] != b"{":
                stripped = line.strip()
                if not stripped:
                    n -= 1  # blank lines are not lines of the log
                elif stripped[:1] != b"{":
                    non_json += 1
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
        if type(e) is not dict:
            continue
        event = e.get("event")
        if event == "call":
            if match_call is not None and not match_call(e):
                filtered_out += 1
                continue
            add_call(e)
        elif event == "admission_refused":
            if match_refusal is not None and not match_refusal(e):
                filtered_out += 1
                continue
            add_refusal(e)
    s.lines += n
    s.non_json += non_json
    s.malformed += malformed
    s.filtered_out += filtered_out


def summarize(batches: Iterable[list[bytes]], filters: Filters | None = None) -> Summary:
    """Summarise batches of lines (bytes) in this process."""
    filters = filters or Filters()
    m = Matcher(filters)
    s = Summary(filters=filters)
    for batch in batches:
        _scan(batch, m, s)
    return s


def default_jobs() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(8, os.cpu_count() or 1))


def _summarize_blocks(blocks: Iterable[bytes], filters: Filters) -> Summary:
    m = Matcher(filters)
    s = Summary(filters=filters)
    for block in blocks:
        _scan(split_lines(block), m, s)
    return s


def _summarize_block(job: tuple[bytes, Filters]) -> Summary:
    block, filters = job
    return _summarize_blocks((block,), filters)


def _summarize_range(job: tuple[str, int, int, Filters, int]) -> Summary:
    path, start, end, filters, chunk = job
    return _summarize_blocks(iter_range_blocks(path, start, end, chunk), filters)


def summarize_path(
    source: str | BinaryIO, filters: Filters | None = None, stdin: BinaryIO | None = None, jobs: int = 1
) -> Summary:
    """Summarise a log file, '-' or a binary stream.

    With `jobs > 1` the lines are parsed in worker processes (fork) and the
    partial summaries merged, so the result is the same as with `jobs=1`. A
    plain file of more than one block is cut into byte ranges that the
    workers read themselves; gzip and stdin are read (and decompressed) by
    this process, which hands the workers blocks of lines.
    """
    filters = filters or Filters()
    chunk = reading.CHUNK_BYTES
    if jobs > 1 and isinstance(source, str) and source != "-":
        size = plain_file_size(source)
        if size is not None and size > chunk:
            # Several ranges per worker even out workers that get less CPU.
            ranges = byte_ranges(size, min(jobs * 4, -(-size // chunk)))
            return _pooled(_summarize_range, ((source, a, b, filters, chunk) for a, b in ranges), jobs, filters)
    with open_log(source, stdin) as stream:
        blocks = iter_blocks(stream, source_name(source), chunk)
        first = next(blocks, b"")
        second = next(blocks, None) if jobs > 1 else None
        if second is None:
            return _summarize_blocks(_chain(first, blocks), filters)

        def jobs_iter() -> Iterator[tuple[bytes, Filters]]:
            for block in _chain(first, second, blocks):
                yield block, filters

        return _pooled(_summarize_block, jobs_iter(), jobs, filters)


def _chain(*parts: bytes | Iterable[bytes]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, bytes):
            yield part
        else:
            yield from part


def _pooled(work: Callable[[Any], Summary], jobs_iter: Iterable[Any], jobs: int, filters: Filters) -> Summary:
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    total = Summary(filters=filters)
    with ctx.Pool(jobs) as pool:
        for part in pool.imap_unordered(work, jobs_iter):
            total.merge(part)
    return total
