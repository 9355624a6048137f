"""Per-call cost of the store: open_call + answered + close_call, and the rest.

    .venv/bin/python bench/store_bench.py [--calls N] [--pg-url URL] [--no-pg]

Runs against a SQLite file (WAL, synchronous=NORMAL) and, unless --no-pg, a
PostgreSQL server (--pg-url, $DIALOUT_TEST_PG_URL, or a throw-away one from
scripts/pg_test_server.sh). Measures wall and CPU time per operation in this
process; PostgreSQL's own CPU is on the server side and shows in wall time.
Writes bench/reports/store_bench.json and prints a table. The gateway's budget
is about 1 ms CPU per relayed call, everything included; the store's target
is open_call + answered + close_call < 0.3 ms on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store import BucketSpec, CallOpen, open_store  # noqa: E402

T0 = datetime(2018, 7, 10, 12, 0, tzinfo=timezone.utc)
TARGET_MS = 0.3


class NullLog:
    def _drop(self, *a, **k):
        return None

    debug = info = warning = error = _drop


def bench(url: str, calls: int) -> dict:
    store = open_store(url, instance_id="bench", log=NullLog())
    store.migrate()
    chain = (BucketSpec("tenant_pool", 10_000_000.0), BucketSpec("credits", 1e9, 0.02))
    reqs = [CallOpen(f"call-{i}", f"tenant-{i % 20}", f"org-{i % 500}", f"+3314268{i % 10000:04d}", "FR",
                     "Europe/Paris", T0 + timedelta(seconds=i * 0.01), chain) for i in range(calls)]
    # Warm up statement caches and prepared statements.
    for r in reqs[:50]:
        store.open_call(r)
        store.answered(r.call_id, r.started_at)
        store.close_call(r.call_id, r.started_at + timedelta(seconds=61), "normal")
    reqs = reqs[50:]
    timings: dict[str, list[float]] = {k: [0.0, 0.0] for k in ("snapshot", "open_call", "answered", "extend", "close_call")}

    def timed(name, fn, *args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        timings[name][0] += time.perf_counter() - w
        timings[name][1] += time.process_time() - c
        return out

    live = []
    for i, r in enumerate(reqs):
        timed("snapshot", store.snapshot, tenant=r.tenant, organizer=r.organizer, e164=r.e164, tz=r.tz, now=r.started_at)
        timed("open_call", store.open_call, r)
        timed("answered", store.answered, r.call_id, r.started_at)
        live.append(r)
        if len(live) > 100:  # keep ~100 calls up, like a busy gateway
            old = live.pop(0)
            if i % 10 == 0:
                timed("extend", store.extend, old.call_id, old.started_at + timedelta(seconds=280))
            timed("close_call", store.close_call, old.call_id, old.started_at + timedelta(seconds=125), "normal")
    ids = [r.call_id for r in live]
    w, c = time.perf_counter(), time.process_time()
    store.heartbeat(ids, T0 + timedelta(seconds=30))
    hb = {"calls": len(ids), "wall_ms": (time.perf_counter() - w) * 1e3, "cpu_ms": (time.process_time() - c) * 1e3}
    for r in live:
        timed("close_call", store.close_call, r.call_id, r.started_at + timedelta(seconds=125), "normal")
    n = len(reqs)
    counts = {"snapshot": n, "open_call": n, "answered": n, "close_call": n,
              "extend": sum(1 for i in range(n) if i % 10 == 0 and i >= 101) or 1}
    per = {k: {"wall_ms": v[0] / counts[k] * 1e3, "cpu_ms": v[1] / counts[k] * 1e3} for k, v in timings.items()}
    core = {m: sum(per[k][m] for k in ("open_call", "answered", "close_call")) for m in ("wall_ms", "cpu_ms")}
    store.close()
    return {"calls": n, "per_op": per, "open_answer_close": core, "heartbeat_100_calls": hb}


def pg_url(args) -> tuple[str | None, dict | None]:
    if args.no_pg:
        return None, None
    url = args.pg_url or os.environ.get("DIALOUT_TEST_PG_URL")
    if url:
        return url, None
    env = dict(os.environ, DIALOUT_PG_DIR=tempfile.mkdtemp(prefix="dialout-pg-bench-") + "/srv")
    os.chmod(os.path.dirname(env["DIALOUT_PG_DIR"]), 0o755)
    out = subprocess.run([str(ROOT / "scripts" / "pg_test_server.sh"), "start"], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1], env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--pg-url")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = bench(f"sqlite:///{tmp}/bench.db", args.calls)
    url, env = pg_url(args)
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS store_bench CASCADE")
            conn.execute("CREATE SCHEMA store_bench")
        sep = "&" if "?" in url else "?"
        try:
            results["postgresql"] = bench(f"{url}{sep}options=-csearch_path%3Dstore_bench", max(500, args.calls // 3))
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS store_bench CASCADE")
            if env:
                subprocess.run([str(ROOT / "scripts" / "pg_test_server.sh"), "stop"], env=env, capture_output=True)
                try:
                    os.rmdir(os.path.dirname(env["DIALOUT_PG_DIR"]))
                except OSError:
                    pass
    report = {
        "benchmark": "store_bench",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "target_open_answer_close_ms_sqlite": TARGET_MS,
        "results": results,
    }
    out = ROOT / "bench" / "reports" / "store_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'backend':<11} {'operation':<20} {'wall ms':>9} {'cpu ms':>9}")
    for backend, r in results.items():
        for op, v in r["per_op"].items():
            print(f"{backend:<11} {op:<20} {v['wall_ms']:>9.3f} {v['cpu_ms']:>9.3f}")
        core = r["open_answer_close"]
        print(f"{backend:<11} {'open+answer+close':<20} {core['wall_ms']:>9.3f} {core['cpu_ms']:>9.3f}")
        hb = r["heartbeat_100_calls"]
        print(f"{backend:<11} {'heartbeat x' + str(hb['calls']):<20} {hb['wall_ms']:>9.3f} {hb['cpu_ms']:>9.3f}")
    sqlite_core = results["sqlite"]["open_answer_close"]["cpu_ms"]
    verdict = "meets" if sqlite_core < TARGET_MS else "MISSES"
    print(f"sqlite open+answer+close {sqlite_core:.3f} ms CPU {verdict} the {TARGET_MS} ms target; report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
