"""One racing gateway process for tests/store/test_race.py (run as a script).

    python race_worker.py URL INSTANCE N START_AT_EPOCH POOL_MINUTES CREDITS

Waits until START_AT, then opens N calls against one tenant's pool (then
credits), extends each once, answers and closes each with a talk time far
beyond its grant. Prints one JSON object: the grants and settlements.
"""

import json
import sys
import time
from datetime import UTC, datetime, timedelta

from store import BucketSpec, CallOpen, open_store

url, instance, n, start_at, pool, credits = sys.argv[1:7]
n, start_at, pool, credits = int(n), float(start_at), float(pool), float(credits)
T0 = datetime(2018, 7, 10, 12, 0, tzinfo=UTC)
chain = (BucketSpec("tenant_pool", pool), BucketSpec("credits", credits, rate_per_minute=0.5))

store = open_store(url, instance_id=instance, chunk_s=120)
time.sleep(max(0.0, start_at - time.time()))
grants, extends = {}, {}
for i in range(n):
    cid = f"{instance}-{i}"
    g = store.open_call(CallOpen(cid, "t1", f"org-{i % 3}", "+33142685300", "FR", "Europe/Paris", T0, chain))
    grants[cid] = None if g is None else [g.bucket, g.granted_s]
for cid, g in grants.items():
    if g is not None:
        e = store.extend(cid, T0 + timedelta(seconds=100))
        extends[cid] = None if e is None else [e.bucket, e.granted_s]
settlements = {}
for cid, g in grants.items():
    if g is not None:
        store.answered(cid, T0)
        s = store.close_call(cid, T0 + timedelta(hours=1), "normal")
        settlements[cid] = {"billed_units": s.billed_units, "charges": s.charges}
store.close()
print(json.dumps({"grants": grants, "extends": extends, "settlements": settlements}))
