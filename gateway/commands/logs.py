"""`dialout-gw logs`: why was this call rejected, who is burning the pool?

A thin CLI over `ops.logs` (pure, no pjsua2), so it runs anywhere the log
file is, without the SIP stack.
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.cli import UserError

DESCRIPTION = """\
Read the gateway's JSON log (plain or gzip, detected by its magic bytes; '-'
reads stdin) and answer operator questions from the canonical per-call lines
("event": "call") and the admission_refused lines. Non-JSON lines are counted
and otherwise ignored.

  summary          calls, relay/reject ratio, top reasons, tenants, organisers
                   and destination regions, p50/p99 setup time, per-trunk
                   attempts, answers, ASR and failovers, admission refusals
  call CALL-ID     every line about one SIP Call-ID: the canonical line with its
                   decision trace, and the other events of that call

Filters apply to both: --tenant and --reason match the canonical line's fields;
--since (inclusive) and --until (exclusive) take ISO 8601, UTC when no offset
is given. Admission refusals carry no tenant, so --tenant leaves them out.
"""

EPILOG = """\
examples:
  dialout-gw logs /var/log/dialout-gw/gateway.log summary
  dialout-gw logs gateway.log.1.gz summary --tenant contoso --since 2026-11-01 --until 2026-12-01
  journalctl -u dialout-gw -o cat | dialout-gw logs - summary --reason no_entitlement --json
  dialout-gw logs gateway.log call 1-30465@127.0.0.1

exit codes: 0 ok, 1 no line about that call, 2 bad usage or unreadable input.
"""


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", metavar="T", help="only calls of this tenant id")
    parser.add_argument("--since", metavar="ISO", help="only lines at or after this time (UTC if no offset)")
    parser.add_argument("--until", metavar="ISO", help="only lines before this time (UTC if no offset)")
    parser.add_argument("--reason", metavar="R", help="only calls (and admission refusals) with this reason code")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="summarise the gateway's JSON log, or show everything about one call",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE|-", help="log file (plain or gzip), or '-' for stdin")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    summary = actions.add_parser(
        "summary",
        help="calls, ratios, top reasons/tenants/organisers/regions, setup time, trunks",
        description="Summarise the calls in the log.",
    )
    _add_filters(summary)
    summary.add_argument("--top", type=int, default=10, metavar="N", help="rows per top-N table (default 10; 0 = all)")
    summary.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="worker processes that parse the log (default: the CPUs available, at most 8; 1 = this process only)",
    )
    call = actions.add_parser(
        "call",
        help="every line about one call, with its decision trace",
        description="Show everything the log says about one SIP Call-ID.",
    )
    call.add_argument("call_id", metavar="CALL-ID", help="the SIP Call-ID (the call_id field of the log lines)")
    _add_filters(call)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ops import logs as la

    if not args.action:
        raise UserError("say what to do: summary, or call CALL-ID (see dialout-gw logs --help)")
    try:
        filters = la.Filters.from_strings(args.tenant, args.since, args.until, args.reason)
        if args.action == "summary":
            if args.top < 0:
                raise UserError(f"--top: expected a number >= 0, got {args.top}")
            if args.jobs is not None and args.jobs < 1:
                raise UserError(f"--jobs: expected a number >= 1, got {args.jobs}")
            summary = la.summarize_path(args.file, filters, jobs=args.jobs or la.default_jobs())
            data = summary.to_dict(top=args.top)
            if args.json:
                _print_json(data)
            else:
                sys.stdout.write(la.format_summary(data, "<stdin>" if args.file == "-" else args.file))
            return 0
        report = la.find_call_path(args.file, args.call_id, filters)
    except la.LogInputError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        _print_json(report.to_dict())
    elif report.found:
        sys.stdout.write(la.format_call(report))
    if not report.found:
        where = " matching the filters" if filters.active else ""
        print(
            f"dialout-gw logs: no line about call {args.call_id!r}{where} in "
            f"{'<stdin>' if args.file == '-' else args.file} ({report.lines:,} lines read)",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
