"""Start the real gateway (`dialout-gw run`) as a subprocess and read its JSON log."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.sipp_runner import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gateway.toml"


def example_policy_text() -> str:
    """The example config from its `[policy]` table on: catalogue and directory."""
    text = EXAMPLE.read_text()
    return text[text.index("\n[policy]") + 1 :]


def gateway_config(
    *,
    sip_port: int,
    trunk_port: int,
    db_path: Path,
    policy_text: str | None = None,
    extra_gateway: str = "",
    store_url: str | None = None,
    metrics_port: int = 0,
    heartbeat_s: float = 30,
    t1_ms: int = 500,
    extra_sections: str = "",
    trunks: str | None = None,
    sip_extra: str = "",
    store_extra: str = "",
    trusted_sources: tuple[str, ...] = ("127.0.0.1/32",),
) -> str:
    """A test config. `trunks` replaces the single `[trunk]` with `[[trunks]]`
    tables (and `gateway.caller_id`); `{trunk_port}` in it is the trunk port.
    `trusted_sources` are the bridge addresses (CIDRs) the gateway serves."""
    url = store_url or f"sqlite:///{db_path}"
    if trunks is None:
        trunk_section = f"""[trunk]
uri = "sip:127.0.0.1:{trunk_port}"
caller_id = "sip:+18005550100@gw-under-test"
answer_timeout_s = 4"""
    else:
        trunk_section = trunks.replace("{trunk_port}", str(trunk_port))
        extra_gateway += '\ncaller_id = "sip:+18005550100@gw-under-test"'
    trunk_section = trunk_section
    return f"""
[gateway]
listen = [{{ transport = "udp", address = "127.0.0.1", port = {sip_port} }},
          {{ transport = "tcp", address = "127.0.0.1", port = {sip_port} }}]
trusted_sources = {json.dumps(list(trusted_sources))}
host = "gw-under-test"
drain_timeout_s = 5
{extra_gateway}

{trunk_section}

[sip]
t1_ms = {t1_ms}
{sip_extra}

[store]
url = "{url}"
heartbeat_s = {heartbeat_s}
{store_extra}

{extra_sections}

[logging]
level = "info"
format = "json"
pjsip_level = 1

[metrics]
port = {metrics_port}

{policy_text if policy_text is not None else example_policy_text()}
"""


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        config_text: str,
        *,
        sip_port: int,
        trunk_port: int,
        metrics_port: int = 0,
        store_url: str | None = None,
    ):
        self.workdir = workdir
        self.sip_port = sip_port
        self.trunk_port = trunk_port
        self.metrics_port = metrics_port
        self.store_url = store_url or f"sqlite:///{workdir / 'ledger.db'}"
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "gateway.log"
        self.err_path = workdir / "gateway.err"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def create(cls, workdir: Path, **config_kwargs) -> GatewayProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        sip_port = config_kwargs.pop("sip_port", None) or free_port()
        trunk_port = config_kwargs.pop("trunk_port", None) or free_port()
        # Every test gateway exports metrics, so the leak check can read its live calls.
        metrics_port = config_kwargs.setdefault("metrics_port", 0) or free_port(socket.SOCK_STREAM)
        config_kwargs["metrics_port"] = metrics_port
        text = gateway_config(sip_port=sip_port, trunk_port=trunk_port, db_path=workdir / "ledger.db", **config_kwargs)
        return cls(
            workdir,
            text,
            sip_port=sip_port,
            trunk_port=trunk_port,
            metrics_port=metrics_port,
            store_url=config_kwargs.get("store_url"),
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def start(self, timeout_s: float = 20) -> GatewayProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config_path)],
            stdout=self.log_path.open("ab"),
            stderr=self.err_path.open("ab"),
            cwd=self.workdir,
            env=env,
        )
        self.wait_for(lambda e: e.get("event") == "gateway_started", timeout_s)
        return self

    def events(self) -> list[dict]:
        out = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def call_lines(self) -> list[dict]:
        return [e for e in self.events() if e.get("event") == "call"]

    def wait_for(self, predicate, timeout_s: float = 10) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}: {self.err_path.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting in {self.log_path}; last lines: {self.events()[-5:]}")

    def wait_calls(self, count: int, timeout_s: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.call_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise AssertionError(f"expected {count} call lines, got {len(self.call_lines())}")

    def metric(self, name: str) -> float | None:
        """One sample of the gateway's /metrics (without labels), or None."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_until(self, predicate, timeout_s: float = 10, what: str = "the condition") -> None:
        """Poll `predicate()` until it is true (instead of sleeping a guessed time)."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; last lines: {self.events()[-5:]}"
                )
            time.sleep(0.05)

    def live_ledger_calls(self, states: tuple[str, ...] = ("open", "answered")) -> int:
        """Calls the ledger holds in `states` (by default: still live, open or answered)."""
        sql = f"SELECT count(*) FROM calls WHERE state IN ({', '.join(repr(s) for s in states)})"
        if self.store_url.startswith("sqlite:///"):
            with sqlite3.connect(self.store_url[len("sqlite:///") :], timeout=10) as conn:
                try:
                    return conn.execute(sql).fetchone()[0]
                except sqlite3.OperationalError:
                    return 0  # no schema yet: nothing live
        import psycopg

        with psycopg.connect(self.store_url) as conn:
            return conn.execute(sql).fetchone()[0]

    def assert_no_leaks(self, timeout_s: float = 15) -> None:
        """After a test: no call left in progress in the metrics or live in the ledger."""
        if self.proc is None or self.proc.poll() is not None:
            return
        deadline = time.monotonic() + timeout_s
        active = live = None
        while time.monotonic() < deadline:
            active = self.metric("dialout_active_calls")
            live = self.live_ledger_calls()
            if active == 0 and live == 0:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"leaked calls after the test: dialout_active_calls={active}, "
            f"live ledger rows={live}; last lines: {self.events()[-5:]}"
        )

    def assert_stdout_is_json(self) -> None:
        bad = []
        for number, line in enumerate(self.log_path.read_text(errors="replace").splitlines(), 1):
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append((number, line))
            except json.JSONDecodeError:
                bad.append((number, line))
        assert not bad, f"non-JSON lines on the gateway's stdout: {bad[:5]}"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("gateway did not stop within the drain timeout") from None
