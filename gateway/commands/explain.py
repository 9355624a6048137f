"""`dialout-gw explain`: what would the gateway decide for this call, and why?"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.cli import UserError
from gateway.commands.verdict import Output

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
    out = Output(sys.stdout, args.format or ("json" if args.pretty else None), indent=2 if args.pretty else None)

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


def _run_lines(lines: TextIO, name: str, settings: Any, out: Output) -> None:
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
