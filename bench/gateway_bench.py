"""Benchmark: SIPp bridge -> gateway (full policy + SQLite ledger) -> SIPp trunk.

    .venv/bin/python bench/gateway_bench.py [--quick] [--keep] [--out FILE]

Everything runs on loopback, on the same 2 cores: SIPp (bridge UAC and trunk
UAS) and the gateway compete for CPU, so every gateway number is reported next
to SIPp -> SIPp directly, measured in the same run with the same scenarios
(tests/integration/sipp/*.xml) at the same rates.

Sections (see bench/README.md for what each number means):
  relay ramp      for each offered rate: SIPp->SIPp direct, then through the
                  gateway; zero failed calls required; then a short bisection
                  between the last passing and the first failing rate.
  latency         INVITE->200 at the bridge (SIPp -trace_rtt, 1 ms resolution):
                  p50/p99/max through the gateway minus direct at the same rate.
  cpu             gateway utime+stime (/proc/<pid>/stat) per relayed call,
                  early (near-empty ledger) and late (ledger holding every
                  call of the run), idle loop cost subtracted and not.
  concurrency     >= 3,000 relayed calls held at once (long -d); gateway RSS at
                  the plateau; CPU to hold them.
  reject path     unknown organiser -> 403 from the gateway, ramp of rates,
                  zero failed, CPU per reject; SIPp->SIPp 403 as the reference.

Writes bench/reports/gateway_bench.json and prints a table. Every loop is
bounded in count and time; a full run takes ~6-9 minutes, --quick ~2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.gateway_proc import GatewayProcess, example_policy_text  # noqa: E402
from tests.integration.sipp_runner import SCENARIOS, free_port, read_stats, sipp_binary  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "gateway_bench.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TARGETS = {
    "relay_rate_cps": 400,            # >= , zero failed calls
    "cpu_ms_per_relayed_call": 1.0,   # <= , policy and ledger included
    "p99_added_delay_ms": 20.0,       # <=
    "concurrent_relayed_calls": 3000,  # >=
    "reject_rate_cps": 1500,          # >= , zero failed
}

RELAY_ORGANIZER = "erin@fabrikam.com"    # US numbers: usca_unlimited bucket, no pool limit
RELAY_LOCATION = "US"
REJECT_ORGANIZER = "mallory@unknown.example"   # not in the directory: 403 organizer_unknown
RTT_FREQ = 50                            # every step's call count is a multiple of this
N_NUMBERS = 500                          # distinct US destinations, dialled in turn (-inf)

# Raised so that one organiser can carry a load test; everything else is the example policy.
GUARD_OVERRIDES = [
    ("max_concurrent_per_organizer = 10", "max_concurrent_per_organizer = 100000"),
    ("max_concurrent_per_tenant = 300", "max_concurrent_per_tenant = 100000"),
    ("max_calls_per_minute_per_organizer = 20", "max_calls_per_minute_per_organizer = 1000000"),
    ("max_distinct_destinations_per_day = 200", "max_distinct_destinations_per_day = 1000000"),
    ("fair_use_minutes_per_month = 10000", "fair_use_minutes_per_month = 1000000"),
]
EXTRA_GATEWAY = "max_calls_per_second = 5000\nmax_concurrent_calls = 4000\n"


@dataclass
class Profile:
    relay_rates: list[int]
    relay_calls_min: int
    relay_calls_max: int
    step_seconds: float          # calls per step ~ rate * step_seconds, clamped to [min, max]
    bisect_steps: int
    talk_ms: int
    cpu_rate: int
    cpu_calls: int
    seed_calls: int              # settled calls in the ledger for the "late" CPU step
    hold_calls: int
    hold_rate: int
    reject_rates: list[int]
    reject_calls: int


FULL = Profile(relay_rates=[100, 200, 300, 400, 500, 600, 800], relay_calls_min=2000, relay_calls_max=4000,
               step_seconds=6.0, bisect_steps=3, talk_ms=500, cpu_rate=100, cpu_calls=1000,
               seed_calls=10000, hold_calls=3200, hold_rate=150,
               reject_rates=[1000, 1500, 2000, 2500, 3000], reject_calls=4000)
QUICK = Profile(relay_rates=[100, 200, 400, 600], relay_calls_min=1000, relay_calls_max=1500,
                step_seconds=3.0, bisect_steps=0, talk_ms=300, cpu_rate=100, cpu_calls=500,
                seed_calls=3000, hold_calls=3000, hold_rate=150,
                reject_rates=[1000, 1500, 2000, 3000], reject_calls=2000)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- processes

def proc_cpu_ms(pid: int) -> float:
    """utime + stime of a live process (all threads), in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK


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
        self.cmd += ["-i", "127.0.0.1", "-nostdin",
                     "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                     "-trace_err", "-error_file", str(workdir / f"{name}-errors.log"),
                     "-max_recv_loops", "10000", "-max_sched_loops", "10000", *args]
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.cpu_ms: float | None = None
        self.started = 0.0
        self.ended = 0.0

    def start(self) -> Sipp:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=(self.workdir / f"{self.name}.out").open("wb"),
                                     stderr=(self.workdir / f"{self.name}.err").open("wb"), cwd=self.workdir)
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


# --------------------------------------------------------------------------- gateway log

class GatewayLog:
    """Reads the gateway's JSON log incrementally (it grows by ~1 KB per call)."""

    ERROR_EVENTS = {"invite_failed", "callback_failed", "loop_job_failed", "ledger_write_failed",
                    "trunk_call_failed"}

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
            "errors": errors,
            "gateway_setup_ms": pct(setup),
        }


def pct(values: list[float]) -> dict | None:
    if not values:
        return None
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

    return {"n": len(v), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": v[-1],
            "mean": round(statistics.fmean(v), 3)}


# --------------------------------------------------------------------------- ledger seeding

def seed_ledger(db_path: Path, n: int) -> None:
    """Settled calls of the relay organiser, earlier today, through the store API
    (what a busy tenant's ledger holds later in a month)."""
    from datetime import datetime, timedelta, timezone

    from store import BucketSpec, CallOpen, open_store

    store = open_store(f"sqlite:///{db_path}", instance_id="bench-seed")
    try:
        store.migrate()
        now = datetime.now(timezone.utc)
        for i in range(n):
            started = now - timedelta(seconds=120 + (n - i) * 0.25)
            cid = f"seed-{i}@bench"
            store.open_call(CallOpen(
                call_id=cid, tenant="fabrikam", organizer=RELAY_ORGANIZER, e164=f"+1212200{1000 + i % N_NUMBERS:04d}",
                region="US", tz="America/New_York", started_at=started,
                chain=(BucketSpec("usca_unlimited", None),), increment_s=60, max_duration_s=14400))
            store.answered(cid, started + timedelta(seconds=1))
            store.close_call(cid, started + timedelta(seconds=61), "allowed", a_status=200, b_status=200)
    finally:
        store.close()


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
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_engine.py"), str(self.sip_port),
                                      f"127.0.0.1:{self.trunk_port}"], stdout=self.log_path.open("wb"),
                                     stderr=subprocess.STDOUT)
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
    kind: str                   # relay / reject
    path: str                   # direct / gateway
    rate: int                   # offered calls/s
    calls: int
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    unexpected: int = 0
    ok: bool = False
    achieved_cps: float = 0.0   # answers per second between the first and the last final response
    wall_s: float = 0.0
    latency_ms: dict | None = None
    gw_cpu_ms: float | None = None
    gw_cpu_ms_per_call: float | None = None
    gw_cpu_ms_per_call_net: float | None = None   # idle loop cost subtracted
    gw_rss_mb: float | None = None             # after the step
    gw_rss_before_mb: float | None = None
    ledger_calls_before: int | None = None
    sipp_cpu_ms_per_call: float | None = None     # bridge + trunk SIPp, for scale
    gateway_log: dict | None = None
    note: str = ""
    trunk_successful: int | None = None
    # CPU used on the machine by anything but this step's gateway and SIPps, as a
    # share of all cores: other people's builds and tests disturb the numbers.
    foreign_cpu_percent: float | None = None


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

    def start_gateway(self, label: str, seed_calls: int = 0) -> None:
        """A fresh gateway (fresh SQLite ledger), optionally on a ledger already
        holding `seed_calls` settled calls of the relay organiser this month."""
        self.stop_gateway()
        self.gw_no += 1
        self.gw = GatewayProcess.create(self.workdir / f"gw{self.gw_no:02d}-{label}", policy_text=self.policy_text(),
                                        extra_gateway=EXTRA_GATEWAY)
        if seed_calls:
            t = time.monotonic()
            seed_ledger(self.gw.workdir / "ledger.db", seed_calls)
            log(f"  seeded the ledger with {seed_calls} settled calls in {time.monotonic() - t:.1f}s")
        self.gw.start(timeout_s=30)
        self.gwlog = GatewayLog(self.gw.log_path)
        self.ledger_calls = seed_calls
        time.sleep(0.5)
        if self.idle_cpu_ms_per_s is None:
            c0, t0 = proc_cpu_ms(self.gw.proc.pid), time.monotonic()
            time.sleep(2.0)
            self.idle_cpu_ms_per_s = (proc_cpu_ms(self.gw.proc.pid) - c0) / (time.monotonic() - t0)
        log(f"gateway #{self.gw_no} ({label}) pid {self.gw.proc.pid} on {self.gw.target}; idle loop "
            f"{self.idle_cpu_ms_per_s:.1f} ms CPU/s, RSS {proc_rss_mb(self.gw.proc.pid)[0]:.0f} MB")

    def stop_gateway(self) -> None:
        if self.gw is not None and self.gw.proc is not None and self.gw.proc.poll() is None:
            try:
                self.gw.stop(timeout_s=20)
            except AssertionError as exc:
                log(f"gateway stop: {exc}")
            events = GatewayLog(self.gw.log_path)
            events.offset = max(0, self.gw.log_path.stat().st_size - 4000)
            for e in events.read_since_mark():
                if e.get("event") == "drain_timeout":
                    self.anomalies.append(f"gateway #{self.gw_no}: {e.get('active_calls')} calls still counted "
                                          "active at shutdown after every SIPp call had ended")

    def cleanup(self) -> None:
        for s in self.running:
            s.stop()
        self.stop_gateway()

    # --- one step -------------------------------------------------------------------

    def _trunk(self, d: Path, port: int, scenario: str, calls: int) -> Sipp:
        path = self.sc / scenario if (self.sc / scenario).exists() else SCENARIOS / scenario
        trunk = Sipp("trunk", d / "trunk", path, None,
                     ["-p", str(port), "-m", str(calls), "-l", str(max(10000, calls * 2)),
                      "-mp", str(free_media_port()), "-timeout", "300s"])
        self.running.append(trunk.start())
        deadline = time.monotonic() + 5
        while not port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        return trunk

    def run_step(self, *, kind: str, path: str, rate: int, calls: int, talk_ms: int = 0,
                 limit: int | None = None, sample=None) -> Step:
        # SIPp writes -trace_rtt in batches of -rtt_freq calls and drops a last partial batch.
        calls = max(RTT_FREQ, calls // RTT_FREQ * RTT_FREQ)
        self.step_no += 1
        d = self.workdir / f"step{self.step_no:02d}-{kind}-{path}-{rate}"
        step = Step(kind=kind, path=path, rate=rate, calls=calls)
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
            args = ["-inf", str(self.sc / "numbers.csv"), "-key", "organizer", RELAY_ORGANIZER,
                    "-key", "location", RELAY_LOCATION, "-d", str(talk_ms)]
        else:
            scenario = self.sc / "bridge_403.xml"
            args = ["-s", "+12122001000", "-key", "organizer", REJECT_ORGANIZER, "-key", "location", "US"]
        open_s = calls / rate
        bound_s = open_s + talk_ms / 1000 + 25
        args += ["-p", str(free_port()), "-m", str(calls), "-r", str(rate), "-rp", "1000",
                 "-l", str(limit or calls), "-mp", str(free_media_port()), "-trace_rtt", "-rtt_freq", str(RTT_FREQ),
                 "-recv_timeout", "5000", "-timeout", f"{int(bound_s)}s", "-timeout_error"]
        bridge = Sipp("bridge", d / "bridge", scenario, target, args)

        gw_pid = self.gw.proc.pid if via_gw and self.gw else None
        if via_gw:
            self.gwlog.mark()
            step.ledger_calls_before = self.ledger_calls
            step.gw_rss_before_mb = round(proc_rss_mb(gw_pid)[0], 1)
            cpu0 = proc_cpu_ms(gw_pid)
        t0 = time.monotonic()
        busy0, self_cpu0 = system_busy_ms(), time.process_time() * 1000
        trunk_cpu0 = proc_cpu_ms(trunk.proc.pid) if trunk is not None and not trunk.poll() else 0.0
        self.running.append(bridge.start())
        bridge.wait(bound_s + 10, on_tick=sample)
        step.wall_s = round(time.monotonic() - t0, 2)
        if via_gw:
            # CPU is read when the bridge is done: every call of the step has ended.
            cpu1 = proc_cpu_ms(gw_pid)
            step.gw_cpu_ms = round(cpu1 - cpu0, 1)
            step.gw_cpu_ms_per_call = round(step.gw_cpu_ms / calls, 3)
            step.gw_cpu_ms_per_call_net = round((step.gw_cpu_ms - self.idle_cpu_ms_per_s * step.wall_s) / calls, 3)
            step.gw_rss_mb = round(proc_rss_mb(gw_pid)[0], 1)
        busy1, self_cpu1 = system_busy_ms(), time.process_time() * 1000
        trunk_cpu_mid = proc_cpu_ms(trunk.proc.pid) if trunk is not None and not trunk.poll() else None
        if trunk is not None:
            trunk.wait(8)
            step.trunk_successful = _int(trunk.stats(), "SuccessfulCall(C)")
        ours = (step.gw_cpu_ms or 0.0) + (bridge.cpu_ms or 0.0) + (self_cpu1 - self_cpu0)
        if trunk is not None:
            ours += (trunk_cpu_mid if trunk_cpu_mid is not None else (trunk.cpu_ms or 0.0)) - trunk_cpu0
        step.foreign_cpu_percent = round(max(0.0, busy1 - busy0 - ours) / (step.wall_s * 1000 * (os.cpu_count() or 1))
                                         * 100, 1) if step.wall_s else None
        stats = bridge.stats()
        step.successful = _int(stats, "SuccessfulCall(C)")
        step.failed = _int(stats, "FailedCall(C)")
        step.retransmissions = _int(stats, "Retransmissions(C)")
        step.unexpected = _int(stats, "FailedUnexpectedMessage(C)")
        rtt = bridge.rtt_ms()
        self.last_rtt = rtt
        if rtt:
            step.latency_ms = pct([r for _, r in rtt])
            span_s = (rtt[-1][0] - rtt[0][0]) / 1000
            step.achieved_cps = round((len(rtt) - 1) / span_s, 1) if span_s > 0 else 0.0
        cpu = [s.cpu_ms for s in (bridge, trunk) if s is not None and s.cpu_ms is not None]
        step.sipp_cpu_ms_per_call = round(sum(cpu) / calls, 3) if cpu else None
        if via_gw:
            deadline = time.monotonic() + 5
            summary = self.gwlog.summarize(self.gwlog.read_since_mark())
            while (getattr(self.gw, "logs_calls", True) and summary["call_lines"] < step.successful
                   and time.monotonic() < deadline):
                time.sleep(0.2)
                summary = self.gwlog.summarize(self.gwlog.read_since_mark())
            step.gateway_log = summary
            self.ledger_calls += summary["call_lines"] if kind == "relay" else 0
        step.ok = (bridge.returncode == 0 and step.failed == 0 and step.successful == calls
                   and step.achieved_cps >= 0.95 * rate)
        if step.failed == 0 and step.successful == calls and step.achieved_cps < 0.95 * rate:
            step.note = "no call failed, but SIPp did not hold the offered rate"
        for s in (bridge, trunk):
            if s is not None:
                s.stop()
                self.running.remove(s)
        lat = step.latency_ms or {}
        extra = ""
        if via_gw:
            extra = (f" gw {step.gw_cpu_ms_per_call:.3f} ms CPU/call (net {step.gw_cpu_ms_per_call_net:.3f}),"
                     f" RSS {step.gw_rss_mb:.0f} MB, log {step.gateway_log['outcomes']}"
                     + (f" errors {step.gateway_log['errors']}" if step.gateway_log["errors"] else ""))
        if step.foreign_cpu_percent is not None and step.foreign_cpu_percent > 10:
            self.anomalies.append(f"step {self.step_no} ({kind} {path} {rate}/s): other processes used "
                                  f"{step.foreign_cpu_percent}% of the machine's CPU during the step")
        log(f"  {kind:6s} {path:7s} {rate:5d}/s x{calls}: {'PASS' if step.ok else 'FAIL'} other-cpu={step.foreign_cpu_percent}% "
            f"ok={step.successful} failed={step.failed} retrans={step.retransmissions} "
            f"achieved={step.achieved_cps}/s rtt p50/p99/max={lat.get('p50')}/{lat.get('p99')}/{lat.get('max')} ms"
            f"{extra}")
        return step

    def calls_for(self, rate: int) -> int:
        floor = min(self.p.relay_calls_min, rate * 10)   # at most ~10 s per step at low rates
        return int(min(self.p.relay_calls_max, max(floor, rate * self.p.step_seconds)))

    # --- sections -------------------------------------------------------------------

    def relay_ramp(self) -> dict:
        log("relay ramp: direct SIPp->SIPp, then through the gateway, at each rate")
        pairs: dict[int, dict[str, Step]] = {}

        def run_rate(rate: int) -> tuple[Step, Step]:
            calls = self.calls_for(rate)
            direct = self.run_step(kind="relay", path="direct", rate=rate, calls=calls, talk_ms=self.p.talk_ms)
            self.start_gateway(f"relay-{rate}")
            gw = self.run_step(kind="relay", path="gateway", rate=rate, calls=calls, talk_ms=self.p.talk_ms)
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
        # The load generator's own ceiling: SIPp -> SIPp at the rates the gateway did not reach.
        direct_only: dict[int, Step] = {}
        for rate in self.p.relay_rates:
            if rate in pairs:
                continue
            direct_only[rate] = self.run_step(kind="relay", path="direct", rate=rate, calls=self.calls_for(rate),
                                              talk_ms=self.p.talk_ms)
            if not direct_only[rate].ok:
                break
        self.direct_only_relay = direct_only
        direct_pass = [r for r, p in pairs.items() if p["direct"].ok] + [r for r, st in direct_only.items() if st.ok]
        return {
            "max_rate_zero_failures_cps": last_pass,
            "first_failing_rate_cps": first_fail,
            "direct_max_rate_zero_failures_cps": max(direct_pass) if direct_pass else None,
            "direct_failed_at_gateway_failing_rate": (not pairs[first_fail]["direct"].ok) if first_fail else None,
            "steps": {str(r): {k: asdict(v) for k, v in p.items()} for r, p in sorted(pairs.items())},
            "direct_only_steps": {str(r): asdict(st) for r, st in sorted(direct_only.items())},
        }

    def bare_cpu_step(self, rate: int, calls: int) -> dict:
        """The same load through bench/bare_engine.py: the SIP engine alone, the floor under the gateway."""
        log(f"cpu per relayed call (bare engine relay, no policy/ledger/logging): {calls} calls at {rate}/s")
        self.stop_gateway()
        self.gw_no += 1
        self.gw = BareRelay(self.workdir / f"gw{self.gw_no:02d}-bare").start()
        self.gwlog = GatewayLog(self.gw.log_path)
        time.sleep(0.5)
        step = self.run_step(kind="relay", path="gateway", rate=rate, calls=calls, talk_ms=self.p.talk_ms)
        self.stop_gateway()
        self.gw = None
        return asdict(step)

    def cpu_step(self, label: str, seed_calls: int, rate: int, calls: int) -> dict:
        log(f"cpu per relayed call ({label}): {calls} calls at {rate}/s")
        self.start_gateway(label, seed_calls=seed_calls)
        step = self.run_step(kind="relay", path="gateway", rate=rate, calls=calls, talk_ms=self.p.talk_ms)
        return asdict(step)

    def hold(self) -> dict:
        n, rate = self.p.hold_calls, self.p.hold_rate
        open_s = n / rate
        talk_ms = int((open_s + 6.0) * 1000)
        log(f"concurrency: {n} calls at {rate}/s, each talking {talk_ms / 1000:.1f}s (all {n} up at once)")
        self.start_gateway("hold")
        pid = self.gw.proc.pid
        rss_before = proc_rss_mb(pid)[0]
        samples: list[tuple[float, float, float]] = []   # (monotonic, cpu_ms, rss_mb)

        def sample():
            samples.append((time.monotonic(), proc_cpu_ms(pid), proc_rss_mb(pid)[0]))

        t0 = time.monotonic()
        step = self.run_step(kind="relay", path="gateway", rate=rate, calls=n, talk_ms=talk_ms,
                             limit=n + 200, sample=sample)
        rtt = self.last_rtt
        out = {"calls": n, "rate": rate, "talk_s": talk_ms / 1000, "ok": step.ok, "successful": step.successful,
               "failed": step.failed, "rss_before_mb": round(rss_before, 1)}
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
                if len(plateau) >= 2 and plateau[-1][0] > plateau[0][0]:
                    out["hold_cpu_percent_of_core"] = round(
                        (plateau[-1][1] - plateau[0][1]) / ((plateau[-1][0] - plateau[0][0]) * 1000) * 100, 1)
                    out["plateau_s"] = round(plateau[-1][0] - plateau[0][0], 2)
            out["latency_ms"] = step.latency_ms
        if samples:
            out["rss_max_mb"] = round(max(s[2] for s in samples), 1)
        out["rss_hwm_mb"] = round(proc_rss_mb(pid)[1], 1)
        if "rss_at_peak_mb" in out:
            out["rss_per_call_kb"] = round((out["rss_at_peak_mb"] - rss_before) * 1024 / n, 1)
        logged = step.gateway_log or {}
        out["gateway_log"] = logged
        out["all_relayed"] = logged.get("relayed_200") == n and step.successful == n and step.trunk_successful == n
        out["trunk_successful"] = step.trunk_successful
        out["gw_cpu_ms_per_call"] = step.gw_cpu_ms_per_call
        log(f"  concurrent at last answer: {out.get('concurrent_at_last_answer')}, RSS at peak "
            f"{out.get('rss_at_peak_mb')} MB (before {rss_before:.0f} MB), hold CPU "
            f"{out.get('hold_cpu_percent_of_core')}% of a core, all relayed: {out['all_relayed']}")
        return out

    def reject_ramp(self) -> dict:
        log("reject path: unknown organiser -> 403 (gateway) vs SIPp trunk answering 403 (direct)")
        self.start_gateway("reject")
        pairs: dict[int, dict[str, Step]] = {}
        last_pass = first_fail = None
        for rate in self.p.reject_rates:
            calls = self.p.reject_calls
            direct = self.run_step(kind="reject", path="direct", rate=rate, calls=calls)
            gw = self.run_step(kind="reject", path="gateway", rate=rate, calls=calls)
            pairs[rate] = {"direct": direct, "gateway": gw}
            gw_403 = (gw.gateway_log or {}).get("outcomes", {}).get("deny:organizer_unknown:403", 0)
            if gw.ok and gw_403 == calls:
                last_pass = rate
            else:
                first_fail = rate
                break
        direct_only: dict[int, Step] = {}
        for rate in self.p.reject_rates:
            if rate in pairs:
                continue
            direct_only[rate] = self.run_step(kind="reject", path="direct", rate=rate, calls=self.p.reject_calls)
            if not direct_only[rate].ok:
                break
        direct_pass = [r for r, p in pairs.items() if p["direct"].ok] + [r for r, st in direct_only.items() if st.ok]
        return {
            "direct_only_steps": {str(r): asdict(st) for r, st in sorted(direct_only.items())},
            "max_rate_zero_failures_cps": last_pass,
            "first_failing_rate_cps": first_fail,
            "direct_max_rate_zero_failures_cps": max(direct_pass) if direct_pass else None,
            "steps": {str(r): {k: asdict(v) for k, v in p.items()} for r, p in sorted(pairs.items())},
        }


# --------------------------------------------------------------------------- report

def latency_comparison(relay: dict) -> dict:
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


def summarize(report: dict) -> dict:
    relay, rej, hold = report["relay"], report["reject"], report["concurrency"]
    lat = report["latency"]
    max_rate = relay["max_rate_zero_failures_cps"]
    # The added delay at the highest rate the gateway passed (else the lowest rate run).
    ref_rate = str(max_rate) if max_rate and str(max_rate) in lat else (min(lat, key=int) if lat else None)
    tgt_rate = None
    cpu_early = report["cpu"]["early"]["gw_cpu_ms_per_call"]
    cpu_late = report["cpu"]["late"]["gw_cpu_ms_per_call"] if report["cpu"].get("late") else None
    bare = report["cpu"].get("bare_engine", {}).get("gw_cpu_ms_per_call")
    rej_rate = rej["max_rate_zero_failures_cps"]
    rej_step = rej["steps"].get(str(rej_rate), {}).get("gateway") if rej_rate else None
    s = {
        "relay_max_rate_cps": max_rate,
        "relay_direct_max_rate_cps": relay["direct_max_rate_zero_failures_cps"],
        "relay_rate_ratio_gateway_vs_direct": _ratio(max_rate, relay["direct_max_rate_zero_failures_cps"]),
        "latency_rate_cps": int(tgt_rate or ref_rate) if (tgt_rate or ref_rate) else None,
        "latency_at_rate": lat.get(tgt_rate or ref_rate) if (tgt_rate or ref_rate) else None,
        "p99_added_delay_ms": lat[tgt_rate or ref_rate]["added"]["p99"] if (tgt_rate or ref_rate) else None,
        "latency_lowest_rate_cps": int(min(lat, key=int)) if lat else None,
        "max_rate_p99_added_within_target_cps": max(
            (int(r) for r, v in lat.items() if v["gateway_ok"] and v["added"]["p99"] <= TARGETS["p99_added_delay_ms"]),
            default=None),
        "latency_at_lowest_rate": lat[min(lat, key=int)] if lat else None,
        "cpu_ms_per_relayed_call_early": cpu_early,
        "cpu_ms_per_call_bare_engine": bare,
        "cpu_ratio_gateway_vs_bare_engine": _ratio(cpu_early, bare),
        "cpu_ms_per_relayed_call_late": cpu_late,
        "ledger_calls_at_late_cpu_step": report["cpu"]["late"]["ledger_calls_before"] if cpu_late else None,
        "concurrent_relayed_calls": hold.get("concurrent_at_last_answer") if hold.get("all_relayed") else 0,
        "rss_at_peak_mb": hold.get("rss_at_peak_mb"),
        "reject_max_rate_cps": rej_rate,
        "reject_direct_max_rate_cps": rej["direct_max_rate_zero_failures_cps"],
        "reject_rate_ratio_gateway_vs_direct": _ratio(rej_rate, rej["direct_max_rate_zero_failures_cps"]),
        "cpu_ms_per_reject": rej_step["gw_cpu_ms_per_call"] if rej_step else None,
    }
    s["targets"] = {
        "relay_rate_cps": _verdict(max_rate, TARGETS["relay_rate_cps"], ">="),
        "cpu_ms_per_relayed_call": _verdict(cpu_early, TARGETS["cpu_ms_per_relayed_call"], "<="),
        "cpu_ms_per_relayed_call_seeded_ledger": _verdict(cpu_late, TARGETS["cpu_ms_per_relayed_call"], "<="),
        "p99_added_delay_ms": _verdict(s["p99_added_delay_ms"], TARGETS["p99_added_delay_ms"], "<="),
        "concurrent_relayed_calls": _verdict(s["concurrent_relayed_calls"], TARGETS["concurrent_relayed_calls"], ">="),
        "reject_rate_cps": _verdict(rej_rate, TARGETS["reject_rate_cps"], ">="),
    }
    return s


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _verdict(value, target, op):
    if value is None:
        return {"value": None, "target": f"{op} {target}", "met": False}
    met = value >= target if op == ">=" else value <= target
    return {"value": value, "target": f"{op} {target}", "met": met}


def print_table(report: dict) -> None:
    s = report["summary"]
    print()
    print("dialout-gateway benchmark" + (" (--quick)" if report["quick"] else "") +
          f" — {report['machine']['cpus']} CPUs shared by SIPp and the gateway, loopback")
    print(f"{'metric':44s} {'gateway':>12s} {'direct':>10s} {'ratio':>7s}  target")
    t = s["targets"]

    def row(name, gw, direct=None, ratio=None, target=""):
        f = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) and v < 10 else f"{v}")  # noqa: E731
        print(f"{name:44s} {f(gw):>12s} {f(direct):>10s} {f(ratio):>7s}  {target}")

    def mark(key):
        return f"{t[key]['target']} {'MET' if t[key]['met'] else 'NOT MET'}"

    row("relay: max rate, zero failed (calls/s)", s["relay_max_rate_cps"], s["relay_direct_max_rate_cps"],
        s["relay_rate_ratio_gateway_vs_direct"], mark("relay_rate_cps"))
    la = s["latency_at_rate"]
    if la:
        for k in ("p50", "p99", "max"):
            ratio = round(la["gateway"][k] / la["direct"][k], 2) if la["direct"][k] else None
            row(f"INVITE->200 {k} at {s['latency_rate_cps']}/s (ms)", la["gateway"][k], la["direct"][k], ratio)
        row("  p99 added delay (ms)", s["p99_added_delay_ms"], None, None, mark("p99_added_delay_ms"))
    row(f"  highest rate with p99 added <= {TARGETS['p99_added_delay_ms']:g} ms (calls/s)",
        s["max_rate_p99_added_within_target_cps"])
    lo = s.get("latency_at_lowest_rate")
    if lo and s["latency_lowest_rate_cps"] != s["latency_rate_cps"]:
        for k in ("p50", "p99", "max"):
            row(f"INVITE->200 {k} at {s['latency_lowest_rate_cps']}/s (ms)", lo["gateway"][k], lo["direct"][k])
        row("  p99 added delay (ms)", lo["added"]["p99"])
    row("gateway CPU per relayed call, empty ledger (ms)", s["cpu_ms_per_relayed_call_early"], None, None,
        mark("cpu_ms_per_relayed_call"))
    row("  bare engine relay, same load (ms; ratio = gateway/bare)", s["cpu_ms_per_call_bare_engine"], None,
        s["cpu_ratio_gateway_vs_bare_engine"])
    row(f"  same, ledger holding {s['ledger_calls_at_late_cpu_step']} calls (ms)",
        s["cpu_ms_per_relayed_call_late"], None, None, mark("cpu_ms_per_relayed_call_seeded_ledger"))
    row("concurrent relayed calls held", s["concurrent_relayed_calls"], None, None, mark("concurrent_relayed_calls"))
    row("gateway RSS at that peak (MB)", s["rss_at_peak_mb"])
    row("reject 403: max rate, zero failed (calls/s)", s["reject_max_rate_cps"], s["reject_direct_max_rate_cps"],
        s["reject_rate_ratio_gateway_vs_direct"], mark("reject_rate_cps"))
    row("gateway CPU per reject (ms)", s["cpu_ms_per_reject"])
    print()
    print("relay steps (INVITE->200 p50/p99/max ms, 1 ms resolution; CPU = gateway ms per call):")
    for rate, pair in report["relay"]["steps"].items():
        d, g = pair["direct"], pair["gateway"]
        dl, gl = d["latency_ms"] or {}, g["latency_ms"] or {}
        print(f"  {rate:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} {dl.get('p50')}/{dl.get('p99')}/{dl.get('max')}"
              f" ({d['achieved_cps']}/s)   gateway {'ok ' if g['ok'] else 'BAD'} failed={g['failed']}"
              f" {gl.get('p50')}/{gl.get('p99')}/{gl.get('max')} ({g['achieved_cps']}/s) cpu {g['gw_cpu_ms_per_call']}")
    for rate, d in report["relay"].get("direct_only_steps", {}).items():
        dl = d["latency_ms"] or {}
        print(f"  {rate:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} {dl.get('p50')}/{dl.get('p99')}/{dl.get('max')}"
              f" ({d['achieved_cps']}/s)   gateway not run (failed at a lower rate)")
    print("reject steps:")
    for rate, pair in report["reject"]["steps"].items():
        d, g = pair["direct"], pair["gateway"]
        print(f"  {rate:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} failed={d['failed']} ({d['achieved_cps']}/s)"
              f"   gateway {'ok ' if g['ok'] else 'BAD'} failed={g['failed']} ({g['achieved_cps']}/s)"
              f" cpu {g['gw_cpu_ms_per_call']}")
    for rate, d in report["reject"].get("direct_only_steps", {}).items():
        print(f"  {rate:>5s}/s  direct {'ok ' if d['ok'] else 'BAD'} failed={d['failed']} ({d['achieved_cps']}/s)"
              f"   gateway not run")
    if report.get("anomalies"):
        print("anomalies:", *report["anomalies"], sep="\n  ")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter steps (~2 minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (SIPp traces, gateway log)")
    ap.add_argument("--out", type=Path, default=REPORT, help=f"JSON report (default {REPORT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    profile = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    bench = Bench(profile, workdir)
    started = time.monotonic()
    report: dict = {
        "quick": args.quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "sipp": subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True).stdout.strip()
                    .splitlines()[0].strip() if shutil.which("sipp") else None},
        "profile": asdict(profile),
        "targets": TARGETS,
        "workload": {"relay_organizer": RELAY_ORGANIZER, "relay_numbers": f"{N_NUMBERS} US numbers in turn",
                     "reject_organizer": REJECT_ORGANIZER, "guard_overrides": [n for _, n in GUARD_OVERRIDES],
                     "extra_gateway": EXTRA_GATEWAY.strip().splitlines(), "store": "SQLite (WAL) ledger",
                     "logging": "info, JSON canonical line per call"},
    }
    interrupted = False

    def on_term(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        report["cpu"] = {"early": bench.cpu_step("cpu-empty-ledger", 0, profile.cpu_rate, profile.cpu_calls)}
        report["cpu"]["bare_engine"] = bench.bare_cpu_step(profile.cpu_rate, profile.cpu_calls)
        report["gateway_idle_cpu_ms_per_s"] = round(bench.idle_cpu_ms_per_s, 2)
        report["relay"] = bench.relay_ramp()
        report["latency"] = latency_comparison(report["relay"])
        report["concurrency"] = bench.hold()
        report["reject"] = bench.reject_ramp()
        # Same rate and count as the empty-ledger step: CPU per call also depends
        # on the rate (each loop wake-up has a fixed cost), so only the ledger differs.
        report["cpu"]["late"] = bench.cpu_step("cpu-seeded-ledger", profile.seed_calls, profile.cpu_rate,
                                               profile.cpu_calls)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping SIPp and the gateway")
    finally:
        bench.cleanup()
    report["gateway_exit_code"] = bench.gw.proc.returncode if bench.gw and bench.gw.proc else None
    report["anomalies"] = bench.anomalies
    report["runtime_s"] = round(time.monotonic() - started, 1)
    report["workdir"] = str(workdir) if args.keep else None
    if interrupted or "reject" not in report:
        report["incomplete"] = True
    else:
        report["summary"] = summarize(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if "summary" in report:
        print_table(report)
    print(f"\nreport: {args.out}  runtime {report['runtime_s']} s"
          + (f"  workdir {workdir}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
