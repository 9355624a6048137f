"""Run real SIPp (Debian `sip-tester`) against the gateway over loopback."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).parent / "sipp"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port free for both UDP and TCP at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    stats: dict
    stdout: str
    stderr: str


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if not path:
        raise RuntimeError("sipp not found: run `make test` (scripts/setup.sh --test installs sip-tester)")
    return path


def run_sipp(
    scenario: str,
    target: str,
    workdir: Path,
    *,
    calls: int = 1,
    rate: float = 10,
    limit: int | None = None,
    local_port: int | None = None,
    service: str = "+33142685300",
    extra: list[str] | None = None,
    timeout_s: float = 120,
    background: bool = False,
):
    """Run a scenario file from tests/integration/sipp (or `uas`, `uac` built-ins).

    Returns a SippResult, or the Popen when `background` is set (a UAS).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stat_file = workdir / f"{Path(scenario).stem}-{local_port or 'auto'}-stats.csv"
    scenario_args = ["-sn", scenario] if scenario in ("uas", "uac") else ["-sf", str(SCENARIOS / scenario)]
    # SCENARIOS / an absolute path is that path: formatted templates live in tmp dirs.
    cmd = [sipp_binary(), *scenario_args]
    if target:
        cmd.append(target)
    cmd += [
        "-i",
        "127.0.0.1",
        "-s",
        service,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(limit or calls),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat_file),
        "-fd",
        "1",
        "-trace_err",
        "-error_file",
        str(workdir / f"{Path(scenario).stem}-{local_port or 'auto'}-errors.log"),
        "-timeout",
        f"{int(timeout_s)}s",
        "-timeout_error",
        "-max_recv_loops",
        "10000",
        "-max_sched_loops",
        "10000",
    ]
    if local_port:
        cmd += ["-p", str(local_port)]
    cmd += extra or []
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 30, cwd=workdir)
    stats = read_stats(stat_file)
    return SippResult(
        proc.returncode,
        int(stats.get("SuccessfulCall(C)", 0) or 0),
        int(stats.get("FailedCall(C)", 0) or 0),
        stats,
        proc.stdout,
        proc.stderr,
    )


def scenario_from_template(template: str, workdir: Path, **values) -> str:
    """Format a `*.xml.tmpl` scenario (e.g. {status}) into workdir; returns its path."""
    text = (SCENARIOS / template).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / template.replace(".xml.tmpl", "-" + "-".join(str(v) for v in values.values()) + ".xml")
    out.write_text(text)
    return str(out)


def read_stats(stat_file: Path) -> dict:
    if not stat_file.exists():
        return {}
    with stat_file.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))
