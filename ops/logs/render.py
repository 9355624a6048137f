"""The human forms of `summary` and `call CALL-ID` (`--json` prints the dicts instead)."""

from __future__ import annotations

import json
from typing import Any

from ops.logs.lookup import CallReport

# Keys of an event line that the readable timeline does not repeat.
_COMMON_KEYS = frozenset(("event", "timestamp", "level", "component", "call_id"))


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
    out = [
        f"{name}: {_n(lines_info['total'])} lines, {_n(lines_info['non_json'])} not JSON, "
        f"{_n(lines_info['malformed'])} malformed"
    ]
    active = {k: v for k, v in d["filters"].items() if v is not None}
    if active:
        out.append(
            "filters: "
            + "  ".join(f"--{k} {v}" for k, v in active.items())
            + f"  ({_n(lines_info['filtered_out'])} lines filtered out)"
        )
    if d["period"]["first"]:
        out.append(f"period: {d['period']['first']} .. {d['period']['last']}")
    out.append("")
    out.append(f"calls               {_n(total):>10}")
    out.append(
        f"  relayed (allow)   {_n(calls['relayed']):>10}  {_pct(calls['relayed'], total)}"
        f"   answered {_n(calls['answered'])}"
    )
    out.append(f"  rejected (deny)   {_n(calls['rejected']):>10}  {_pct(calls['rejected'], total)}")
    adm = d["admission_refusals"]
    note = (
        f"  ({_n(adm['lines'])} logged, {_n(adm['total'] - adm['lines'])} counted in suppressed_since_last)"
        if adm["total"] > adm["lines"]
        else ""
    )
    out.append(f"admission refusals  {_n(adm['total']):>10}{note}")
    out.append("")
    setup = d["setup_ms"]
    out.append("setup time (ms)")
    out += _table(
        ["calls", "count", "p50", "p99", "max"],
        [
            [label, _n(setup[k]["count"]), setup[k]["p50"], setup[k]["p99"], setup[k]["max"]]
            for label, k in (("all", "all"), ("relayed", "relayed"), ("rejected", "rejected"))
        ],
    )
    out.append("")
    out.append("top reasons")
    out += _table(
        ["reason", "calls", "share"], [[r["reason"], _n(r["calls"]), _pct(r["calls"], total)] for r in d["reasons"]]
    )
    for title, key, col in (("top tenants", "tenants", "tenant"), ("top organisers", "organizers", "organizer")):
        out.append("")
        out.append(title)
        out += _table(
            [col, "calls", "relayed", "rejected", "billed_units", "talk_min"],
            [
                [
                    r[col],
                    _n(r["calls"]),
                    _n(r["relayed"]),
                    _n(r["rejected"]),
                    _n(r["billed_units"]),
                    f"{r['talk_s'] / 60:,.1f}",
                ]
                for r in d[key]
            ],
        )
    out.append("")
    out.append("top destination regions")
    out += _table(
        ["region", "calls", "relayed", "rejected"],
        [[r["region"], _n(r["calls"]), _n(r["relayed"]), _n(r["rejected"])] for r in d["regions"]],
    )
    out += _trunks(d.get("trunks"))
    if adm["by_reason"]:
        out.append("")
        out.append("admission refusals by reason")
        out += _table(["reason", "refusals"], [[r, _n(n)] for r, n in adm["by_reason"].items()])
    return "\n".join(out) + "\n"


def _trunks(t: dict[str, Any] | None) -> list[str]:
    """Per-trunk attempts, answers, ASR and failovers; nothing when no call reached a trunk."""
    if not t or not t["calls"]:
        return []
    calls = f"{_n(t['calls'])} call{'s' if t['calls'] != 1 else ''}"
    out = [
        "",
        f"trunks  ({calls} reached a trunk; {_n(t['failover_calls'])} failed over, "
        f"{_n(t['failover_answered'])} of them answered)",
    ]
    out += _table(
        ["trunk", "attempts", "answered", "ASR", "failed over from", "failed over to", "final", "failures"],
        [
            [
                r["trunk"],
                _n(r["attempts"]),
                _n(r["answers"]),
                _pct(r["answers"], r["attempts"]),
                _n(r["failed_over_from"]),
                _n(r["failed_over_to"]),
                _n(r["final"]),
                ", ".join(f"{cls} {_n(n)}" for cls, n in r["failures"].items()) or "-",
            ]
            for r in t["trunks"]
        ],
    )
    if t["failovers"]:
        out.append("")
        out.append("failovers")
        out += _table(["from", "to", "calls"], [[f["from"], f["to"], _n(f["calls"])] for f in t["failovers"]])
    return out


_CALL_FIELDS = (
    ("tenant", "tenant"),
    ("organizer", "organiser"),
    ("meeting", "meeting"),
    ("initiator", "initiator"),
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
        out.append(
            f"  timing        setup {_v(e.get('setup_ms'))} ms, talk {_v(e.get('talk_s'))} s, "
            f"ended by {_v(e.get('ended_by'))}"
        )
        charges = e.get("charges") or {}
        out.append(
            f"  billed        {_v(e.get('billed_units'))} unit(s)"
            + ("  " + ", ".join(f"{k} {v}" for k, v in charges.items()) if charges else "")
        )
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
