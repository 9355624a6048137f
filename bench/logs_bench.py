"""Benchmark: `dialout-gw logs FILE summary` over a million log lines.

    .venv/bin/python bench/logs_bench.py [--lines 1000000] [--keep DIR]

Generates a realistic gateway log: canonical call lines (allowed and denied
with their trace, varied reasons, tenants, organisers and regions), pjsip
lines, admission refusals, per-call events (call_cut, reinvite_relayed,
grant_extended), lifecycle lines and a little non-JSON noise; writes it plain
and gzip, then times `summary` in-process (`ops.logs`) and through
the CLI (`python -m gateway.cli logs FILE summary --json`, so interpreter
start-up and imports are included), and `call CALL-ID` through the CLI.

Writes bench/reports/logs_bench.json and prints a table. Target: a million
lines in under 5 s through the CLI, plain and gzip ("a million lines in
seconds", issue 6). Each row also gives the CPU seconds of the best run
(this process, its workers, the CLI and its workers), which a shared
machine disturbs less than the wall clock.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops import logs as la  # noqa: E402

TARGET_S_PER_MILLION = 5.0
REPORT = ROOT / "bench" / "reports" / "logs_bench.json"

TENANTS = {
    "contoso": ("Europe/Paris", ["alice", "bob", "chloe", "dmitri", "hugo", "ines", "jules", "karim"]),
    "fabrikam": ("America/New_York", ["erin", "frank", "grace", "henry", "isla", "jack"]),
    "northwind": ("Europe/Berlin", ["anna", "ben", "clara", "dirk"]),
    "tailspin": ("Asia/Tokyo", ["aiko", "haruto", "yui"]),
}
# region, sample E.164, number_type, weight
DESTINATIONS = [
    ("FR", "+33142685300", "fixed_line", 30),
    ("FR", "+33612345678", "mobile", 12),
    ("US", "+12122001234", "fixed_line_or_mobile", 20),
    ("DE", "+4930901820", "fixed_line", 10),
    ("GB", "+442079460958", "fixed_line", 8),
    ("JP", "+81312345678", "fixed_line", 5),
    ("AU", "+61293744000", "fixed_line", 3),
    ("JM", "+18762091234", "fixed_line_or_mobile", 2),
    ("CU", "+5372345678", "fixed_line", 1),
    ("ZW", "+263242123456", "fixed_line", 1),
]
# reason, decision, bridge status, weight
OUTCOMES = [
    ("allowed", "allow", 200, 600),
    ("trunk_failure", "allow", 486, 40),
    ("trunk_timeout", "allow", 408, 15),
    ("duration_exhausted", "allow", 200, 10),
    ("no_entitlement", "deny", 403, 80),
    ("not_domestic", "deny", 403, 50),
    ("outside_zone_a", "deny", 403, 30),
    ("destination_blocked", "deny", 403, 25),
    ("number_invalid", "deny", 484, 40),
    ("organizer_unknown", "deny", 403, 20),
    ("organizer_missing", "deny", 403, 5),
    ("no_audio_conferencing", "deny", 403, 15),
    ("dialout_disabled", "deny", 403, 10),
    ("limit_rate", "deny", 480, 12),
    ("limit_concurrency", "deny", 480, 8),
    ("fraud_suspected", "deny", 403, 5),
]
PJSIP_MESSAGES = [
    'sip_endpoint.c .Module "mod-pjsua" registered',
    "pjsua_call.c !Making call with acc #0 to sip:+{n}@127.0.0.1:5070;user=phone",
    "sip_transport.c .Transport 0x7f3c4c00 shutting down, refcnt=0",
    "pjsua_core.c .TX 512 bytes Response msg 403/INVITE/cseq=1 (tdta0x55d1) to UDP 10.0.0.5:5060",
    "tsx0x7f3c48 .Timeout timer event",
    "sip_inv.c .Received 200/INVITE on dialog with no local answer",
    "pjsua_media.c ..Call {cid}: media transport updated",
]
ADMISSION = [("untrusted_source", 403), ("overloaded", 503), ("draining", 503), ("tls_required", 403)]


def _weighted(rng, table, weight_index=-1):
    return rng.choices(table, weights=[row[weight_index] for row in table])[0]


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def call_line(rng: random.Random, i: int, now: datetime) -> tuple[str, str]:
    tenant = rng.choice(list(TENANTS))
    _, users = TENANTS[tenant]
    organizer = f"{rng.choice(users)}@{tenant}.com"
    region, e164, number_type, _ = _weighted(rng, DESTINATIONS)
    reason, decision, status, _ = _weighted(rng, OUTCOMES)
    call_id = f"{i}-{rng.randrange(10**6)}@10.0.{i % 256}.{rng.randrange(256)}"
    allowed = decision == "allow"
    answered = allowed and status == 200
    setup = round(rng.lognormvariate(1.8, 0.6) if not allowed else rng.lognormvariate(7.5, 0.7), 2)
    talk = round(rng.expovariate(1 / 900), 3) if answered else 0.0
    units = int(talk // 60) + (1 if talk % 60 else 0) if answered else 0
    explanation = (
        f"organiser {organizer} has policy tag:DialoutCPCDomesticPSTNInternational (usage location "
        f"{region}); {e164} is in {region} ({number_type})"
    )
    fields = {
        "component": "gateway",
        "call_id": call_id,
        "tenant": tenant,
        "organizer": organizer if reason != "organizer_missing" else None,
        "meeting": f"meeting-{rng.randrange(50_000)}",
        "initiator": f"initiator-{rng.randrange(5_000)}@example.com",
        "location": region,
        "dialled": e164,
        "destination": e164 if reason != "number_invalid" else None,
        "region": region if reason != "number_invalid" else None,
        "number_type": number_type,
        "decision": decision,
        "reason": reason,
        "bucket": "tenant_pool" if allowed else None,
        "fallback_buckets": ["credits"] if allowed else [],
        "max_duration_s": 14400 if allowed else None,
        "bridge_status": status,
        "trunk_status": status if allowed else None,
        "setup_ms": setup,
        "talk_s": talk,
        "billed_units": units,
        "charges": {"tenant_pool": float(units)} if units else {},
        "ended_by": rng.choice(["bridge", "trunk"]) if answered else None,
        "explanation": explanation + ("; charged to tenant_pool for up to 14400 s" if allowed else ""),
    }
    if not allowed:
        fields["trace"] = [
            f"organiser {organizer} of tenant {tenant}; local time {now.isoformat()}",
            f"'{e164}' \u2192 {e164}, region {region}",
            number_type,
            "Audio Conferencing subscription",
            f"{reason}: the rule that said no",
        ]
    fields.update(event="call", level="info", timestamp=_ts(now))
    return json.dumps(fields), call_id


def generate(path: Path, n: int, seed: int = 11) -> dict:
    """Write n lines; return what was written, for checking the summary."""
    rng = random.Random(seed)
    t = datetime(2026, 11, 1, tzinfo=UTC)
    counts = {"call": 0, "admission_refused": 0, "pjsip": 0, "event": 0, "non_json": 0}
    sample_call_id = None
    with path.open("w", buffering=1 << 22) as out:
        for i in range(n):
            t += timedelta(microseconds=rng.randrange(1, 5000))
            roll = rng.random()
            if roll < 0.60:
                line, cid = call_line(rng, i, t)
                if i > n // 2 and sample_call_id is None:
                    sample_call_id = cid
                counts["call"] += 1
            elif roll < 0.90:
                msg = rng.choice(PJSIP_MESSAGES).format(n=rng.randrange(10**9), cid=rng.randrange(4000))
                line = json.dumps(
                    {
                        "component": "pjsip",
                        "message": msg,
                        "pj_level": rng.choice([1, 2, 3]),
                        "event": "pjsip",
                        "level": rng.choice(["error", "warning", "info"]),
                        "timestamp": _ts(t),
                    }
                )
                counts["pjsip"] += 1
            elif roll < 0.93:
                reason, status = rng.choice(ADMISSION)
                line = json.dumps(
                    {
                        "component": "gateway",
                        "source": f"203.0.113.{rng.randrange(256)}",
                        "reason": reason,
                        "status": status,
                        "explanation": f"refused: {reason}",
                        "suppressed_since_last": rng.choice([0, 0, 0, 3, 12]),
                        "transport": "udp",
                        "event": "admission_refused",
                        "level": "warning",
                        "timestamp": _ts(t),
                    }
                )
                counts["admission_refused"] += 1
            elif roll < 0.995:
                kind = rng.choice(["call_cut", "reinvite_relayed", "grant_extended", "config_reloaded"])
                extra = {
                    "call_cut": {"reason": "duration_exhausted", "detail": "the authorised duration is used up"},
                    "reinvite_relayed": {"direction": "bridge->trunk", "hold": False},
                    "grant_extended": {"bucket": "tenant_pool", "granted_s": 600},
                    "config_reloaded": {"organizers": 40, "tenants": 4},
                }[kind]
                line = json.dumps(
                    {
                        "component": "gateway",
                        "call_id": f"{i}-x@10.0.0.1",
                        **extra,
                        "event": kind,
                        "level": "info",
                        "timestamp": _ts(t),
                    }
                )
                counts["event"] += 1
            else:
                line = rng.choice(
                    [
                        "Traceback (most recent call last):",
                        '  File "<frozen>", line 1',
                        "pjsua_core.c  Shutting down...",
                        "18:01:02.123 os_core_unix.c !pjlib 2.14",
                    ]
                )
                counts["non_json"] += 1
            out.write(line)
            out.write("\n")
    counts["sample_call_id"] = sample_call_id
    return counts


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (workers, the CLI
    and its workers): on a shared machine it varies less than the wall clock."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_in_process(path: Path, jobs: int) -> tuple[float, la.Summary, float]:
    started, cpu = time.perf_counter(), _cpu_s()
    summary = la.summarize_path(str(path), jobs=jobs)
    return time.perf_counter() - started, summary, _cpu_s() - cpu


def time_cli(args: list[str]) -> tuple[float, str, float]:
    started, cpu = time.perf_counter(), _cpu_s()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "logs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.stdout, _cpu_s() - cpu


def best_of(fn, repeat: int):
    best = None
    for _ in range(repeat):
        result = fn()
        if best is None or result[0] < best[0]:
            best = result
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per row")
    parser.add_argument("--keep", metavar="DIR", help="write the generated logs here and keep them")
    args = parser.parse_args()

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="logs-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        plain = workdir / "gateway.log"
        packed = workdir / "gateway.log.1"  # gzip without a .gz name: detected by magic bytes
        t0 = time.perf_counter()
        counts = generate(plain, args.lines)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with plain.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        gzip_s = time.perf_counter() - t0

        rows = []
        summaries = {}
        jobs = la.default_jobs()
        for label, path in (("plain", plain), ("gzip", packed)):
            seconds, summary, cpu = best_of(lambda p=path: time_in_process(p, 1), args.repeat)
            summaries[label] = summary
            rows.append({"mode": "in-process summary, 1 process", "input": label, "seconds": seconds, "cpu_s": cpu})
            seconds, summary, cpu = best_of(lambda p=path: time_in_process(p, jobs), args.repeat)
            assert summary.to_dict() == summaries[label].to_dict()
            rows.append(
                {"mode": f"in-process summary, --jobs {jobs}", "input": label, "seconds": seconds, "cpu_s": cpu}
            )
            seconds, _, cpu = best_of(lambda p=path: time_cli([str(p), "summary", "--json"]), args.repeat)
            rows.append({"mode": "CLI summary --json (default jobs)", "input": label, "seconds": seconds, "cpu_s": cpu})
        seconds, _, cpu = best_of(
            lambda: time_cli(
                [str(plain), "summary", "--json", "--tenant", "contoso", "--since", "2026-11-01T00:10:00Z"]
            ),
            args.repeat,
        )
        rows.append({"mode": "CLI summary --tenant --since", "input": "plain", "seconds": seconds, "cpu_s": cpu})
        seconds, out, cpu = best_of(
            lambda: time_cli([str(plain), "call", counts["sample_call_id"], "--json"]), args.repeat
        )
        rows.append({"mode": "CLI call CALL-ID", "input": "plain", "seconds": seconds, "cpu_s": cpu})

        n = args.lines
        for row in rows:
            row["lines_per_s"] = round(n / row["seconds"])
            row["s_per_million"] = round(row["seconds"] * 1_000_000 / n, 3)
            row["seconds"] = round(row["seconds"], 3)
            row["cpu_s"] = round(row["cpu_s"], 3)

        s = summaries["plain"]
        correct = (
            s.calls == counts["call"]
            and s.refusal_lines == counts["admission_refused"]
            and s.non_json == counts["non_json"]
            and s.malformed == 0
            and s.lines == n
            and summaries["gzip"].to_dict() == s.to_dict()
            and json.loads(out)["found"]
        )
        worst = max(r["s_per_million"] for r in rows if r["mode"].startswith("CLI summary"))
        report = {
            "benchmark": "logs_summary",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "jobs": la.default_jobs(),
            "load_avg_at_start": load_at_start,
            "workload": {
                "lines": n,
                "written": {k: v for k, v in counts.items() if k != "sample_call_id"},
                "plain_bytes": plain.stat().st_size,
                "gzip_bytes": packed.stat().st_size,
                "generate_s": round(gen_s, 1),
                "gzip_s": round(gzip_s, 1),
            },
            "runs": rows,
            "summary_check": {
                "calls": s.calls,
                "relayed": s.relayed,
                "rejected": s.rejected,
                "admission_refusal_lines": s.refusal_lines,
                "non_json": s.non_json,
                "setup_ms": s.to_dict()["setup_ms"]["all"],
                "matches_generator": correct,
            },
            "targets": {"cli_s_per_million": TARGET_S_PER_MILLION},
            "pass": bool(correct and worst <= TARGET_S_PER_MILLION),
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")

        print(
            f"logs bench: {n:,} lines ({counts['call']:,} call lines), plain {plain.stat().st_size / 1e6:,.0f} MB, "
            f"gzip {packed.stat().st_size / 1e6:,.0f} MB; best of {args.repeat}"
        )
        print(f"{la.default_jobs()} worker process(es) available; load average at start {load_at_start}")
        print(f"{'mode':<36} {'input':<6} {'seconds':>8} {'s/million':>10} {'lines/s':>12} {'cpu s':>7}")
        for r in rows:
            print(
                f"{r['mode']:<36} {r['input']:<6} {r['seconds']:>8.2f} {r['s_per_million']:>10.2f} "
                f"{r['lines_per_s']:>12,} {r['cpu_s']:>7.2f}"
            )
        print(
            f"summary matches the generator: {correct}; target <= {TARGET_S_PER_MILLION} s/million via CLI: "
            f"{'pass' if report['pass'] else 'FAIL'}"
        )
        print(f"report: {REPORT.relative_to(ROOT)}")
        return 0 if report["pass"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
