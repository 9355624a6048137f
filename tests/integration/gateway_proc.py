"""Start the real gateway (`dialout-gw run`) as a subprocess and read its JSON log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.sipp_runner import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gateway.toml"


def example_policy_text() -> str:
    """The example config from its `[policy]` table on: catalogue and directory."""
    text = EXAMPLE.read_text()
    return text[text.index("\n[policy]") + 1:]


def gateway_config(*, sip_port: int, trunk_port: int, db_path: Path, policy_text: str | None = None,
                   extra_gateway: str = "", store_url: str | None = None, metrics_port: int = 0,
                   heartbeat_s: float = 30) -> str:
    url = store_url or f"sqlite:///{db_path}"
    return f"""
[gateway]
listen = [{{ transport = "udp", address = "127.0.0.1", port = {sip_port} }},
          {{ transport = "tcp", address = "127.0.0.1", port = {sip_port} }}]
trusted_sources = ["127.0.0.1/32"]
host = "gw-under-test"
drain_timeout_s = 5
{extra_gateway}

[trunk]
uri = "sip:127.0.0.1:{trunk_port}"
caller_id = "sip:+18005550100@gw-under-test"
answer_timeout_s = 4

[store]
url = "{url}"
heartbeat_s = {heartbeat_s}

[logging]
level = "info"
format = "json"
pjsip_level = 1

[metrics]
port = {metrics_port}

{policy_text if policy_text is not None else example_policy_text()}
"""


class GatewayProcess:
    def __init__(self, workdir: Path, config_text: str, *, sip_port: int, trunk_port: int):
        self.workdir = workdir
        self.sip_port = sip_port
        self.trunk_port = trunk_port
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
        text = gateway_config(sip_port=sip_port, trunk_port=trunk_port,
                              db_path=workdir / "ledger.db", **config_kwargs)
        return cls(workdir, text, sip_port=sip_port, trunk_port=trunk_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def start(self, timeout_s: float = 20) -> GatewayProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config_path)],
            stdout=self.log_path.open("ab"), stderr=self.err_path.open("ab"), cwd=self.workdir, env=env,
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
            raise AssertionError("gateway did not stop within the drain timeout")
