"""`dialout-gw usage`: pool, credits and add-on minutes per tenant and month."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC

from gateway.cli import UserError

DESCRIPTION = """\
Report usage from the ledger named by [store] url in the config: per tenant
and month, the pool size (60 min x subscription licences), minutes used,
reserved by live calls and remaining; Communications Credits spent and left;
US/Canada add-on minutes (counted for fair use, not deducted); the number of
calls; the top organisers and destinations by billed minutes; and the alerts
raised. Months are calendar months in the tenant's timezone (default: the
current one). Reads only; a relative sqlite:/// path is resolved against the
current directory.

Prints a readable report, one block per tenant; --format json (or --json)
prints one JSON document instead, for scripts.
"""

EPILOG = """\
examples:
  dialout-gw usage --config examples/gateway.toml
  dialout-gw usage --config examples/gateway.toml --tenant contoso --month 2018-07
  dialout-gw usage --config examples/gateway.toml --format json | jq '.tenants[].pool'

exit codes: 0 ok, 1 the database cannot be read, 2 bad usage, bad configuration or unknown tenant.
"""

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "usage",
        help="pool, credits and add-on usage per tenant and month",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config file")
    parser.add_argument("--tenant", metavar="ID", help="one tenant (default: every tenant known or seen)")
    parser.add_argument("--month", metavar="YYYY-MM", help="calendar month in the tenant's timezone (default: current)")
    parser.add_argument(
        "--top", type=int, default=5, metavar="N", help="how many organisers and destinations to list (default 5)"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a readable report (the default, on a terminal or not); json: one JSON document",
    )
    parser.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from gateway.commands.db import run_with_store

    if args.month is not None and not MONTH.match(args.month):
        raise UserError(f"--month: expected YYYY-MM, e.g. 2018-07, got {args.month!r}")
    if args.top < 1:
        raise UserError(f"--top: expected a positive number, got {args.top}")

    def fn(cfg, store) -> int:
        if store.schema_version() == 0:
            raise UserError(f"the ledger database has no schema yet; run: dialout-gw db upgrade --config {args.config}")
        tenants = dict(getattr(cfg.policy, "tenants", {}) or {})
        tenant = args.tenant
        if tenant is not None and tenant.strip().casefold() in tenants:
            tenant = tenants[tenant.strip().casefold()].id
        pool_per_licence = getattr(getattr(cfg.policy, "catalogue", None), "pool_minutes_per_subscription", 60)
        report = store.usage_report(
            tenant=tenant,
            month=args.month,
            tenants_config=tenants,
            top=args.top,
            pool_minutes_per_licence=pool_per_licence,
        )
        if tenant is not None:
            entry = report["tenants"][0]
            if not entry["known"] and entry["calls"]["total"] == 0 and not entry["pool"]["size_minutes"]:
                known = ", ".join(sorted(t.id for t in tenants.values())) or "none"
                raise UserError(f"--tenant: unknown tenant {args.tenant!r} (known: {known})")
        if args.format == "json":
            print(json.dumps(report, indent=2, sort_keys=True))
        else:
            print(format_report(report))
        return 0

    return run_with_store(args.config, "usage", fn)


def _n(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


ALERTS = {"pool_80": "pool 80 % used", "pool_100": "pool used up", "credits_low": "credits low"}


def _alert(alert: dict, tz: str | None) -> str:
    text = ALERTS.get(alert.get("kind"), str(alert.get("kind")))
    at = alert.get("at")
    if isinstance(at, int | float):
        from datetime import datetime

        try:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(tz) if tz else UTC
        except (KeyError, ValueError, OSError):
            zone = UTC
        try:
            text += f" (since {datetime.fromtimestamp(at, zone):%Y-%m-%d %H:%M})"
        except (OverflowError, OSError, ValueError):
            pass
    return text


def _table(headers: tuple[str, ...], rows: list[tuple], indent: str = "  ", first: int = 0) -> list[str]:
    """Left-aligned first column (at least `first` wide), right-aligned numbers, a header line."""
    cells = [headers] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    widths[0] = max(widths[0], first)
    return [
        indent + "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()
        for row in cells
    ]


def format_report(report: dict) -> str:
    """The readable form of `usage_report()`: one block per tenant, then its top lists as tables."""
    if not report["tenants"]:
        return "no tenants in the config and no usage in the ledger"
    blocks = []
    for t in report["tenants"]:
        pool, credits, calls = t["pool"], t["credits"], t["calls"]
        lines = [f"tenant {t['tenant']}   month {t['period']} ({t['timezone']})"]
        pct = "" if pool["percent_used"] is None else f" ({pool['percent_used']:.1f} % used)"
        lines.append(
            f"  pool        {_n(pool['size_minutes'])} min   used {_n(pool['used_minutes'])}{pct}"
            f"   reserved {_n(pool['reserved_minutes'])}   remaining {_n(pool['remaining_minutes'])}"
        )
        if credits["enabled"]:
            lines.append(
                f"  credits     enabled   left {_n(credits['left'], 2)} of {_n(credits['balance'], 2)}"
                f"   reserved {_n(credits['reserved'], 2)}   spent {_n(credits['spent_this_month'], 2)}"
                f" this month, {_n(credits['spent_total'], 2)} in all"
            )
        else:
            lines.append(f"  credits     disabled   balance {_n(credits['balance'], 2)}")
        lines.append(f"  add-on      {_n(t['addon_minutes'])} min to US/Canada (fair use, not deducted)")
        promotion = t.get("promotion") or {}
        if promotion.get("used_minutes"):
            cap = promotion.get("cap_minutes")
            lines.append(
                f"  promotion   {_n(promotion['used_minutes'])} min" + (f" of {_n(cap)}" if cap is not None else "")
            )
        lines.append(
            f"  calls       {_plural(calls['total'], 'call')}: {calls['answered']:,} answered,"
            f" {calls['live']:,} live   talk {_n(calls['talk_minutes'])} min"
            f"   billed {_n(calls['billed_minutes'])} min"
        )
        if t["alerts"]:
            lines.append("  alerts      " + "; ".join(_alert(a, t.get("timezone")) for a in t["alerts"]))
        tops = (
            ("top organisers", t["top_organizers"], "organizer"),
            ("top destinations", t["top_destinations"], "e164"),
        )
        first = max([len(title) for title, _, _ in tops] + [len(r[key]) for _, rows, key in tops for r in rows])
        for title, rows, key in tops:
            if rows:
                lines.append("")
                lines += _table(
                    (title, "calls", "billed min"),
                    [(r[key], f"{r['calls']:,}", _n(r["billed_minutes"])) for r in rows],
                    first=first,
                )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
