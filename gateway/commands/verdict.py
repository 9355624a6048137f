"""How `dialout-gw explain` shows a decision: JSON for scripts, a short verdict for people.

The verdict is wrapped to the terminal's width, and its marks fall back to
ASCII when the stream cannot encode them.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any, TextIO


class Output:
    """Writes each decision as JSON (one object per line) or as readable text.

    `fmt` None picks text on a terminal and JSON otherwise, so a script that
    pipes `explain` keeps getting JSON. Text is wrapped to the terminal's width
    when there is one, and its marks fall back to ASCII when the stream cannot
    encode them.
    """

    def __init__(self, stream: TextIO, fmt: str | None, indent: int | None = None):
        tty = _isatty(stream)
        self.stream = stream
        self.fmt = fmt or ("text" if tty else "json")
        self.indent = indent
        self.width = _terminal_width(stream) if tty else None
        self.marks = MARKS if _can_encode(stream, "".join(MARKS.values()) + "→") else ASCII_MARKS
        self.count = 0

    def emit(self, decision: dict[str, Any], where: str | None = None) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(decision, ensure_ascii=False, indent=self.indent) + "\n")
        else:
            if self.count:
                self.stream.write("\n")
            self.stream.write(render_decision(decision, where=where, width=self.width, marks=self.marks) + "\n")
        self.count += 1
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _terminal_width(stream: TextIO) -> int | None:
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (AttributeError, ValueError, OSError):
        return None


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


#: One mark per trace outcome (the policy's pass, fail, skip and info).
MARKS = {"pass": "✓", "fail": "✗", "skip": "–", "info": "·"}
ASCII_MARKS = {"pass": "+", "fail": "x", "skip": "-", "info": "i"}


def format_duration(seconds: float | None) -> str:
    """A duration for people: 14400 → "4 h", 750 → "12 min 30 s", None → "unlimited"."""
    if seconds is None:
        return "unlimited"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"


def _local_time(decision: dict[str, Any]) -> str | None:
    """The call's start in the tenant's timezone: "2018-05-01 10:00:00 Europe/Paris (+02:00)"."""
    at = decision.get("at")
    if not at:
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return str(at)
    tz = decision.get("tz")
    if tz:
        try:
            from zoneinfo import ZoneInfo

            when = when.astimezone(ZoneInfo(tz))
        except (KeyError, ValueError, OverflowError, OSError):
            tz = None
    offset = when.strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if offset else ""
    stamp = when.replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} {tz} ({offset})" if tz else f"{stamp} {offset}".rstrip()


def render_decision(
    decision: dict[str, Any], *, where: str | None = None, width: int | None = None, marks: dict[str, str] = MARKS
) -> str:
    """The readable form of one `explain` decision (the dict that --json prints).

    A verdict line, the fields an operator asks about first (status, reason,
    bucket, authorised time, explanation), then the decision trace, one marked
    step per rule. `width` wraps long values under their column; None does not
    wrap.
    """
    allowed = bool(decision.get("allow"))
    head = ["ALLOWED" if allowed else "DENIED"]
    if decision.get("e164"):
        kind = ", ".join(str(v) for v in (decision.get("region"), decision.get("number_type")) if v)
        head.append(f"{decision['e164']} ({kind})" if kind else decision["e164"])
    if decision.get("organizer"):
        head.append(f"for {decision['organizer']}")
        if decision.get("tenant"):
            head[-1] += f", tenant {decision['tenant']}"
    title = " ".join(head)
    lines = _wrapped(f"{where}: " if where else "", title, width, indent="    ")

    fields: list[tuple[str, str]] = [("status", str(decision.get("status", "")))]
    fields.append(("reason", str(decision.get("reason", ""))))
    if decision.get("bucket"):
        seconds = {a["bucket"]: a["seconds"] for a in decision.get("allowances") or []}

        def bucket(name: str) -> str:
            return f"{name} ({format_duration(seconds[name])})" if name in seconds else name

        text = bucket(decision["bucket"])
        if decision.get("fallback_buckets"):
            text += ", then " + ", ".join(bucket(b) for b in decision["fallback_buckets"])
        fields.append(("bucket", text))
    if decision.get("max_duration_s") is not None or allowed:
        fields.append(("authorised", format_duration(decision.get("max_duration_s"))))
    if decision.get("retry_after_s") is not None:
        fields.append(("retry after", format_duration(decision["retry_after_s"])))
    when = _local_time(decision)
    if when:
        fields.append(("at", when))
    if decision.get("initiator"):
        fields.append(("initiator", str(decision["initiator"])))
    if decision.get("location"):
        fields.append(("location", f"{decision['location']} (reported; logged only)"))
    if decision.get("explanation"):
        fields.append(("explanation", str(decision["explanation"])))
    label_width = max(len(label) for label, _ in fields)
    for label, value in fields:
        lines += _wrapped(f"  {label:<{label_width}}  ", value, width)

    trace = decision.get("trace") or []
    if trace:
        lines.append("  trace")
        rule_width = max(len(str(step.get("rule", ""))) for step in trace)
        for step in trace:
            mark = marks.get(step.get("outcome"), "?")
            lines += _wrapped(f"    {mark} {step.get('rule', ''):<{rule_width}}  ", str(step.get("detail", "")), width)
    return "\n".join(lines)


def _wrapped(prefix: str, value: str, width: int | None, indent: str | None = None) -> list[str]:
    """`prefix + value`, wrapped to `width`, continued under the value (or after `indent`)."""
    indent = " " * len(prefix) if indent is None else indent
    if not width or len(prefix) + len(value) <= width or width - max(len(prefix), len(indent)) < 20:
        return [(prefix + value).rstrip()]
    import textwrap

    return textwrap.wrap(
        value, width=width, initial_indent=prefix, subsequent_indent=indent, break_on_hyphens=False
    ) or [prefix.rstrip()]
