"""Several processes race for the last minutes of one pool: it is never overspent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store import open_store

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("race_worker.py")
PROCS, CALLS = 4, 25


@pytest.mark.timeout(180)
def test_processes_never_overspend_a_shared_pool(store_url):
    pool_minutes, credits = 171.0, 30.5  # 232 minutes; 4 x 25 calls want 400
    store = open_store(store_url, instance_id="judge")
    store.migrate()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start_at = time.time() + 1.5  # all processes start their burst together
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                store_url,
                f"gw{p}",
                str(CALLS),
                str(start_at),
                str(pool_minutes),
                str(credits),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(PROCS)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    try:
        pool = store.bucket_row("t1", "2018-07", "tenant_pool")
        cr = store.bucket_row("t1", "lifetime", "credits")
        # Everything was reserved, then settled: nothing is held any more...
        assert pool["reserved"] == pytest.approx(0.0, abs=1e-6)
        assert cr["reserved"] == pytest.approx(0.0, abs=1e-6)
        # ...the pool and the credits were spent exactly, never beyond.
        assert pool["used"] == pytest.approx(pool_minutes)
        assert cr["used"] == pytest.approx(credits)
        assert pool["used"] <= pool_minutes + 1e-9 and cr["used"] <= credits + 1e-9
        # The settlements add up to the buckets: nothing lost, nothing charged twice.
        charged = {"tenant_pool": 0.0, "credits": 0.0}
        granted_s = 0
        for r in results:
            for s in r["settlements"].values():
                for bucket, amount in s["charges"]:
                    charged[bucket] += amount
            for cid, g in r["grants"].items():
                if g is not None:
                    final = r["extends"].get(cid) or g
                    granted_s += final[1]
        assert charged["tenant_pool"] == pytest.approx(pool_minutes)
        assert charged["credits"] == pytest.approx(credits)
        assert granted_s == (pool_minutes + credits / 0.5) * 60
        # Several processes got a share, and the losers were refused, not oversold.
        refused = sum(1 for r in results for d in ("grants", "extends") for g in r[d].values() if g is None)
        assert refused > 0
        assert sum(1 for r in results if any(r["grants"].values())) >= 2
        snapshot = store.snapshot(
            tenant="t1", organizer="org-0", e164=None, tz="Europe/Paris", now=datetime(2018, 7, 10, 13, tzinfo=UTC)
        )
        assert snapshot["concurrent_tenant"] == 0
    finally:
        store.close()
