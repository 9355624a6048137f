"""Benchmark: policy decisions per second on one core, and p50/p99 latency.

    .venv/bin/python bench/policy_bench.py [--config examples/gateway.toml] [--seconds 3]

Runs `policy.decide` over a realistic mix of organisers, dialled strings and
counters from the example config, on one thread. Writes a JSON report to
bench/reports/policy_bench.json and prints a table. Targets: >= 20,000
decisions/s and p99 < 100 µs. Dialled strings repeat (meetings call the same
numbers again), so parsing is mostly served from the cache; a "cold" row
measures decisions whose number is parsed for the first time, and an "assess"
row the requests that `policy.assess` denies on its own (rules 2–6), which a
caller answers without reading any counter.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import load_config  # noqa: E402
from policy import CallRequest, Decision, Snapshot, assess, decide, normalize_destination  # noqa: E402

TARGET_RATE = 20_000
TARGET_P99_US = 100.0

# (weight, dialled) — mostly valid numbers in the tenants' markets, some junk.
NUMBERS = [
    (20, "+33 1 42 68 53 00"),
    (10, "01 42 68 53 00"),
    (6, "0033612345678"),
    (8, "+49 30 901820"),
    (15, "+1 212 200 1234"),
    (8, "(415) 555-2671"),
    (6, "011 44 20 7946 0958"),
    (4, "+44 7624 200123"),
    (3, "+1 876 209 1234"),
    (3, "+1 787 200 1234"),
    (3, "tel:+81-3-1234-5678"),
    (3, "+61 2 9374 4000"),
    (2, "+1 900 200 1234"),
    (2, "112"),
    (1, "911"),
    (2, "+54 11 2345 6789"),
    (1, "+53 7 123 4567"),
    (1, "12ab"),
    (1, ""),
    (1, "+"),
    (2, "tel:0142685300;phone-context=+33"),
    (2, "+263 24 2123456"),
]
ORGANIZERS = [
    (25, "alice@contoso.com"),
    (10, "bob@contoso.com"),
    (10, "chloe@contoso.com"),
    (3, "dmitri@contoso.com"),
    (25, "erin@fabrikam.com"),
    (10, "frank@fabrikam.com"),
    (5, "grace@fabrikam.com"),
    (2, "nobody@example.com"),
]


def _weighted(rng: random.Random, table, k: int):
    weights, values = zip(*table)
    return rng.choices(values, weights=weights, k=k)


def build_workload(n: int, seed: int = 7):
    rng = random.Random(seed)
    numbers = _weighted(rng, NUMBERS, n)
    organizers = _weighted(rng, ORGANIZERS, n)
    base = datetime(2018, 6, 1, tzinfo=UTC)
    work = []
    for i in range(n):
        request = CallRequest(
            organizer=organizers[i],
            dialled=numbers[i],
            initiator="guest@example.org",
            meeting=f"m{i % 500}",
            location=rng.choice([None, "FR", "US", "ZW"]),
        )
        busy = rng.random() < 0.05  # a few requests arrive at or beyond a guard limit
        snapshot = Snapshot(
            pool_used_minutes=rng.uniform(0, 1600),
            credits_balance=rng.choice([None, None, 0.0, 3.5, 50.0]),
            addon_used_minutes=rng.uniform(0, 11_000 if busy else 9_000),
            concurrent_organizer=rng.randint(8, 11) if busy else rng.randint(0, 3),
            concurrent_tenant=rng.randint(0, 310 if busy else 120),
            calls_last_minute_organizer=rng.randint(15, 22) if busy else rng.randint(0, 5),
            distinct_destinations_today=rng.randint(150, 210) if busy else rng.randint(0, 40),
            destination_seen_today=rng.random() < 0.5,
        )
        now = base + timedelta(seconds=rng.randint(0, 90 * 86400))  # straddles the 2018-06-30 boundary
        work.append((request, snapshot, now))
    return work


def percentile(sorted_values, q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "gateway.toml"))
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the throughput run")
    parser.add_argument("--report", default=str(ROOT / "bench" / "reports" / "policy_bench.json"))
    args = parser.parse_args()

    settings = load_config(args.config).policy
    work = build_workload(20_000)

    for request, snapshot, now in work[:2000]:  # warm-up (and fill the parse cache)
        decide(request, snapshot, now, settings)

    gc.collect()
    # Throughput: a tight loop for --seconds.
    done = 0
    n = len(work)
    start = time.perf_counter()
    deadline = start + args.seconds
    while True:
        for request, snapshot, now in work:
            decide(request, snapshot, now, settings)
        done += n
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    rate = done / elapsed

    # Latency: each decision timed on its own (warm cache).
    clock = time.perf_counter_ns
    samples = []
    for request, snapshot, now in work:
        t0 = clock()
        decide(request, snapshot, now, settings)
        samples.append((clock() - t0) / 1000)
    samples.sort()

    # Cold: numbers never seen before (cache miss → phonenumbers parse).
    cold = []
    for i in range(2000):
        request = CallRequest(
            organizer="alice@contoso.com", dialled=f"+33 1 {40 + i % 50:02d} {i // 50:02d} 53 {i % 97:02d}"
        )
        t0 = clock()
        decide(request, Snapshot(), work[i][2], settings)
        cold.append((clock() - t0) / 1000)
    cold.sort()

    # Cheap denials: what assess() refuses with no counters at all (the gateway's no-I/O path).
    denied_early = [(request, now) for request, _, now in work if isinstance(assess(request, now, settings), Decision)]
    early = []
    for request, now in denied_early:
        t0 = clock()
        assess(request, now, settings)
        early.append((clock() - t0) / 1000)
    early.sort()

    outcomes: dict[str, int] = {}
    for request, snapshot, now in work:
        reason = decide(request, snapshot, now, settings).reason.value
        outcomes[reason] = outcomes.get(reason, 0) + 1

    report = {
        "benchmark": "policy_decide",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "workload": {
            "requests": len(work),
            "distinct_numbers": len(NUMBERS),
            "organizers": len(ORGANIZERS),
            "outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])),
        },
        "throughput": {"decisions": done, "seconds": round(elapsed, 3), "decisions_per_s": round(rate)},
        "latency_us_warm": {
            "p50": round(percentile(samples, 0.50), 2),
            "p90": round(percentile(samples, 0.90), 2),
            "p99": round(percentile(samples, 0.99), 2),
            "max": round(samples[-1], 2),
            "mean": round(statistics.fmean(samples), 2),
        },
        "latency_us_cold_parse": {"p50": round(percentile(cold, 0.50), 2), "p99": round(percentile(cold, 0.99), 2)},
        "latency_us_assess_denials": {
            "requests": len(early),
            "p50": round(percentile(early, 0.50), 2),
            "p99": round(percentile(early, 0.99), 2),
        },
        "parse_cache": normalize_destination.cache_info()._asdict(),
        "targets": {"decisions_per_s": TARGET_RATE, "p99_us": TARGET_P99_US},
        "pass": rate >= TARGET_RATE and percentile(samples, 0.99) < TARGET_P99_US,
    }
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    w, c, e = report["latency_us_warm"], report["latency_us_cold_parse"], report["latency_us_assess_denials"]
    rows = [
        ("decisions/s (1 core)", f"{report['throughput']['decisions_per_s']:,}", f">= {TARGET_RATE:,}"),
        ("p50 latency", f"{w['p50']:.1f} µs", ""),
        ("p90 latency", f"{w['p90']:.1f} µs", ""),
        ("p99 latency", f"{w['p99']:.1f} µs", f"< {TARGET_P99_US:.0f} µs"),
        ("max latency", f"{w['max']:.1f} µs", ""),
        ("p50 / p99, number not cached", f"{c['p50']:.1f} / {c['p99']:.1f} µs", ""),
        (f"p50 / p99, assess denials ({e['requests'] / len(work):.0%})", f"{e['p50']:.1f} / {e['p99']:.1f} µs", ""),
    ]
    print(f"policy.decide, Python {report['python']}, {len(work):,} mixed requests")
    print(f"{'metric':<32}{'measured':>18}{'target':>14}")
    for name, value, target in rows:
        print(f"{name:<32}{value:>18}{target:>14}")
    print(f"{'result':<32}{'PASS' if report['pass'] else 'FAIL':>18}")
    print(f"report: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
