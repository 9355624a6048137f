"""Benchmark: SIPp bridge -> gateway (full policy + SQLite ledger) -> SIPp trunk.

    .venv/bin/python bench/gateway_bench.py [--quick] [--keep] [--out FILE] [--only SECTIONS]

Everything runs on loopback, on the same 2 cores: SIPp (bridge UAC and trunk
UAS) and the gateway compete for CPU, so every gateway number is reported next
to SIPp -> SIPp directly and to the bare engine relay (bench/bare_engine.py),
measured in the same run with the same scenarios (tests/integration/sipp/*.xml).

Sections (see bench/README.md for what each number means):
  load        the same LOAD_RATE (300 calls/s) step, same calls, four times:
              SIPp->SIPp direct, the gateway on SQLite, the bare engine relay,
              the gateway on a throw-away PostgreSQL (scripts/pg_test_server.sh).
              Gateway CPU per call, gateway / bare, PostgreSQL / SQLite, and
              INVITE->200 at the bridge from kernel packet timestamps
              (bench/sipcap.py): p50/p99 gateway minus direct.
  ramp        relay rates, SIPp->SIPp and through the gateway, zero failed
              calls required, then a bisection; SIPp->SIPp alone above the
              gateway's ceiling until it fails too: the ratio of the ceilings.
  hold        10,000 relayed calls up at once (--quick 3,000): RSS before, at
              the plateau, KB per call.
  reject      unknown organiser -> 403 from the gateway, ramp of rates, zero
              failed; SIPp trunk answering 403 as the reference.
  seeded      the load step again on a ledger already holding settled calls.

Writes bench/reports/gateway_bench-<time>[-quick].json and the same report as
bench/reports/gateway_bench.json, and prints a table. Every loop is bounded in
count and time; a full run takes ~7 minutes, --quick ~3.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from tests.integration.gateway_proc import GatewayProcess, example_policy_text  # noqa: E402
from tests.integration.sipp_runner import SCENARIOS, free_port, read_stats, sipp_binary  # noqa: E402

REPORTS = ROOT / "bench" / "reports"
REPORT = REPORTS / "gateway_bench.json"  # the latest run; each run also has a timestamped copy
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

LOAD_RATE = 300  # calls/s of the CPU, latency, bare-engine and PostgreSQL steps, in both modes

# The performance issue's table: key -> (comparison, target).
TARGETS = {
    "cpu_ms_per_relayed_call": ("<=", 1.0),  # at LOAD_RATE, full policy + SQLite ledger
    "cpu_ratio_gateway_vs_bare_engine": ("<=", 1.25),  # same load
    "relay_rate_ratio_gateway_vs_direct": (">=", 0.9),  # highest zero-failure rates, same run
    "p99_added_delay_ms": ("<=", 5.0),  # INVITE->200 at the bridge, gateway - direct, LOAD_RATE
    "reject_rate_cps": (">=", 3000),  # zero failed
    "concurrent_relayed_calls": (">=", 10000),
    "concurrent_rss_mb": ("<=", 2048),  # RSS at the plateau of those calls
    "rss_kb_per_concurrent_call": ("<=", 150),  # (RSS at plateau - RSS before) / calls
    "postgres_answered_percent": (">=", 100.0),  # the LOAD_RATE step on the PostgreSQL ledger
    "postgres_cpu_ratio_vs_sqlite": ("<=", 1.10),  # gateway CPU per call, PostgreSQL / SQLite
}

RELAY_ORGANIZER = "erin@fabrikam.com"  # US numbers: usca_unlimited bucket, no pool limit
RELAY_LOCATION = "US"
REJECT_ORGANIZER = "mallory@unknown.example"  # not in the directory: 403 organizer_unknown
RTT_FREQ = 50  # every step's call count is a multiple of this
N_NUMBERS = 500  # distinct US destinations, dialled in turn (-inf)

# Raised so that one organiser can carry a load test; everything else is the example policy.
GUARD_OVERRIDES = [
    ("max_concurrent_per_organizer = 10", "max_concurrent_per_organizer = 100000"),
    ("max_concurrent_per_tenant = 300", "max_concurrent_per_tenant = 100000"),
    ("max_calls_per_minute_per_organizer = 20", "max_calls_per_minute_per_organizer = 1000000"),
    ("max_distinct_destinations_per_day = 200", "max_distinct_destinations_per_day = 1000000"),
    ("fair_use_minutes_per_month = 10000", "fair_use_minutes_per_month = 1000000"),
]
# The gateway's own admission limits out of the way: the benchmark looks for the
# engine's ceilings (the hold step keeps 10,000 calls up; the reject ramp goes past 3,000/s).
EXTRA_GATEWAY = "max_calls_per_second = 100000\nmax_concurrent_calls = 20000\n"


@dataclass
class Profile:
    load_rate: int
    load_calls: int  # per load step (direct, SQLite, bare engine, PostgreSQL, seeded)
    relay_rates: list[int]  # the gateway stops at its first failure, SIPp->SIPp at its own
    relay_calls_min: int
    relay_calls_max: int
    step_seconds: float  # calls per ramp step ~ rate * step_seconds, clamped to [min, max]
    bisect_steps: int
    talk_ms: int
    seed_calls: int  # settled calls in the ledger for the seeded step
    hold_calls: int
    hold_rate: int
    reject_rates: list[int]
    reject_calls_min: int
    reject_seconds: float  # calls per reject step ~ rate * reject_seconds, at least reject_calls_min


FULL = Profile(
    load_rate=LOAD_RATE,
    load_calls=3000,
    relay_rates=[100, 200, 300, 400, 600, 800, 1000, 1250, 1500, 2000, 3000, 4000, 5000, 6000, 8000],
    relay_calls_min=2000,
    relay_calls_max=15000,
    step_seconds=4.0,
    bisect_steps=3,
    talk_ms=500,
    seed_calls=10000,
    hold_calls=10000,
    hold_rate=300,
    reject_rates=[1000, 2000, 2500, 3000, 3500, 4000, 5000, 6000],
    reject_calls_min=4000,
    reject_seconds=2.0,
)
QUICK = Profile(
    load_rate=LOAD_RATE,
    load_calls=1500,
    relay_rates=[200, 400, 600, 1000, 1500, 2000, 3000, 4000, 5000],
    relay_calls_min=1000,
    relay_calls_max=6000,
    step_seconds=2.0,
    bisect_steps=1,
    talk_ms=300,
    seed_calls=3000,
    hold_calls=3000,
    hold_rate=300,
    reject_rates=[1500, 2500, 3000, 4000, 5000],
    reject_calls_min=2000,
    reject_seconds=1.0,
)
SECTIONS = ("load", "ramp", "hold", "reject", "seeded")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- processes


def proc_cpu_ms(pid: int) -> float:
    """utime + stime of a live process (all threads), in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK


def proc_runtime_ms(pid: int) -> float:
    """Time on CPU of a process's live threads (/proc/<pid>/task/*/schedstat, in ns), in ms:
    finer than utime+stime's clock ticks for a short idle measurement."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
    return total / 1e6


def system_busy_ms() -> float:
    """CPU time spent by everything on the machine (all cores, not idle/iowait), in ms."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) * 1000.0 / CLK_TCK


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def proc_tree_cpu_ms(root: int) -> float:
    """CPU of a process and its children, ended or alive (utime+stime+cutime+cstime), in ms:
    a PostgreSQL postmaster reaps its backends, so their time ends up in its cutime/cstime."""

    def stat(pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None

    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat(int(entry))
        if fields and (int(entry) == root or int(fields[1]) == root):
            total += sum(int(x) for x in fields[11:15])
    return total * 1000.0 / CLK_TCK


def cpu_by_process() -> dict[int, tuple[str, int, int]]:
    """pid -> (command name, utime+stime ticks, parent pid) of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            head, _, rest = text.rpartition(")")
            fields = rest.split()
            out[int(entry)] = (head.partition("(")[2], int(fields[11]) + int(fields[12]), int(fields[1]))
    return out


def top_consumers(before: dict, after: dict, exclude: set[int], n: int = 4) -> list[str]:
    """The processes that used the most CPU between two cpu_by_process() snapshots,
    leaving out `exclude` and their children."""
    used: dict[str, int] = {}
    for pid, (comm, ticks, ppid) in after.items():
        if pid in exclude or ppid in exclude:
            continue
        delta = ticks - before.get(pid, (comm, 0, 0))[1]
        if delta > 0:
            used[comm] = used.get(comm, 0) + delta
    top = sorted(used.items(), key=lambda kv: -kv[1])[:n]
    return [f"{comm} {ticks * 1000 // CLK_TCK} ms" for comm, ticks in top]


def proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def free_media_port() -> int:
    """A base port with base..base+3 free on UDP (SIPp -mp binds audio and video
    RTP/RTCP there). Not a fixed port: other test runs on the machine use 7000/9000."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 4)
        if not any(port_in_use(base + i) for i in range(4)):
            return base
    raise RuntimeError("no free media port range on loopback")


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Sipp:
    """One SIPp process; waited for with wait4 so its own CPU time is known."""

    def __init__(self, name: str, workdir: Path, scenario: Path, target: str | None, args: list[str]):
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.stat_file = workdir / f"{name}-stats.csv"
        self.cmd = [sipp_binary(), "-sf", str(scenario)]
        if target:
            self.cmd.append(target)
        self.cmd += [
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(workdir / f"{name}-errors.log"),
            "-max_recv_loops",
            "10000",
            "-max_sched_loops",
            "10000",
            *args,
        ]
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.cpu_ms: float | None = None
        self.started = 0.0
        self.ended = 0.0

    def start(self) -> Sipp:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=(self.workdir / f"{self.name}.out").open("wb"),
            stderr=(self.workdir / f"{self.name}.err").open("wb"),
            cwd=self.workdir,
        )
        return self

    def poll(self) -> bool:
        """True once the process has exited (and was reaped)."""
        if self.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000.0
        self.ended = time.monotonic()
        return True

    def wait(self, timeout_s: float, on_tick=None) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.poll():
                return self.returncode
            if on_tick:
                on_tick()
            time.sleep(0.1)
        log(f"  {self.name}: still running after {timeout_s:.0f}s, stopping it")
        self.stop()
        return self.returncode

    def stop(self) -> None:
        """SIGUSR1 asks SIPp to quit; SIGKILL if it does not within 3 s."""
        if self.proc is None or self.poll():
            return
        for sig, grace in ((signal.SIGUSR1, 3.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            end = time.monotonic() + grace
            while time.monotonic() < end:
                if self.poll():
                    return
                time.sleep(0.05)

    def stats(self) -> dict:
        return read_stats(self.stat_file)

    def stat_rows(self) -> list[dict]:
        if not self.stat_file.exists():
            return []
        lines = self.stat_file.read_text().splitlines()
        if len(lines) < 2:
            return []
        head = lines[0].split(";")
        return [dict(zip(head, line.split(";"))) for line in lines[1:]]

    def rtt_ms(self) -> list[tuple[float, float]]:
        """(time since start, INVITE->final response) per call, from -trace_rtt."""
        out = []
        for path in self.workdir.glob("*_rtt.csv"):
            for line in path.read_text().splitlines()[1:]:
                parts = line.split(";")
                if len(parts) >= 2:
                    try:
                        out.append((float(parts[0]), float(parts[1])))
                    except ValueError:
                        pass
        out.sort()
        return out


def _int(stats: dict, key: str) -> int:
    try:
        return int(stats.get(key, 0) or 0)
    except ValueError:
        return 0


def _failures(stats: dict) -> dict[str, int]:
    """SIPp's nonzero cumulative failure counters, by cause."""
    return {
        k: _int(stats, k)
        for k in stats
        if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and _int(stats, k)
    }


# --------------------------------------------------------------------------- gateway log


class GatewayLog:
    """Reads the gateway's JSON log incrementally (it grows by ~1 KB per call)."""

    ERROR_EVENTS = {"invite_failed", "callback_failed", "loop_job_failed", "ledger_write_failed", "trunk_call_failed"}

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read_since_mark(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        out = []
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    @classmethod
    def summarize(cls, events: list[dict]) -> dict:
        calls = [e for e in events if e.get("event") == "call"]
        reasons: dict[str, int] = {}
        for e in calls:
            key = f"{e.get('decision')}:{e.get('reason')}:{e.get('bridge_status')}"
            reasons[key] = reasons.get(key, 0) + 1
        setup = sorted(e["setup_ms"] for e in calls if isinstance(e.get("setup_ms"), (int, float)))
        errors: dict[str, int] = {}
        for e in events:
            if e.get("event") in cls.ERROR_EVENTS or e.get("level") in ("error", "critical"):
                errors[e.get("event", "?")] = errors.get(e.get("event", "?"), 0) + 1
        return {
            "call_lines": len(calls),
            "relayed_200": sum(1 for e in calls if e.get("decision") == "allow" and e.get("bridge_status") == 200),
            "outcomes": reasons,
            "admission_refused_events": sum(1 for e in events if e.get("event") == "admission_refused"),
            "admission_refused_reasons": _count(
                str(e.get("reason")) for e in events if e.get("event") == "admission_refused"
            ),
            "errors": errors,
            "gateway_setup_ms": pct(setup),
        }


def _count(keys) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out


def pct(values: list[float]) -> dict | None:
    if not values:
        return None
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

    return {
        "n": len(v),
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "max": v[-1],
        "mean": round(statistics.fmean(v), 3),
    }


# --------------------------------------------------------------------------- ledger seeding


def seed_ledger(db_path: Path, n: int) -> None:
    """Settled calls of the relay organiser, earlier today, through the store API
    (what a busy tenant's ledger holds later in a month)."""
    from datetime import datetime, timedelta

    from store import BucketSpec, CallOpen, open_store

    store = open_store(f"sqlite:///{db_path}", instance_id="bench-seed")
    try:
        store.migrate()
        now = datetime.now(UTC)
        for i in range(n):
            started = now - timedelta(seconds=120 + (n - i) * 0.25)
            cid = f"seed-{i}@bench"
            store.open_call(
                CallOpen(
                    call_id=cid,
                    tenant="fabrikam",
                    organizer=RELAY_ORGANIZER,
                    e164=f"+1212200{1000 + i % N_NUMBERS:04d}",
                    region="US",
                    tz="America/New_York",
                    started_at=started,
                    chain=(BucketSpec("usca_unlimited", None),),
                    increment_s=60,
                    max_duration_s=14400,
                )
            )
            store.answered(cid, started + timedelta(seconds=1))
            store.close_call(cid, started + timedelta(seconds=61), "allowed", a_status=200, b_status=200)
    finally:
        store.close()


# --------------------------------------------------------------------------- PostgreSQL


class PgServer:
    """A throw-away PostgreSQL server (scripts/pg_test_server.sh, as tests/conftest.py
    starts it), or the server named by $DIALOUT_TEST_PG_URL. Each gateway gets a
    fresh schema. stop() removes the server and its data directory."""

    SCRIPT = ROOT / "scripts" / "pg_test_server.sh"

    def __init__(self):
        self.url: str | None = None
        self.error: str | None = None
        self.base: str | None = None
        self.env: dict | None = None
        self.schemas = 0

    def start(self) -> PgServer:
        override = os.environ.get("DIALOUT_TEST_PG_URL")
        if override:
            self.url = override
            return self
        self.base = tempfile.mkdtemp(prefix="gateway-bench-pg-")
        os.chmod(self.base, 0o755)  # the server runs as `postgres` when the bench runs as root
        self.env = dict(os.environ, DIALOUT_PG_DIR=os.path.join(self.base, "srv"))
        try:
            proc = subprocess.run(
                [str(self.SCRIPT), "start"], env=self.env, capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.error = f"scripts/pg_test_server.sh start: {exc}"
            return self
        if proc.returncode != 0 or not proc.stdout.strip():
            self.error = f"scripts/pg_test_server.sh start exited {proc.returncode}: {proc.stderr.strip()[-1500:]}"
            return self
        self.url = proc.stdout.strip().splitlines()[-1]
        return self

    def schema_url(self) -> str:
        """A URL whose search_path is a fresh, empty schema."""
        import psycopg

        self.schemas += 1
        schema = f"bench_{os.getpid()}_{self.schemas}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options={quote(f'-csearch_path={schema}')}"

    def postmaster_pid(self) -> int | None:
        if not self.env:
            return None  # somebody else's server: its CPU is not ours to read
        try:
            pid_file = Path(self.env["DIALOUT_PG_DIR"]) / "data" / "postmaster.pid"
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_ms(self) -> float | None:
        pid = self.postmaster_pid()
        return proc_tree_cpu_ms(pid) if pid else None

    def stop(self) -> None:
        if self.env is None:
            return
        try:
            subprocess.run([str(self.SCRIPT), "stop"], env=self.env, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"PostgreSQL stop: {exc}")
        shutil.rmtree(self.base, ignore_errors=True)
        self.env = None


# --------------------------------------------------------------------------- setup delay, to the microsecond


class Capture:
    """bench/sipcap.py on the bridge's port: INVITE -> final response per call from
    kernel packet timestamps (SIPp's own -trace_rtt moves in 4 ms steps)."""

    def __init__(self, workdir: Path, port: int):
        self.workdir = workdir
        self.port = port
        self.csv = workdir / "sipcap.csv"
        self.out = workdir / "sipcap.out"
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None
        self.cpu_ms: float | None = None

    def start(self) -> Capture:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "sipcap.py"), str(self.port), str(self.csv)],
            stdout=self.out.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while b"ready" not in self.out.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.error = f"sipcap did not start: {self.out.read_text(errors='replace')[-300:].strip()}"
                self.stop()
                return self
            time.sleep(0.02)
        return self

    def alive_cpu_ms(self) -> float:
        try:
            return proc_cpu_ms(self.proc.pid) if self.proc and self.proc.poll() is None else 0.0
        except OSError:
            return 0.0

    def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000.0
        except ChildProcessError:
            pass

    def result(self, calls: int) -> dict:
        """{"setup_ms": pct of INVITE->200 in ms, counters}; stops the capture first."""
        self.stop()
        if self.error:
            return {"error": self.error}
        counters: dict = {}
        for line in self.out.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                counters = json.loads(line)
        setup, other = [], 0
        if self.csv.exists():
            for line in self.csv.read_text().splitlines()[1:]:
                parts = line.rsplit(";", 3)
                if len(parts) == 4 and parts[3] == "200" and int(parts[2]) > 0:
                    setup.append((int(parts[2]) - int(parts[1])) / 1e6)
                else:
                    other += 1
        stats = pct(setup)
        if stats:
            stats = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()}
        return {
            "setup_ms": stats,
            "answered_200": len(setup),
            "not_200": other,
            "calls": calls,
            "cpu_ms": round(self.cpu_ms, 1) if self.cpu_ms is not None else None,
            **counters,
        }


# --------------------------------------------------------------------------- the floor


class BareRelay:
    """bench/bare_engine.py as a subprocess, with the attributes run_step uses of a GatewayProcess."""

    logs_calls = False

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.sip_port = free_port()
        self.trunk_port = free_port()
        self.target = f"127.0.0.1:{self.sip_port}"
        self.log_path = workdir / "bare_engine.out"
        self.proc: subprocess.Popen | None = None

    def start(self) -> BareRelay:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "bare_engine.py"),
                str(self.sip_port),
                f"127.0.0.1:{self.trunk_port}",
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while b"ready" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare_engine.py did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 20) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- the bench


@dataclass
class Step:
    kind: str  # relay / reject
    path: str  # direct / gateway
    rate: int  # offered calls/s
    calls: int
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    unexpected: int = 0
    ok: bool = False
    achieved_cps: float = 0.0  # answers per second between the first and the last final response
    wall_s: float = 0.0
    latency_ms: dict | None = None
    gw_cpu_ms: float | None = None
    gw_cpu_ms_per_call: float | None = None
    gw_cpu_ms_per_call_net: float | None = None  # idle loop cost subtracted
    gw_rss_mb: float | None = None  # after the step
    gw_rss_before_mb: float | None = None
    ledger_calls_before: int | None = None
    sipp_cpu_ms_per_call: float | None = None  # bridge + trunk SIPp, for scale
    gateway_log: dict | None = None
    note: str = ""
    trunk_successful: int | None = None
    # CPU used on the machine by anything but this step's gateway and SIPps, as a
    # share of all cores: other people's builds and tests disturb the numbers.
    foreign_cpu_percent: float | None = None
    foreign_top: list = field(default_factory=list)  # who used it, when above 10%
    subject: str = ""  # direct / gateway-sqlite / bare-engine / gateway-postgres / ...
    answered_percent: float | None = None  # calls the bridge saw answered and completed
    failures: dict = field(default_factory=dict)  # SIPp's nonzero Failed*(C) counters at the bridge
    trunk_failures: dict = field(default_factory=dict)  # the same at the trunk
    capture: dict | None = None  # INVITE->200 from kernel timestamps (bench/sipcap.py), ms
    db_server_cpu_ms_per_call: float | None = None  # the PostgreSQL server's own CPU (all its processes)
    ledger_drain_s: float | None = None  # wait after the last call for the ledger writer's queue to empty


class Bench:
    def __init__(self, profile: Profile, workdir: Path):
        self.p = profile
        self.workdir = workdir
        self.gw: GatewayProcess | None = None
        self.gwlog: GatewayLog | None = None
        self.idle_cpu_ms_per_s: float | None = None
        self.gw_no = 0
        self.anomalies: list[str] = []
        self.ledger_calls = 0
        self.step_no = 0
        self.running: list[Sipp] = []
        self.last_rtt: list[tuple[float, float]] = []
        self.last_bridge: Sipp | None = None
        self.db_cpu = None  # CPU of the current gateway's database server (PostgreSQL), or None
        self.db_pid: int | None = None
        self._prepare_scenarios()

    # --- set-up -------------------------------------------------------------------

    def _prepare_scenarios(self) -> None:
        sc = self.workdir / "scenarios"
        sc.mkdir(parents=True, exist_ok=True)
        # The bridge UAC, dialling a different US number per call (-inf, field0).
        text = (SCENARIOS / "bridge_call.xml").read_text()
        (sc / "bridge_mix.xml").write_text(text.replace("[service]", "[field0]"))
        with (sc / "numbers.csv").open("w") as f:
            f.write("SEQUENTIAL\n")
            for i in range(N_NUMBERS):
                f.write(f"+1212200{1000 + i:04d}\n")
        tmpl = (SCENARIOS / "bridge_expect_status.xml.tmpl").read_text()
        (sc / "bridge_403.xml").write_text(tmpl.replace("{status}", "403"))
        tmpl = (SCENARIOS / "trunk_fail.xml.tmpl").read_text()
        (sc / "trunk_403.xml").write_text(tmpl.replace("{status}", "403").replace("{phrase}", "Forbidden"))
        self.sc = sc

    def policy_text(self) -> str:
        text = example_policy_text()
        for old, new in GUARD_OVERRIDES:
            if text.count(old) != 1:
                raise SystemExit(f"examples/gateway.toml changed: cannot raise {old!r} for the benchmark")
            text = text.replace(old, new)
        return text

    def start_gateway(self, label: str, seed_calls: int = 0, pg: PgServer | None = None) -> None:
        """A fresh gateway on a fresh SQLite ledger (or a fresh PostgreSQL schema),
        optionally on a ledger already holding `seed_calls` settled calls of the
        relay organiser this month."""
        self.stop_gateway()
        self.gw_no += 1
        self.gw = GatewayProcess.create(
            self.workdir / f"gw{self.gw_no:02d}-{label}",
            policy_text=self.policy_text(),
            extra_gateway=EXTRA_GATEWAY,
            store_url=pg.schema_url() if pg else None,
        )
        self.db_pid = pg.postmaster_pid() if pg else None
        self.db_cpu = pg.cpu_ms if self.db_pid else None
        if seed_calls:
            t = time.monotonic()
            seed_ledger(self.gw.workdir / "ledger.db", seed_calls)
            log(f"  seeded the ledger with {seed_calls} settled calls in {time.monotonic() - t:.1f}s")
        self.gw.start(timeout_s=30)
        self.gwlog = GatewayLog(self.gw.log_path)
        self.ledger_calls = seed_calls
        time.sleep(0.5)
        if self.idle_cpu_ms_per_s is None:
            c0, t0 = proc_runtime_ms(self.gw.proc.pid), time.monotonic()
            time.sleep(2.0)
            self.idle_cpu_ms_per_s = (proc_runtime_ms(self.gw.proc.pid) - c0) / (time.monotonic() - t0)
        log(
            f"gateway #{self.gw_no} ({label}) pid {self.gw.proc.pid} on {self.gw.target}; idle loop "
            f"{self.idle_cpu_ms_per_s:.1f} ms CPU/s, RSS {proc_rss_mb(self.gw.proc.pid)[0]:.0f} MB"
        )

    def stop_gateway(self) -> None:
        self.db_cpu = self.db_pid = None
        if self.gw is not None and self.gw.proc is not None and self.gw.proc.poll() is None:
            try:
                self.gw.stop(timeout_s=20)
            except AssertionError as exc:
                log(f"gateway stop: {exc}")
            events = GatewayLog(self.gw.log_path)
            events.offset = max(0, self.gw.log_path.stat().st_size - 4000)
            for e in events.read_since_mark():
                if e.get("event") == "drain_timeout":
                    self.anomalies.append(
                        f"gateway #{self.gw_no}: {e.get('active_calls')} calls still counted "
                        "active at shutdown after every SIPp call had ended"
                    )

    def cleanup(self) -> None:
        for s in self.running:
            s.stop()
        self.stop_gateway()

    # --- one step -------------------------------------------------------------------

    def _trunk(self, d: Path, port: int, scenario: str, calls: int) -> Sipp:
        path = self.sc / scenario if (self.sc / scenario).exists() else SCENARIOS / scenario
        trunk = Sipp(
            "trunk",
            d / "trunk",
            path,
            None,
            [
                "-p",
                str(port),
                "-m",
                str(calls),
                "-l",
                str(max(10000, calls * 2)),
                "-mp",
                str(free_media_port()),
                "-timeout",
                "300s",
            ],
        )
        self.running.append(trunk.start())
        deadline = time.monotonic() + 5
        while not port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        return trunk

    def run_step(
        self,
        *,
        kind: str,
        path: str,
        rate: int,
        calls: int,
        talk_ms: int = 0,
        limit: int | None = None,
        sample=None,
        subject: str = "",
        capture: bool = False,
    ) -> Step:
        # SIPp writes -trace_rtt in batches of -rtt_freq calls and drops a last partial batch.
        calls = max(RTT_FREQ, calls // RTT_FREQ * RTT_FREQ)
        self.step_no += 1
        subject = subject or path
        d = self.workdir / f"step{self.step_no:02d}-{kind}-{subject}-{rate}"
        step = Step(kind=kind, path=path, rate=rate, calls=calls, subject=subject)
        via_gw = path == "gateway"
        trunk_port = self.gw.trunk_port if via_gw else free_port()
        trunk = None
        if kind == "relay":
            trunk = self._trunk(d, trunk_port, "trunk_answer.xml", calls)
        elif not via_gw:
            trunk = self._trunk(d, trunk_port, "trunk_403.xml", calls)
        target = self.gw.target if via_gw else f"127.0.0.1:{trunk_port}"
        if kind == "relay":
            scenario = self.sc / "bridge_mix.xml"
            args = [
                "-inf",
                str(self.sc / "numbers.csv"),
                "-key",
                "organizer",
                RELAY_ORGANIZER,
                "-key",
                "location",
                RELAY_LOCATION,
                "-d",
                str(talk_ms),
            ]
        else:
            scenario = self.sc / "bridge_403.xml"
            args = ["-s", "+12122001000", "-key", "organizer", REJECT_ORGANIZER, "-key", "location", "US"]
        open_s = calls / rate
        bound_s = open_s + talk_ms / 1000 + 25
        bridge_port = free_port()
        args += [
            "-p",
            str(bridge_port),
            "-m",
            str(calls),
            "-r",
            str(rate),
            "-rp",
            "1000",
            "-l",
            str(limit or calls),
            "-mp",
            str(free_media_port()),
            "-trace_rtt",
            "-rtt_freq",
            str(RTT_FREQ),
            "-recv_timeout",
            "5000",
            "-timeout",
            f"{int(bound_s)}s",
            "-timeout_error",
        ]
        bridge = Sipp("bridge", d / "bridge", scenario, target, args)
        cap = Capture(d / "capture", bridge_port).start() if capture else None

        gw_pid = self.gw.proc.pid if via_gw and self.gw else None
        db_cpu = self.db_cpu if via_gw else None
        if via_gw:
            self.gwlog.mark()
            step.ledger_calls_before = self.ledger_calls
            step.gw_rss_before_mb = round(proc_rss_mb(gw_pid)[0], 1)
            cpu0 = proc_cpu_ms(gw_pid)
        db0 = db_cpu() if db_cpu else None
        procs0 = cpu_by_process()
        t0 = time.monotonic()
        busy0, self_cpu0 = system_busy_ms(), time.process_time() * 1000
        cap_cpu0 = cap.alive_cpu_ms() if cap else 0.0
        trunk_cpu0 = proc_cpu_ms(trunk.proc.pid) if trunk is not None and not trunk.poll() else 0.0
        self.running.append(bridge.start())
        bridge.wait(bound_s + 10, on_tick=sample)
        step.wall_s = round(time.monotonic() - t0, 2)
        if via_gw:
            # The ledger writer commits after the calls end: its work belongs to the step.
            step.ledger_drain_s = self._wait_ledger_drained(10.0)
            # CPU is read when the bridge is done: every call of the step has ended.
            cpu1 = proc_cpu_ms(gw_pid)
            step.gw_cpu_ms = round(cpu1 - cpu0, 1)
            step.gw_cpu_ms_per_call = round(step.gw_cpu_ms / calls, 3)
            step.gw_cpu_ms_per_call_net = round((step.gw_cpu_ms - self.idle_cpu_ms_per_s * step.wall_s) / calls, 3)
            step.gw_rss_mb = round(proc_rss_mb(gw_pid)[0], 1)
        db_ms = (db_cpu() - db0) if db_cpu and db0 is not None else 0.0
        if db_cpu:
            step.db_server_cpu_ms_per_call = round(db_ms / calls, 3)
        busy1, self_cpu1 = system_busy_ms(), time.process_time() * 1000
        cap_cpu1 = cap.alive_cpu_ms() if cap else 0.0
        procs1 = cpu_by_process()
        trunk_cpu_mid = proc_cpu_ms(trunk.proc.pid) if trunk is not None and not trunk.poll() else None
        if trunk is not None:
            trunk.wait(8)
            trunk_stats = trunk.stats()
            step.trunk_successful = _int(trunk_stats, "SuccessfulCall(C)")
            step.trunk_failures = _failures(trunk_stats)
        ours = (
            (step.gw_cpu_ms or 0.0) + (bridge.cpu_ms or 0.0) + (self_cpu1 - self_cpu0) + db_ms + (cap_cpu1 - cap_cpu0)
        )
        if trunk is not None:
            ours += (trunk_cpu_mid if trunk_cpu_mid is not None else (trunk.cpu_ms or 0.0)) - trunk_cpu0
        step.foreign_cpu_percent = (
            round(max(0.0, busy1 - busy0 - ours) / (step.wall_s * 1000 * (os.cpu_count() or 1)) * 100, 1)
            if step.wall_s
            else None
        )
        if cap:
            step.capture = cap.result(calls)
        stats = bridge.stats()
        step.successful = _int(stats, "SuccessfulCall(C)")
        step.failed = _int(stats, "FailedCall(C)")
        step.retransmissions = _int(stats, "Retransmissions(C)")
        step.unexpected = _int(stats, "FailedUnexpectedMessage(C)")
        step.failures = _failures(stats)
        step.answered_percent = round(100.0 * step.successful / calls, 2)
        rtt = bridge.rtt_ms()
        self.last_rtt = rtt
        self.last_bridge = bridge
        if rtt:
            step.latency_ms = pct([r for _, r in rtt])
            span_s = (rtt[-1][0] - rtt[0][0]) / 1000
            step.achieved_cps = round((len(rtt) - 1) / span_s, 1) if span_s > 0 else 0.0
        cpu = [s.cpu_ms for s in (bridge, trunk) if s is not None and s.cpu_ms is not None]
        step.sipp_cpu_ms_per_call = round(sum(cpu) / calls, 3) if cpu else None
        if via_gw:
            deadline = time.monotonic() + 5
            summary = self.gwlog.summarize(self.gwlog.read_since_mark())
            while (
                getattr(self.gw, "logs_calls", True)
                and summary["call_lines"] < step.successful
                and time.monotonic() < deadline
            ):
                time.sleep(0.2)
                summary = self.gwlog.summarize(self.gwlog.read_since_mark())
            step.gateway_log = summary
            self.ledger_calls += summary["call_lines"] if kind == "relay" else 0
        step.ok = (
            bridge.returncode == 0
            and step.failed == 0
            and step.successful == calls
            and step.achieved_cps >= 0.95 * rate
        )
        if step.failed == 0 and step.successful == calls and step.achieved_cps < 0.95 * rate:
            step.note = "no call failed, but SIPp did not hold the offered rate"
        for s in (bridge, trunk):
            if s is not None:
                s.stop()
                self.running.remove(s)
        lat = step.latency_ms or {}
        extra = ""
        if step.capture and step.capture.get("setup_ms"):
            c = step.capture["setup_ms"]
            extra += f" setup(kernel) p50/p99/max={c['p50']:.2f}/{c['p99']:.2f}/{c['max']:.2f} ms"
        if via_gw:
            extra += (
                f" gw {step.gw_cpu_ms_per_call:.3f} ms CPU/call (net {step.gw_cpu_ms_per_call_net:.3f}),"
                f" RSS {step.gw_rss_mb:.0f} MB, log {step.gateway_log['outcomes']}"
                + (f" errors {step.gateway_log['errors']}" if step.gateway_log["errors"] else "")
            )
        if step.db_server_cpu_ms_per_call is not None:
            extra += f" db server {step.db_server_cpu_ms_per_call:.3f} ms CPU/call"
        if step.failures:
            extra += f" failures {step.failures}"
        if step.trunk_failures:
            extra += f" trunk failures {step.trunk_failures}"
        if step.foreign_cpu_percent is not None and step.foreign_cpu_percent > 10:
            ours_pids = {os.getpid(), bridge.proc.pid, *(x.proc.pid for x in (trunk, cap) if x and x.proc)}
            if gw_pid:
                ours_pids.add(gw_pid)
            if self.db_pid:
                ours_pids.add(self.db_pid)  # the postmaster; its backends are its children
            step.foreign_top = top_consumers(procs0, procs1, ours_pids)
            listed_ms = sum(int(x.rsplit(" ", 2)[1]) for x in step.foreign_top)
            foreign_ms = step.foreign_cpu_percent / 100 * step.wall_s * 1000 * (os.cpu_count() or 1)
            if listed_ms < foreign_ms / 2:
                # Processes that started and ended within the step (compilers, short test runs)
                # are in no snapshot.
                step.foreign_top.append(f"processes that came and went {int(foreign_ms - listed_ms)} ms")
            self.anomalies.append(
                f"step {self.step_no} ({kind} {subject} {rate}/s): other processes used "
                f"{step.foreign_cpu_percent}% of the machine's CPU during the step "
                f"(top: {', '.join(step.foreign_top)})"
            )
        log(
            f"  {kind:6s} {subject:16s} {rate:5d}/s x{calls}: {'PASS' if step.ok else 'FAIL'} "
            f"other-cpu={step.foreign_cpu_percent}% ok={step.successful} failed={step.failed} "
            f"retrans={step.retransmissions} achieved={step.achieved_cps}/s "
            f"rtt(SIPp) p50/p99/max={lat.get('p50')}/{lat.get('p99')}/{lat.get('max')} ms{extra}"
        )
        return step

    def _wait_ledger_drained(self, timeout_s: float) -> float | None:
        """Seconds until the gateway's ledger queue is empty (None: no metric to read)."""
        metric = getattr(self.gw, "metric", None)
        if metric is None:
            return None
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            depth = metric("dialout_ledger_queue_depth")
            if depth is None or depth == 0:
                return round(time.monotonic() - t0, 2) if depth == 0 else None
            time.sleep(0.05)
        return round(time.monotonic() - t0, 2)

    def calls_for(self, rate: int) -> int:
        floor = min(self.p.relay_calls_min, rate * 10)  # at most ~10 s per step at low rates
        return int(min(self.p.relay_calls_max, max(floor, rate * self.p.step_seconds)))

    def reject_calls_for(self, rate: int) -> int:
        return int(max(self.p.reject_calls_min, rate * self.p.reject_seconds))

    # --- sections -------------------------------------------------------------------

    def load(self, pg: PgServer | None) -> dict:
        """The same step (rate, calls, talk time) through each subject, back to back."""
        rate, calls, talk = self.p.load_rate, self.p.load_calls, self.p.talk_ms
        log(f"load: {calls} calls at {rate}/s each, SIPp->SIPp, gateway (SQLite), bare engine, gateway (PostgreSQL)")
        out: dict = {"rate": rate, "calls": calls, "talk_ms": talk}
        out["direct"] = asdict(
            self.run_step(
                kind="relay", path="direct", rate=rate, calls=calls, talk_ms=talk, subject="direct", capture=True
            )
        )
        self.start_gateway("load-sqlite")
        out["sqlite"] = asdict(
            self.run_step(
                kind="relay",
                path="gateway",
                rate=rate,
                calls=calls,
                talk_ms=talk,
                subject="gateway-sqlite",
                capture=True,
            )
        )
        self.stop_gateway()
        out["bare_engine"] = self.bare_step(rate, calls)
        if pg is not None and pg.url:
            try:
                self.start_gateway("load-postgres", pg=pg)
            except Exception as exc:  # a gateway that cannot start on PostgreSQL is a result, not a crash
                out["postgres"] = {"error": f"gateway did not start on PostgreSQL: {exc}"[:2000]}
            else:
                out["postgres"] = asdict(
                    self.run_step(
                        kind="relay",
                        path="gateway",
                        rate=rate,
                        calls=calls,
                        talk_ms=talk,
                        subject="gateway-postgres",
                        capture=True,
                    )
                )
            self.stop_gateway()
        else:
            out["postgres"] = {"error": pg.error if pg else "not run"}
            log(f"  PostgreSQL step not run: {out['postgres']['error']}")
        return out

    def bare_step(self, rate: int, calls: int) -> dict:
        """The same load through bench/bare_engine.py: the SIP engine alone, the floor under the gateway."""
        self.stop_gateway()
        self.gw_no += 1
        self.gw = BareRelay(self.workdir / f"gw{self.gw_no:02d}-bare").start()
        self.gwlog = GatewayLog(self.gw.log_path)
        time.sleep(0.5)
        step = self.run_step(
            kind="relay",
            path="gateway",
            rate=rate,
            calls=calls,
            talk_ms=self.p.talk_ms,
            subject="bare-engine",
            capture=True,
        )
        self.stop_gateway()
        self.gw = None
        return asdict(step)

    def relay_ramp(self) -> dict:
        log("relay ramp: direct SIPp->SIPp, then through the gateway, at each rate; then SIPp->SIPp alone")
        pairs: dict[int, dict[str, Step]] = {}

        def run_rate(rate: int) -> tuple[Step, Step]:
            calls = self.calls_for(rate)
            direct = self.run_step(kind="relay", path="direct", rate=rate, calls=calls, talk_ms=self.p.talk_ms)
            self.start_gateway(f"relay-{rate}")
            gw = self.run_step(kind="relay", path="gateway", rate=rate, calls=calls, talk_ms=self.p.talk_ms)
            self.stop_gateway()
            pairs[rate] = {"direct": direct, "gateway": gw}
            return direct, gw

        last_pass = first_fail = None
        for rate in self.p.relay_rates:
            _, gw = run_rate(rate)
            if gw.ok:
                last_pass = rate
            else:
                first_fail = rate
                break
        for _ in range(self.p.bisect_steps):
            lo = last_pass or 0
            if first_fail is None or first_fail - lo <= 50:
                break
            mid = int(round((lo + first_fail) / 2 / 25) * 25)
            if mid in pairs or mid <= lo:
                break
            _, gw = run_rate(mid)
            if gw.ok:
                last_pass = mid
            else:
                first_fail = mid
        # The load generator's own ceiling: SIPp -> SIPp alone above the rates the gateway reached.
        direct_only: dict[int, Step] = {}
        for rate in self.p.relay_rates:
            if rate in pairs:
                continue
            direct_only[rate] = self.run_step(
                kind="relay", path="direct", rate=rate, calls=self.calls_for(rate), talk_ms=self.p.talk_ms
            )
            if not direct_only[rate].ok:
                break
        direct = {r: p["direct"] for r, p in pairs.items()} | direct_only
        direct_max = max((r for r, st in direct.items() if st.ok), default=None)
        direct_fail_above = min((r for r, st in direct.items() if not st.ok and r > (direct_max or 0)), default=None)
        return {
            "max_rate_zero_failures_cps": last_pass,
            "first_failing_rate_cps": first_fail,
            # False: the gateway passed every rate offered, its ceiling is above the ramp.
            "gateway_ceiling_found": first_fail is not None,
            "direct_max_rate_zero_failures_cps": direct_max,
            "direct_first_failing_rate_cps": direct_fail_above,
            # False: SIPp->SIPp passed every rate offered, so the ratio is an upper bound.
            "direct_ceiling_found": direct_fail_above is not None,
            "direct_failed_at_gateway_failing_rate": (not pairs[first_fail]["direct"].ok) if first_fail else None,
            "steps": {str(r): {k: asdict(v) for k, v in p.items()} for r, p in sorted(pairs.items())},
            "direct_only_steps": {str(r): asdict(st) for r, st in sorted(direct_only.items())},
        }

    def seeded(self) -> dict:
        """The load step's gateway again, on a ledger already holding seed_calls settled calls."""
        rate, calls, n = self.p.load_rate, self.p.load_calls, self.p.seed_calls
        log(f"seeded ledger: {calls} calls at {rate}/s on a ledger holding {n} settled calls")
        self.start_gateway("seeded-ledger", seed_calls=n)
        step = self.run_step(
            kind="relay", path="gateway", rate=rate, calls=calls, talk_ms=self.p.talk_ms, subject="gateway-seeded"
        )
        self.stop_gateway()
        return asdict(step)

    def hold(self) -> dict:
        n, rate = self.p.hold_calls, self.p.hold_rate
        open_s = n / rate
        talk_ms = int((open_s + 6.0) * 1000)
        log(f"concurrency: {n} calls at {rate}/s, each talking {talk_ms / 1000:.1f}s (all {n} up at once)")
        self.start_gateway("hold")
        pid = self.gw.proc.pid
        rss_before = proc_rss_mb(pid)[0]
        samples: list[tuple[float, float, float]] = []  # (monotonic, cpu_ms, rss_mb)
        fds: list[tuple[float, int]] = []

        def sample():
            now = time.monotonic()
            samples.append((now, proc_cpu_ms(pid), proc_rss_mb(pid)[0]))
            if not fds or now - fds[-1][0] >= 1.0:
                fds.append((now, proc_fds(pid) or 0))

        t0 = time.monotonic()
        step = self.run_step(
            kind="relay",
            path="gateway",
            rate=rate,
            calls=n,
            talk_ms=talk_ms,
            limit=n + 200,
            sample=sample,
            subject="gateway-hold",
        )
        rtt = self.last_rtt
        out = {
            "calls": n,
            "rate": rate,
            "talk_s": talk_ms / 1000,
            "ok": step.ok,
            "successful": step.successful,
            "failed": step.failed,
            "failures": step.failures,
            "rss_before_mb": round(rss_before, 1),
            "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }
        if rtt:
            # Calls established at the instant of the last answer: answered and not yet hung up.
            last_answer = rtt[-1][0]
            up = sum(1 for t, _ in rtt if t <= last_answer < t + talk_ms)
            out["concurrent_at_last_answer"] = up
            # Plateau: from the last answer to the first BYE (first answer + talk time).
            p0 = t0 + last_answer / 1000
            p1 = t0 + (rtt[0][0] + talk_ms) / 1000
            plateau = [s for s in samples if p0 <= s[0] <= p1]
            if plateau:
                out["rss_at_peak_mb"] = round(max(s[2] for s in plateau), 1)
                out["gateway_fds_at_plateau"] = max((f for t, f in fds if p0 <= t <= p1), default=None)
                if len(plateau) >= 2 and plateau[-1][0] > plateau[0][0]:
                    out["hold_cpu_percent_of_core"] = round(
                        (plateau[-1][1] - plateau[0][1]) / ((plateau[-1][0] - plateau[0][0]) * 1000) * 100, 1
                    )
                    out["plateau_s"] = round(plateau[-1][0] - plateau[0][0], 2)
            out["latency_ms"] = step.latency_ms
        if samples:
            out["rss_max_mb"] = round(max(s[2] for s in samples), 1)
        out["rss_hwm_mb"] = round(proc_rss_mb(pid)[1], 1)
        held = out.get("concurrent_at_last_answer")
        if "rss_at_peak_mb" in out and held:
            out["rss_per_call_kb"] = round((out["rss_at_peak_mb"] - rss_before) * 1024 / held, 1)
        logged = step.gateway_log or {}
        out["gateway_log"] = logged
        out["all_relayed"] = logged.get("relayed_200") == n and step.successful == n and step.trunk_successful == n
        out["trunk_successful"] = step.trunk_successful
        out["gw_cpu_ms_per_call"] = step.gw_cpu_ms_per_call
        if not out["all_relayed"]:
            out["why_not_all"] = self._evidence(step)
        log(
            f"  concurrent at last answer: {held}, RSS before {rss_before:.0f} MB, at plateau "
            f"{out.get('rss_at_peak_mb')} MB ({out.get('rss_per_call_kb')} KB per call), "
            f"{out.get('gateway_fds_at_plateau')} fds, hold CPU {out.get('hold_cpu_percent_of_core')}% of a core, "
            f"all relayed: {out['all_relayed']}"
        )
        self.stop_gateway()
        return out

    def _evidence(self, step: Step) -> dict:
        """What the logs say about calls that were not relayed: SIPp's failure counters and
        first errors, the gateway's refusals and errors, the tail of its stderr."""
        ev: dict = {
            "bridge_failures": step.failures,
            "trunk_failures": step.trunk_failures,
            "gateway_outcomes": (step.gateway_log or {}).get("outcomes"),
            "gateway_admission_refused": (step.gateway_log or {}).get("admission_refused_reasons"),
            "gateway_errors": (step.gateway_log or {}).get("errors"),
            "trunk_successful": step.trunk_successful,
        }
        bridge = self.last_bridge
        if bridge is not None:
            for side in ("bridge", "trunk"):
                err = bridge.workdir.parent / side / f"{side}-errors.log"
                if err.exists():
                    ev[f"{side}_errors_head"] = err.read_text(errors="replace").splitlines()[:12]
        if self.gw is not None and getattr(self.gw, "err_path", None) and self.gw.err_path.exists():
            ev["gateway_stderr_tail"] = self.gw.err_path.read_text(errors="replace").splitlines()[-12:]
        return ev

    def reject_ramp(self) -> dict:
        log("reject path: unknown organiser -> 403 (gateway) vs SIPp trunk answering 403 (direct)")
        self.start_gateway("reject")
        pairs: dict[int, dict[str, Step]] = {}
        last_pass = first_fail = None
        for rate in self.p.reject_rates:
            calls = self.reject_calls_for(rate)
            direct = self.run_step(kind="reject", path="direct", rate=rate, calls=calls)
            gw = self.run_step(kind="reject", path="gateway", rate=rate, calls=calls)
            pairs[rate] = {"direct": direct, "gateway": gw}
            gw_403 = (gw.gateway_log or {}).get("outcomes", {}).get("deny:organizer_unknown:403", 0)
            if gw.ok and gw_403 == gw.calls:
                last_pass = rate
            else:
                first_fail = rate
                break
        self.stop_gateway()
        direct_only: dict[int, Step] = {}
        for rate in self.p.reject_rates:
            if rate in pairs:
                continue
            direct_only[rate] = self.run_step(
                kind="reject", path="direct", rate=rate, calls=self.reject_calls_for(rate)
            )
            if not direct_only[rate].ok:
                break
        direct_pass = [r for r, p in pairs.items() if p["direct"].ok] + [r for r, st in direct_only.items() if st.ok]
        return {
            "direct_only_steps": {str(r): asdict(st) for r, st in sorted(direct_only.items())},
            "max_rate_zero_failures_cps": last_pass,
            "first_failing_rate_cps": first_fail,
            "gateway_ceiling_found": first_fail is not None,
            "direct_max_rate_zero_failures_cps": max(direct_pass) if direct_pass else None,
            "steps": {str(r): {k: asdict(v) for k, v in p.items()} for r, p in sorted(pairs.items())},
        }


# --------------------------------------------------------------------------- report


def latency_comparison(relay: dict) -> dict:
    """The ramp's INVITE->200 at the bridge from SIPp's -trace_rtt (4 ms steps), gateway vs direct."""
    out = {}
    for rate, pair in relay["steps"].items():
        d, g = pair["direct"]["latency_ms"], pair["gateway"]["latency_ms"]
        if not d or not g:
            continue
        out[rate] = {
            "direct": {k: d[k] for k in ("p50", "p99", "max")},
            "gateway": {k: g[k] for k in ("p50", "p99", "max")},
            "added": {k: round(g[k] - d[k], 3) for k in ("p50", "p99", "max")},
            "gateway_ok": pair["gateway"]["ok"],
            "direct_ok": pair["direct"]["ok"],
        }
    return out


def _setup(step: dict | None) -> dict | None:
    """INVITE->200 percentiles of a step: kernel timestamps when captured, else SIPp's clock."""
    if not step or "error" in step:
        return None
    cap = step.get("capture") or {}
    if cap.get("setup_ms"):
        return dict(cap["setup_ms"], source="kernel timestamps (bench/sipcap.py)")
    if step.get("latency_ms"):
        return dict(step["latency_ms"], source="SIPp -trace_rtt (4 ms steps)")
    return None


def _cpu(step: dict | None) -> float | None:
    return step.get("gw_cpu_ms_per_call") if step and "error" not in step else None


def summarize(report: dict) -> dict:
    s: dict = {"load_rate_cps": None}
    notes: dict[str, str] = {}
    load = report.get("load")
    if load:
        d, g, b, pg = load["direct"], load["sqlite"], load["bare_engine"], load["postgres"]
        s["load_rate_cps"], s["load_calls"] = load["rate"], load["calls"]
        s["cpu_ms_per_relayed_call"] = _cpu(g)
        s["load_step_ok"] = g["ok"]
        if not g["ok"]:
            notes["cpu_ms_per_relayed_call"] = (
                f"the SQLite step did not pass: {g['successful']} of {g['calls']} calls, {g['achieved_cps']}/s"
            )
        s["cpu_ms_per_call_bare_engine"] = _cpu(b)
        s["bare_engine_successful"] = b["successful"]
        s["bare_engine_ok"] = b["ok"]
        s["cpu_ratio_gateway_vs_bare_engine"] = _ratio(_cpu(g), _cpu(b)) if b["successful"] == b["calls"] else None
        if b["successful"] != b["calls"]:
            notes["cpu_ratio_gateway_vs_bare_engine"] = (
                f"the bare engine relayed {b['successful']} of {b['calls']} calls: its CPU is not a floor"
            )
        sd, sg, sb = _setup(d), _setup(g), _setup(b)
        s["setup_ms_direct"], s["setup_ms_gateway"], s["setup_ms_bare_engine"] = sd, sg, sb
        s["setup_source"] = sg["source"] if sg else None
        if sd and sg:
            s["p50_added_delay_ms"] = round(sg["p50"] - sd["p50"], 3)
            s["p99_added_delay_ms"] = round(sg["p99"] - sd["p99"], 3)
            if sd["source"] != sg["source"]:
                notes["p99_added_delay_ms"] = "direct and gateway timed by different clocks"
        if sd and sb:
            s["p99_added_delay_ms_bare_engine"] = round(sb["p99"] - sd["p99"], 3)
        s["gateway_setup_ms_own_log"] = (g.get("gateway_log") or {}).get("gateway_setup_ms")
        if "error" in pg:
            notes["postgres"] = pg["error"]
        else:
            s["postgres_answered_percent"] = pg["answered_percent"]
            s["postgres_relayed_200_logged"] = (pg.get("gateway_log") or {}).get("relayed_200")
            s["cpu_ms_per_relayed_call_postgres"] = _cpu(pg)
            s["postgres_cpu_ratio_vs_sqlite"] = _ratio(_cpu(pg), _cpu(g))
            s["postgres_server_cpu_ms_per_call"] = pg.get("db_server_cpu_ms_per_call")
            spg = _setup(pg)
            if spg and sd:
                s["p99_added_delay_ms_postgres"] = round(spg["p99"] - sd["p99"], 3)
    relay = report.get("relay")
    if relay:
        gmax, dmax = relay["max_rate_zero_failures_cps"], relay["direct_max_rate_zero_failures_cps"]
        s["relay_max_rate_cps"], s["relay_direct_max_rate_cps"] = gmax, dmax
        s["relay_rate_ratio_gateway_vs_direct"] = _ratio(gmax, dmax)
        s["relay_direct_ceiling_found"] = relay["direct_ceiling_found"]
        s["relay_gateway_ceiling_found"] = relay["gateway_ceiling_found"]
        if not relay["direct_ceiling_found"]:
            notes["relay_rate_ratio_gateway_vs_direct"] = (
                f"SIPp->SIPp passed every rate up to {dmax}/s: the ratio is an upper bound"
            )
        elif not relay["gateway_ceiling_found"]:
            notes["relay_rate_ratio_gateway_vs_direct"] = "the gateway passed every rate offered: a lower bound"
        lat = report.get("latency") or {}
        s["max_rate_p99_added_within_target_cps_sipp_clock"] = max(
            (
                int(r)
                for r, v in lat.items()
                if v["gateway_ok"] and v["added"]["p99"] <= TARGETS["p99_added_delay_ms"][1]
            ),
            default=None,
        )
    hold = report.get("concurrency")
    if hold:
        held = hold.get("concurrent_at_last_answer") or 0
        s["concurrent_calls_offered"] = hold["calls"]
        s["concurrent_relayed_calls"] = held if hold.get("all_relayed") else None
        s["concurrent_highest_reached"] = held
        s["concurrent_all_relayed"] = hold.get("all_relayed")
        s["rss_before_mb"] = hold.get("rss_before_mb")
        s["rss_at_plateau_mb"] = hold.get("rss_at_peak_mb")
        s["rss_kb_per_concurrent_call"] = hold.get("rss_per_call_kb")
        if not hold.get("all_relayed"):
            notes["concurrent_relayed_calls"] = (
                f"{held} up at once, not every call relayed: see concurrency.why_not_all"
            )
    rej = report.get("reject")
    if rej:
        rate = rej["max_rate_zero_failures_cps"]
        st = rej["steps"].get(str(rate), {}).get("gateway") if rate else None
        s["reject_max_rate_cps"] = rate
        s["reject_direct_max_rate_cps"] = rej["direct_max_rate_zero_failures_cps"]
        s["reject_rate_ratio_gateway_vs_direct"] = _ratio(rate, rej["direct_max_rate_zero_failures_cps"])
        s["cpu_ms_per_reject"] = st["gw_cpu_ms_per_call"] if st else None
        if not rej["gateway_ceiling_found"]:
            notes["reject_rate_cps"] = "the gateway passed every rate offered: its ceiling is higher"
        s["reject_direct_ceiling_found"] = not all(
            st["ok"] for st in [*(p["direct"] for p in rej["steps"].values()), *rej["direct_only_steps"].values()]
        )
        if not s["reject_direct_ceiling_found"]:
            notes["reject_rate_ratio_gateway_vs_direct"] = (
                f"SIPp->SIPp answered 403 at every rate offered, up to {rej['direct_max_rate_zero_failures_cps']}/s: "
                "the ratio is an upper bound"
            )
    seeded = report.get("seeded")
    if seeded:
        s["cpu_ms_per_relayed_call_seeded"] = seeded["gw_cpu_ms_per_call"]
        s["ledger_calls_at_seeded_step"] = seeded["ledger_calls_before"]
    t = {
        "cpu_ms_per_relayed_call": _verdict(
            s.get("cpu_ms_per_relayed_call"), "cpu_ms_per_relayed_call", valid=s.get("load_step_ok", False)
        ),
        "cpu_ratio_gateway_vs_bare_engine": _verdict(
            s.get("cpu_ratio_gateway_vs_bare_engine"), "cpu_ratio_gateway_vs_bare_engine"
        ),
        "relay_rate_ratio_gateway_vs_direct": _verdict(
            s.get("relay_rate_ratio_gateway_vs_direct"),
            "relay_rate_ratio_gateway_vs_direct",
            bound="upper"
            if relay and not relay["direct_ceiling_found"]
            else "lower"
            if relay and not relay["gateway_ceiling_found"]
            else None,
        ),
        "p99_added_delay_ms": _verdict(s.get("p99_added_delay_ms"), "p99_added_delay_ms"),
        "reject_rate_cps": _verdict(s.get("reject_max_rate_cps"), "reject_rate_cps"),
        "concurrent_relayed_calls": _verdict(s.get("concurrent_relayed_calls"), "concurrent_relayed_calls"),
        "concurrent_rss_mb": _verdict(
            s.get("rss_at_plateau_mb"), "concurrent_rss_mb", valid=bool(s.get("concurrent_relayed_calls"))
        ),
        "rss_kb_per_concurrent_call": _verdict(
            s.get("rss_kb_per_concurrent_call"),
            "rss_kb_per_concurrent_call",
            valid=bool(s.get("concurrent_relayed_calls")),
        ),
        "postgres_answered_percent": _verdict(s.get("postgres_answered_percent"), "postgres_answered_percent"),
        "postgres_cpu_ratio_vs_sqlite": _verdict(
            s.get("postgres_cpu_ratio_vs_sqlite"),
            "postgres_cpu_ratio_vs_sqlite",
            valid=s.get("postgres_answered_percent") == 100.0,
        ),
    }
    ran = {
        "cpu_ms_per_relayed_call": load,
        "cpu_ratio_gateway_vs_bare_engine": load,
        "relay_rate_ratio_gateway_vs_direct": relay,
        "p99_added_delay_ms": load,
        "reject_rate_cps": rej,
        "concurrent_relayed_calls": hold,
        "concurrent_rss_mb": hold,
        "rss_kb_per_concurrent_call": hold,
        "postgres_answered_percent": load,
        "postgres_cpu_ratio_vs_sqlite": load,
    }
    for key, section in ran.items():
        if not section:
            t[key]["met"] = None
            t[key]["note"] = "not run"
    if hold and hold["calls"] < TARGETS["concurrent_relayed_calls"][1]:
        notes["concurrent_relayed_calls"] = "; ".join(
            filter(
                None,
                [
                    notes.get("concurrent_relayed_calls"),
                    f"this mode holds {hold['calls']} calls, not {TARGETS['concurrent_relayed_calls'][1]}: "
                    "run without --quick",
                ],
            )
        )
    for key, note in notes.items():
        if key in t:
            t[key]["note"] = note
    s["targets"] = t
    s["notes"] = notes
    return s


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _verdict(value, key: str, *, valid: bool = True, bound: str | None = None) -> dict:
    """met: True, False, or None when the value is only a bound on the wrong side to decide."""
    op, target = TARGETS[key]
    out = {"value": value, "target": f"{op} {target}", "met": False}
    if value is None or not valid:
        return out
    met = value >= target if op == ">=" else value <= target
    if bound == "upper" and op == ">=" and met:
        met = None  # the true ratio is at most this: cannot say it is met
    if bound == "lower" and op == ">=" and not met:
        met = None
    out["met"] = met
    return out


def print_table(report: dict) -> None:
    s = report["summary"]
    t = s["targets"]
    rate = s.get("load_rate_cps") or report["profile"]["load_rate"]
    print()
    print(
        "dialout-gateway benchmark"
        + (" (--quick)" if report["quick"] else "")
        + f" — {report['machine']['cpus']} CPUs shared by SIPp and the gateway, loopback"
    )
    print(f"{'measure':52s} {'gateway':>9s} {'reference':>10s} {'ratio':>7s}  target")

    def f(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    def row(name, gw, ref=None, ratio=None, key=None):
        mark = ""
        if key:
            m = t[key]["met"]
            undecided = "not run" if t[key].get("note") == "not run" else "undecided (a bound)"
            mark = f"{t[key]['target']} {'MET' if m else undecided if m is None else 'NOT MET'}"
        print(f"{name:52s} {f(gw):>9s} {f(ref):>10s} {f(ratio):>7s}  {mark}")

    row(
        f"CPU per relayed call at {rate}/s, SQLite (ms)",
        s.get("cpu_ms_per_relayed_call"),
        None,
        None,
        "cpu_ms_per_relayed_call",
    )
    row(
        "  ÷ bare engine relay, same load (ref = bare ms)",
        s.get("cpu_ms_per_relayed_call"),
        s.get("cpu_ms_per_call_bare_engine"),
        s.get("cpu_ratio_gateway_vs_bare_engine"),
        "cpu_ratio_gateway_vs_bare_engine",
    )
    row(
        "relay: max rate, zero failed (ref = SIPp->SIPp)",
        s.get("relay_max_rate_cps"),
        s.get("relay_direct_max_rate_cps"),
        s.get("relay_rate_ratio_gateway_vs_direct"),
        "relay_rate_ratio_gateway_vs_direct",
    )
    sd, sg = s.get("setup_ms_direct"), s.get("setup_ms_gateway")
    if sd and sg:
        row(f"INVITE->200 p50 at {rate}/s (ms; ref = direct)", sg["p50"], sd["p50"])
        row(f"INVITE->200 p99 at {rate}/s (ms; ref = direct)", sg["p99"], sd["p99"])
    row("  p99 added delay, gateway - direct (ms)", s.get("p99_added_delay_ms"), None, None, "p99_added_delay_ms")
    if s.get("p99_added_delay_ms_bare_engine") is not None:
        row("  p99 added delay, bare engine - direct (ms)", s.get("p99_added_delay_ms_bare_engine"))
    row(
        "reject 403: max rate, zero failed (ref = SIPp->SIPp)",
        s.get("reject_max_rate_cps"),
        s.get("reject_direct_max_rate_cps"),
        s.get("reject_rate_ratio_gateway_vs_direct"),
        "reject_rate_cps",
    )
    row(
        f"concurrent relayed calls held (of {s.get('concurrent_calls_offered')})",
        s.get("concurrent_relayed_calls") if s.get("concurrent_all_relayed") else s.get("concurrent_highest_reached"),
        None,
        None,
        "concurrent_relayed_calls",
    )
    row(
        "  RSS at plateau (MB; ref = before)",
        s.get("rss_at_plateau_mb"),
        s.get("rss_before_mb"),
        None,
        "concurrent_rss_mb",
    )
    row(
        "  KB per call: (plateau - before) / calls",
        s.get("rss_kb_per_concurrent_call"),
        None,
        None,
        "rss_kb_per_concurrent_call",
    )
    row(
        f"PostgreSQL ledger at {rate}/s: answered %",
        s.get("postgres_answered_percent"),
        None,
        None,
        "postgres_answered_percent",
    )
    row(
        "  CPU per call (ms; ref = SQLite)",
        s.get("cpu_ms_per_relayed_call_postgres"),
        s.get("cpu_ms_per_relayed_call"),
        s.get("postgres_cpu_ratio_vs_sqlite"),
        "postgres_cpu_ratio_vs_sqlite",
    )
    row("  PostgreSQL server's own CPU per call (ms)", s.get("postgres_server_cpu_ms_per_call"))
    if s.get("cpu_ms_per_relayed_call_seeded") is not None:
        row(
            f"CPU per call, ledger holding {s.get('ledger_calls_at_seeded_step')} calls (ms)",
            s.get("cpu_ms_per_relayed_call_seeded"),
            s.get("cpu_ms_per_relayed_call"),
            _ratio(s.get("cpu_ms_per_relayed_call_seeded"), s.get("cpu_ms_per_relayed_call")),
        )
    row("gateway CPU per reject (ms)", s.get("cpu_ms_per_reject"))
    for key, note in s["notes"].items():
        print(f"  note ({key}): {note}")
    if s.get("setup_source"):
        print(f"  INVITE->200 timed by {s['setup_source']}")
    if report.get("load"):
        print()
        print(f"load steps at {rate}/s (INVITE->200 p50/p99/max ms; CPU ms per call):")
        for key in ("direct", "sqlite", "bare_engine", "postgres"):
            st = report["load"][key]
            if "error" in st:
                print(f"  {key:12s} not run: {st['error'][:200]}")
                continue
            su = _setup(st) or {}
            print(
                f"  {key:12s} {'ok ' if st['ok'] else 'BAD'} {st['successful']}/{st['calls']} "
                f"({st['achieved_cps']}/s) {su.get('p50')}/{su.get('p99')}/{su.get('max')}"
                + (f" cpu {st['gw_cpu_ms_per_call']}" if st.get("gw_cpu_ms_per_call") is not None else "")
                + (
                    f" db-server {st['db_server_cpu_ms_per_call']}"
                    if st.get("db_server_cpu_ms_per_call") is not None
                    else ""
                )
                + f" other-cpu {st['foreign_cpu_percent']}%"
            )
    if report.get("relay"):
        print("relay steps (INVITE->200 p50/p99/max ms by SIPp's clock, 4 ms steps; CPU = gateway ms per call):")
        for r, pair in report["relay"]["steps"].items():
            d, g = pair["direct"], pair["gateway"]
            dl, gl = d["latency_ms"] or {}, g["latency_ms"] or {}
            print(
                f"  {r:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} {dl.get('p50')}/{dl.get('p99')}/{dl.get('max')}"
                f" ({d['achieved_cps']}/s)   gateway {'ok ' if g['ok'] else 'BAD'} failed={g['failed']}"
                f" {gl.get('p50')}/{gl.get('p99')}/{gl.get('max')} ({g['achieved_cps']}/s)"
                f" cpu {g['gw_cpu_ms_per_call']}"
            )
        for r, d in report["relay"].get("direct_only_steps", {}).items():
            dl = d["latency_ms"] or {}
            print(
                f"  {r:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} failed={d['failed']} "
                f"{dl.get('p50')}/{dl.get('p99')}/{dl.get('max')} ({d['achieved_cps']}/s)   gateway not run"
            )
    if report.get("reject"):
        print("reject steps:")
        for r, pair in report["reject"]["steps"].items():
            d, g = pair["direct"], pair["gateway"]
            print(
                f"  {r:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} failed={d['failed']} ({d['achieved_cps']}/s)"
                f"   gateway {'ok ' if g['ok'] else 'BAD'} failed={g['failed']} ({g['achieved_cps']}/s)"
                f" cpu {g['gw_cpu_ms_per_call']}"
            )
        for r, d in report["reject"].get("direct_only_steps", {}).items():
            print(
                f"  {r:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} failed={d['failed']} ({d['achieved_cps']}/s)"
                f"   gateway not run"
            )
    if report.get("anomalies"):
        print("anomalies:", *report["anomalies"], sep="\n  ")


def write_report(report: dict, out: Path | None, stamp: str) -> list[Path]:
    """--out FILE: that file. Otherwise a timestamped report and the latest as gateway_bench.json."""
    text = json.dumps(report, indent=2, default=str) + "\n"
    if out is not None:
        paths = [out]
    else:
        suffix = ("-quick" if report["quick"] else "") + (
            "-partial" if report.get("sections") != list(SECTIONS) else ""
        )
        paths = [REPORTS / f"gateway_bench-{stamp}{suffix}.json", REPORT]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter steps (~3 minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (SIPp traces, gateway log)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the JSON report there only (default: bench/reports/gateway_bench-<time>[-quick].json "
        "and bench/reports/gateway_bench.json)",
    )
    ap.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)",
    )
    args = ap.parse_args(argv)
    sections = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(unknown)}; expected some of {', '.join(SECTIONS)}")
    sections = [x for x in SECTIONS if x in sections]
    profile = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    bench = Bench(profile, workdir)
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    report: dict = {
        "quick": args.quick,
        "sections": sections,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or None,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sipp": subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[0]
            .strip()
            if shutil.which("sipp")
            else None,
            "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "mem_total_mb": _mem_total_mb(),
        },
        "profile": asdict(profile),
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "workload": {
            "relay_organizer": RELAY_ORGANIZER,
            "relay_numbers": f"{N_NUMBERS} US numbers in turn",
            "reject_organizer": REJECT_ORGANIZER,
            "guard_overrides": [n for _, n in GUARD_OVERRIDES],
            "extra_gateway": EXTRA_GATEWAY.strip().splitlines(),
            "store": "SQLite (WAL) ledger; the load section also PostgreSQL (scripts/pg_test_server.sh)",
            "logging": "info, JSON canonical line per call",
        },
    }
    interrupted = False
    pg: PgServer | None = None

    def on_term(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if "load" in sections:
            log("starting a throw-away PostgreSQL server (scripts/pg_test_server.sh)")
            pg = PgServer().start()
            report["postgres_server"] = {"url": pg.url, "error": pg.error}
            report["load"] = bench.load(pg)
            pg.stop()
        if bench.idle_cpu_ms_per_s is not None:
            report["gateway_idle_cpu_ms_per_s"] = round(bench.idle_cpu_ms_per_s, 2)
        if "ramp" in sections:
            report["relay"] = bench.relay_ramp()
            report["latency"] = latency_comparison(report["relay"])
        if "hold" in sections:
            report["concurrency"] = bench.hold()
        if "reject" in sections:
            report["reject"] = bench.reject_ramp()
        if "seeded" in sections:
            report["seeded"] = bench.seeded()
        if bench.idle_cpu_ms_per_s is not None:
            report["gateway_idle_cpu_ms_per_s"] = round(bench.idle_cpu_ms_per_s, 2)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping SIPp, the gateway and PostgreSQL")
    finally:
        bench.cleanup()
        if pg is not None:
            pg.stop()
    report["gateway_exit_code"] = bench.gw.proc.returncode if bench.gw and getattr(bench.gw, "proc", None) else None
    report["anomalies"] = bench.anomalies
    report["runtime_s"] = round(time.monotonic() - started, 1)
    report["workdir"] = str(workdir) if args.keep else None
    if interrupted:
        report["incomplete"] = True
    else:
        report["summary"] = summarize(report)
    paths = write_report(report, args.out, stamp)
    if "summary" in report:
        print_table(report)
    print(
        f"\nreport: {', '.join(str(p) for p in paths)}  runtime {report['runtime_s']} s"
        + (f"  workdir {workdir}" if args.keep else "")
    )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if interrupted else 0


def _mem_total_mb() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    sys.exit(main())
