"""Debian's baresip as a real SIP trunk: auto-answers, driven over its ctrl_tcp socket.

SIPp plays scripts; baresip is a full user agent (libre's SIP stack, its own
SDP offer/answer, RTP). It answers every INVITE for its account's user part
at once, sends a 440 Hz sine as PCMU/PCMA over RTP on loopback and drops what
it receives (`ausine` source, `aubridge` player: no sound device).

It runs from a config directory of its own (`config`, `accounts`), with its
SIP trace (`-s`) on stdout in a log file. `ctrl_tcp` carries commands (e.g.
`hangup`, from the `menu` module) and every UA event (CALL_ESTABLISHED,
CALL_REMOTE_SDP, CALL_CLOSED...) as netstring-framed JSON.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.sipp_runner import free_port

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# One traced message (-s): in colour, "#", "UDP 127.0.0.1:1 -> 127.0.0.1:2", the message, colour reset.
TRACED = re.compile(r"\x1b\[36;1m#\n(UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.S)

CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{sip_port}
call_local_timeout\t120
call_max_calls\t\t4
# No sound device: a 440 Hz sine out (ausine only does 48 kHz stereo), and
# the received audio into an aubridge device nothing reads.
audio_source\t\tausine,440
audio_player\t\taubridge,trunk
audio_alert\t\taubridge,trunk
ausrc_srate\t\t48000
ausrc_channels\t\t2
audio_level\t\tno
rtp_tos\t\t\t0
rtcp_mux\t\tno
jitter_buffer_delay\t5-10
# Loopback only, for SIP, RTP and any DNS query.
net_interface\t\t127.0.0.1
dns_server\t\t127.0.0.1:53
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taubridge.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}
"""


@dataclass(frozen=True, slots=True)
class Traced:
    """One SIP message from baresip's trace, seen from baresip's side."""

    received: bool  # True: baresip received it; False: baresip sent it
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0]

    @property
    def body(self) -> str:
        return self.text.split("\n\n", 1)[1] if "\n\n" in self.text else ""

    def header(self, name: str) -> str | None:
        for line in self.text.split("\n\n", 1)[0].splitlines()[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if not path:
        raise RuntimeError("baresip not found: run `make test` (scripts/setup.sh --test installs baresip-core)")
    return path


class Baresip:
    """One baresip process answering as the trunk for `sip:<user>@127.0.0.1:<sip_port>`."""

    def __init__(self, workdir: Path, *, user: str, sip_port: int | None = None):
        self.workdir = workdir
        self.user = user
        self.sip_port = sip_port or free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        self.log_path = workdir / "baresip.log"
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._events: list[dict] = []
        self._responses: dict[str, dict] = {}
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._token = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def start(self, timeout_s: float = 10) -> Baresip:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config").write_text(CONFIG.format(sip_port=self.sip_port, ctrl_port=self.ctrl_port))
        # The account's user part must be the Request-URI's: baresip 1.0 answers 404 to any other.
        (self.workdir / "accounts").write_text(
            f"<sip:{self.user}@127.0.0.1>;answermode=auto;regint=0;audio_codecs=pcmu,pcma\n"
        )
        # stdbuf: line-buffered stdout, so the SIP trace is in the log as it happens.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", baresip_binary(), "-f", str(self.workdir), "-s"],
            stdin=subprocess.DEVNULL,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"baresip exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"baresip's ctrl_tcp never listened: {self.log_text()[-2000:]}") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="baresip-ctrl", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            buf += data
            while b":" in buf:
                size, _, rest = buf.partition(b":")
                if len(rest) < int(size) + 1:
                    break
                message = json.loads(rest[: int(size)])
                buf = rest[int(size) + 1 :]
                with self._cond:
                    if message.get("event"):
                        self._events.append(message)
                    elif message.get("response"):
                        self._responses[message.get("token", "")] = message
                    self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout_s: float = 5) -> dict:
        """Run a baresip command (as typed at its console) and return its response."""
        self._token += 1
        token = f"t{self._token}"
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(payload), payload))
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout_s):
                raise AssertionError(f"baresip did not answer {command!r}")
            response = self._responses.pop(token)
        assert response.get("ok"), f"baresip {command!r} failed: {response}"
        return response

    def mark(self) -> tuple[int, int]:
        """Where the events and the trace are now; pass to `events`, `wait_event`, `trace`."""
        with self._cond:
            count = len(self._events)
        return count, self.log_path.stat().st_size if self.log_path.exists() else 0

    def events(self, since: tuple[int, int] = (0, 0), kind: str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self._events[since[0] :] if kind is None or e.get("type") == kind]

    def wait_event(self, kind: str, since: tuple[int, int] = (0, 0), timeout_s: float = 10) -> dict:
        with self._cond:
            found = self._cond.wait_for(
                lambda: [e for e in self._events[since[0] :] if e.get("type") == kind], timeout_s
            )
        if not found:
            raise AssertionError(
                f"baresip: no {kind} event within {timeout_s} s; events: {[e.get('type') for e in self.events(since)]}"
            )
        return found[0]

    def _raw(self, since: tuple[int, int]) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(since[1])
            return f.read().decode(errors="replace").replace("\r\n", "\n")

    def log_text(self, since: tuple[int, int] = (0, 0)) -> str:
        """baresip's own output since `since`, without its colours."""
        return ANSI.sub("", self._raw(since))

    def trace(self, since: tuple[int, int] = (0, 0)) -> list[Traced]:
        """The SIP messages baresip sent and received since `since`, in order."""
        return [
            Traced(received=dst == self.address, text=text.rstrip("\n") + "\n")
            for _, _src, dst, text in TRACED.findall(self._raw(since))
        ]

    def received(self, since: tuple[int, int] = (0, 0), method: str | None = None) -> list[Traced]:
        return [
            m for m in self.trace(since) if m.received and (method is None or m.first_line.startswith(method + " "))
        ]

    def sent(self, since: tuple[int, int] = (0, 0)) -> list[Traced]:
        return [m for m in self.trace(since) if not m.received]

    def stop(self, timeout_s: float = 5) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
