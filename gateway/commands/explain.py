"""`dialout-gw explain`: what would the gateway decide for this call, and why?"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.cli import UserError

DESCRIPTION = """\
Run the entitlement policy on a hypothetical dial-out and print the decision:
allow, status, reason, bucket, fallback_buckets, e164, region, number_type,
max_duration_s, explanation and a trace of every rule checked. Nothing is
dialled and no counter is changed.

On a terminal it prints a short readable verdict, with the trace as steps
marked pass, fail, skip or info; piped or redirected, one JSON object per
line, for scripts. --format text or --format json (or --json) picks one.

Give one request with flags, or many with --requests FILE.jsonl (one JSON
object per line with the keys organizer, number, and optionally at,
location, initiator, tenant, meeting and counters). `counters` overrides the
usage snapshot, e.g. {"pool_used_minutes": 1497, "credits_balance": 0}; its
keys are: %(counters)s.

--at takes ISO 8601. Without an offset it is read in the organiser's tenant
timezone, so --at 2018-06-30T23:59:59 means that tenant's local midnight edge.
Without --at, the current time is used.
"""

EPILOG = """\
examples:
  dialout-gw explain --config examples/gateway.toml --organizer alice@contoso.com --number +33142685300 --at 2018-05-01T10:00
  dialout-gw explain --config examples/gateway.toml --organizer erin@fabrikam.com --number "+1 212 200 1234" --location ZW
  dialout-gw explain --config examples/gateway.toml --organizer alice@contoso.com --number 0142685300 \\
      --counters '{"pool_used_minutes": 1497, "credits_balance": 0}'
  dialout-gw explain --config examples/gateway.toml --requests calls.jsonl
  dialout-gw explain --config examples/gateway.toml --number +33142685300 --organizer alice@contoso.com --json | jq .reason

exit codes: 0 every request was decided (allowed or not), 2 bad config or bad input.
"""

REQUEST_KEYS = ("organizer", "number", "at", "location", "initiator", "tenant", "meeting", "counters")
FORMATS = ("text", "json")


def _counter_fields() -> tuple[str, ...]:
    from dataclasses import fields

    from policy import Snapshot

    return tuple(f.name for f in fields(Snapshot))


def register(subparsers: argparse._SubParsersAction) -> None:
    from_here = {
        "counters": "pool_used_minutes, promotion_used_minutes, credits_balance, addon_used_minutes, "
        "concurrent_organizer, concurrent_tenant, calls_last_minute_organizer, "
        "distinct_destinations_today, destination_seen_today"
    }
    parser = subparsers.add_parser(
        "explain",
        help="show the policy decision for a hypothetical call (what-if tool)",
        description=DESCRIPTION % from_here,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config file")
    parser.add_argument("--organizer", metavar="ID", help="meeting organiser id, e.g. a UPN")
    parser.add_argument(
        "--number", metavar="DIALLED", help="dialled number as the bridge sends it (+E.164, national, tel: URI)"
    )
    parser.add_argument("--at", metavar="ISO8601", help="when the call starts (default: now)")
    parser.add_argument("--location", metavar="CC", help="reported physical country of the initiator (logged only)")
    parser.add_argument("--initiator", metavar="ID", help="who starts the call (needs no licence)")
    parser.add_argument("--tenant", metavar="ID", help="tenant id (default: the organiser's)")
    parser.add_argument("--meeting", metavar="ID", help="meeting id (recorded only)")
    parser.add_argument("--counters", metavar="JSON", help="usage snapshot overrides as a JSON object")
    parser.add_argument(
        "--requests", metavar="FILE.jsonl", help="many requests, one JSON object per line ('-' = stdin)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="text: a readable verdict and trace; json: one JSON object per line "
        "(default: text on a terminal, json otherwise)",
    )
    parser.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON (one object over several lines)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    single = any(
        getattr(args, k) is not None
        for k in ("organizer", "number", "at", "location", "initiator", "tenant", "meeting", "counters")
    )
    if args.requests and single:
        raise UserError(
            "give either --requests FILE or the single-request flags (--organizer, --number, ...), not both"
        )
    if not args.requests and args.number is None:
        raise UserError("--number is required (or use --requests FILE.jsonl)")

    if args.pretty and args.format == "text":
        raise UserError("--pretty indents the JSON output; it does not go with --format text")
    out = _Output(sys.stdout, args.format or ("json" if args.pretty else None), indent=2 if args.pretty else None)

    config = load_config(args.config)
    settings = config.policy

    if not args.requests:
        counters = _parse_json_object(args.counters, "--counters") if args.counters is not None else None
        item = {
            "organizer": args.organizer,
            "number": args.number,
            "at": args.at,
            "location": args.location,
            "initiator": args.initiator,
            "tenant": args.tenant,
            "meeting": args.meeting,
            "counters": counters,
        }
        out.emit(_decide(item, settings, "command line"))
        return 0

    if args.requests == "-":
        _run_lines(sys.stdin, "<stdin>", settings, out)
        return 0
    try:
        with open(args.requests, encoding="utf-8") as fh:
            _run_lines(fh, args.requests, settings, out)
    except FileNotFoundError:
        raise UserError(f"{args.requests}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{args.requests}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{args.requests}: {exc.strerror or exc}") from None
    return 0


def _run_lines(lines: TextIO, name: str, settings: Any, out: _Output) -> None:
    count = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        item = _parse_json_object(line, where)
        unknown = sorted(set(item) - set(REQUEST_KEYS))
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(REQUEST_KEYS)}")
        out.emit(_decide(item, settings, where), where)
        count += 1
    if count == 0:
        raise UserError(f"{name}: no requests (expected one JSON object per line)")


def _parse_json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _decide(item: dict[str, Any], settings: Any, where: str) -> dict[str, Any]:
    from policy import CallRequest, Snapshot, decide

    def text(key: str, required: bool = False) -> str | None:
        value = item.get(key)
        if value is None:
            if required:
                raise UserError(f"{where}: {key!r} is required")
            return None
        if not isinstance(value, str):
            raise UserError(f"{where}: {key!r} must be a string, got {value!r}")
        return value

    number = text("number", required=True)
    assert number is not None
    request = CallRequest(
        organizer=text("organizer"),
        dialled=number,
        tenant=text("tenant"),
        initiator=text("initiator"),
        meeting=text("meeting"),
        location=text("location"),
    )
    snapshot = _snapshot(item.get("counters"), where, Snapshot)
    now = _when(text("at"), request, settings, where)
    decision = decide(request, snapshot, now, settings)
    out = decision.to_dict()
    out["at"] = now.isoformat()
    if request.initiator:
        out["initiator"] = request.initiator
    if request.location:
        out["location"] = request.location
    return out


def _snapshot(counters: Any, where: str, snapshot_type: type) -> Any:
    if counters is None:
        return snapshot_type()
    if not isinstance(counters, dict):
        raise UserError(f"{where}: 'counters' must be a JSON object, got {counters!r}")
    known = _counter_fields()
    values: dict[str, Any] = {}
    for key, value in counters.items():
        if key not in known:
            raise UserError(f"{where}: counters.{key}: unknown counter; expected one of {', '.join(known)}")
        if key == "destination_seen_today":
            if not isinstance(value, bool):
                raise UserError(f"{where}: counters.{key}: expected true or false, got {value!r}")
        elif key == "credits_balance" and value is None:
            pass
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or value < 0
        ):
            # JSON accepts NaN and Infinity; a NaN counter would pass every guard.
            raise UserError(f"{where}: counters.{key}: expected a number >= 0, got {value!r}")
        elif key.startswith(("concurrent_", "calls_", "distinct_")) and not isinstance(value, int):
            raise UserError(f"{where}: counters.{key}: expected a whole number, got {value!r}")
        values[key] = value
    return snapshot_type(**values)


def _when(at: str | None, request: Any, settings: Any, where: str) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise UserError(
            f"{where}: 'at': expected an ISO 8601 date-time such as 2018-06-30T23:59:59+02:00, got {at!r}"
        ) from None
    # The organiser's tenant time (UTC if the organiser is unknown): naive
    # times are read in it, and the policy reckons days and months in it.
    org = settings.organizer(request.organizer) if request.organizer else None
    tz = org.tenant.tz if org is not None else UTC
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    try:
        when.astimezone(UTC)
        when.astimezone(tz)
    except OverflowError:
        # Near year 1 or 9999 an offset can push the instant out of datetime's range.
        raise UserError(
            f"{where}: 'at': {at!r} is out of range: in UTC or in the tenant's timezone ({tz}) "
            "it falls before year 1 or after year 9999"
        ) from None
    return when


# --- output: JSON for scripts, a readable verdict for people ---------------------------------


class _Output:
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
