"""SIPVicious, the toll-fraud scanner, aimed at the real gateway.

svmap looks for SIP devices, svwar enumerates extensions and svcrack guesses
passwords: what a stranger runs first at a SIP port open to the Internet. The
Debian package's tools are run as they are, one address and port, a handful
of extensions and a tiny wordlist, each under a timeout. The gateway must:

* give a scanner outside `gateway.trusted_sources` nothing to work with:
  silence by default, or with `untrusted = "reject"` one bare 403 per INVITE
  (Reason `untrusted_source`, no Server/User-Agent, no Warning, no
  X-Dialout-* header); no extension, no password, no device fingerprint;
* refuse a scanner's INVITEs from a trusted address by policy (403
  `organizer_missing`, with its Reason header), like any INVITE that names no
  organiser;
* never send an INVITE toward the trunk nor write a ledger row for any of it;
* keep serving: a normal call relays end to end after the scans.

The `make_gateway` fixture checks at the end that no call leaked and that
stdout held only JSON lines.

SIPVicious 0.3.3 (Debian 12) binds svwar and svcrack to every address
whatever `-b` says, so their packets to 127.0.0.1 come from 127.0.0.1: the
untrusted scans are run against a gateway that trusts only the bridge's
127.0.0.2, and every scanner sends from 127.0.0.1. That gateway also has a
Server header configured, which its bridge gets and a scanner must not.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.raw_sip import SipResponse, canonical_name, cseq_method, parse_response
from tests.integration.sipp_runner import free_port
from tests.integration.test_relay import bridge, messages, start_trunk

SCANNER = "127.0.0.1"
BRIDGE_ONLY = "127.0.0.2"
EXTENSIONS = "100-110"
WORDLIST = ["100", "1234", "password", "secret", "dialout"]
SERVER_HEADER = "dialout-gw/9.9 (scanner test)"
SCAN_TIMEOUT_S = 60


def _tool(name: str) -> str | None:
    """`svmap` in Debian's 0.3.x package, `sipvicious_svmap` in newer ones."""
    return shutil.which(name) or shutil.which(f"sipvicious_{name}")


TOOLS = {name: _tool(name) for name in ("svmap", "svwar", "svcrack")}
MISSING = sorted(name for name, path in TOOLS.items() if path is None)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"SIPVicious not installed ({', '.join(MISSING)} not on PATH); "
        "scripts/setup.sh --test installs the Debian package `sipvicious`",
    ),
]

# What an untrusted INVITE's stateless 403 may carry: RFC 3261 8.2.6's copied
# headers, the Reason, the length. Nothing about the product, the policy or organisers.
BARE_403_HEADERS = {"via", "from", "to", "call-id", "cseq", "reason", "content-length"}


@dataclass
class Scan:
    name: str
    returncode: int
    stdout: str
    stderr: str

    def responses(self) -> list[SipResponse]:
        """Every SIP message the scanner printed as received (`-d` / `--debug`)."""
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith(("b'", 'b"')):
                out.append(parse_response(ast.literal_eval(line)))
        return out

    def results(self) -> list[tuple[str, ...]]:
        """The rows of the result table the tool prints (devices, extensions, passwords)."""
        rows = [
            tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
            for line in self.stdout.splitlines()
            if line.startswith("|")
        ]
        return rows[1:]  # the first is the header

    def __str__(self) -> str:
        return f"{self.name} exited {self.returncode}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


def run_scans(gw, tmp_path: Path, scans: dict[str, list[str]]) -> dict[str, Scan]:
    """Run the scans side by side against the gateway, each bounded in time.

    Each entry is `name: [tool, args...]`; every run gets the target, a free
    source port, and its own HOME (SIPVicious keeps sessions in ~/.sipvicious)."""
    home = tmp_path / "scanner-home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    procs = {}
    for name, (tool, *args) in scans.items():
        cmd = [TOOLS[tool], *args, "-x", SCANNER, "-P", str(free_port()), "-p", str(gw.sip_port), "127.0.0.1"]
        procs[name] = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    done = {}
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{name} still ran after {SCAN_TIMEOUT_S} s:\n{err[-2000:]}") from None
        done[name] = Scan(name, proc.returncode, out, err)
    for scan in done.values():
        assert "Traceback" not in scan.stderr and "Unhandled exception" not in scan.stderr, str(scan)
    return done


def wordlist(tmp_path: Path) -> str:
    path = tmp_path / "passwords.txt"
    path.write_text("\n".join(WORDLIST) + "\n")
    return str(path)


class TrunkWatch:
    """A UDP socket on the gateway's trunk port: every datagram the gateway
    sends toward the trunk while the scans run lands here."""

    def __init__(self, gw):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", gw.trunk_port))
        self.sock.setblocking(False)

    def close(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.sock.recv(65536))
            except BlockingIOError:
                break
        self.sock.close()
        return got


def ledger_rows(gw) -> int:
    """Rows in the ledger's calls table, whatever their state (a refusal writes none)."""
    path = gw.store_url[len("sqlite:///") :]
    with sqlite3.connect(path, timeout=10) as conn:
        return conn.execute("SELECT count(*) FROM calls").fetchone()[0]


def untrusted_refusals(gw) -> float:
    return gw.metric('dialout_admission_refusals_total{reason="untrusted_source"}') or 0.0


def assert_keeps_serving(gw, tmp_path: Path, *, bridge_ip: str) -> None:
    """A normal call from the bridge still relays end to end."""
    before = len(gw.call_lines())
    trunk = start_trunk(gw, tmp_path)
    result = bridge(gw, tmp_path, extra=["-i", bridge_ip])
    _, trunk_err = trunk.communicate(timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert trunk.returncode == 0, trunk_err[-2000:]
    line = gw.wait_calls(before + 1)[-1]
    assert line["decision"] == "allow" and line["bridge_status"] == 200 and line["trunk_status"] == 200


@pytest.mark.parametrize("untrusted", ["drop", "reject"])
def test_an_untrusted_scanner_finds_nothing_and_reaches_no_trunk(make_gateway, tmp_path, untrusted):
    # With a Server header configured for the bridges: a stranger must still not see it.
    gw = make_gateway(
        trusted_sources=(f"{BRIDGE_ONLY}/32",),
        extra_gateway=f'untrusted = "{untrusted}"\nserver_header = "{SERVER_HEADER}"',
    )
    watch = TrunkWatch(gw)
    try:
        scans = run_scans(
            gw,
            tmp_path,
            {
                "svmap": ["svmap", "-b", SCANNER, "-m", "OPTIONS,INVITE,REGISTER", "-d"],
                "svwar REGISTER": ["svwar", "-e", EXTENSIONS, "--debug"],
                "svwar INVITE": ["svwar", "-m", "INVITE", "--force", "-e", EXTENSIONS, "--debug"],
                "svwar OPTIONS": ["svwar", "-m", "OPTIONS", "--force", "-e", EXTENSIONS, "--debug"],
                "svcrack": ["svcrack", "-u", "100", "-d", wordlist(tmp_path)],
            },
        )
    finally:
        to_trunk = watch.close()

    # The gateway did see every scanner: svmap's OPTIONS and INVITE (its REGISTER,
    # with `Contact: None`, does not parse and is dropped uncounted), each svwar's
    # probe, svcrack's first REGISTER.
    assert untrusted_refusals(gw) >= 6, gw.events()[-5:]
    refused = gw.wait_for(lambda e: e.get("event") == "admission_refused")
    assert refused["source"] == SCANNER and refused["reason"] == "untrusted_source"

    # What the scanners saw: nothing but, under "reject", a bare 403 to each INVITE.
    for scan in scans.values():
        for response in scan.responses():
            assert untrusted == "reject", f"{scan.name} got an answer under drop: {response.raw!r}"
            assert response.status == 403 and cseq_method(response) == "INVITE", (scan.name, response.raw)
            assert response.header("Reason") == 'SIP;cause=403;text="untrusted_source"'
            assert {canonical_name(n) for n, _ in response.headers} <= BARE_403_HEADERS, (scan.name, response.raw)
    seen = scans["svmap"].responses() + scans["svwar INVITE"].responses()
    assert (len(seen) > 0) == (untrusted == "reject")
    # svmap lists a device only when something answers; never with a user agent.
    devices = scans["svmap"].results()
    assert devices == ([(f"127.0.0.1:{gw.sip_port}", "unknown")] if untrusted == "reject" else []), str(scans["svmap"])
    # svwar enumerates no extension; where nothing answered its probe it gave up.
    for name in ("svwar REGISTER", "svwar INVITE", "svwar OPTIONS"):
        assert scans[name].results() == [], str(scans[name])
    for name in ("svwar REGISTER", "svwar OPTIONS") + (("svwar INVITE",) if untrusted == "drop" else ()):
        assert "timed out" in scans[name].stderr, str(scans[name])
    assert scans["svcrack"].results() == [] and "The password for" not in scans["svcrack"].stderr
    assert "no server response" in scans["svcrack"].stderr, str(scans["svcrack"])

    # Nothing went to the trunk, no call was decided, nothing was metered.
    assert [d for d in to_trunk if d.startswith(b"INVITE")] == [], to_trunk
    assert gw.call_lines() == []
    assert ledger_rows(gw) == 0

    assert_keeps_serving(gw, tmp_path, bridge_ip=BRIDGE_ONLY)
    assert f"Server: {SERVER_HEADER}" in messages(tmp_path / "bridge")  # the bridge does get it


def test_a_scanner_at_a_trusted_address_is_refused_by_the_policy(make_gateway, tmp_path):
    """A scanner inside the trusted range (a compromised bridge host, say) gets
    the RFC answers and, for every INVITE, the policy's 403: it names no
    organiser. Nothing is enumerated, cracked or placed."""
    gw = make_gateway()
    watch = TrunkWatch(gw)
    try:
        scans = run_scans(
            gw,
            tmp_path,
            {
                "svmap": ["svmap", "-b", SCANNER, "-m", "OPTIONS,INVITE", "-d"],
                "svwar REGISTER": ["svwar", "-e", EXTENSIONS, "--debug"],
                "svwar INVITE": ["svwar", "-m", "INVITE", "--force", "-e", EXTENSIONS, "--debug"],
                "svwar OPTIONS": ["svwar", "-m", "OPTIONS", "--force", "-e", EXTENSIONS, "--debug"],
                "svcrack": ["svcrack", "-u", "100", "-d", wordlist(tmp_path)],
            },
        )
    finally:
        to_trunk = watch.close()

    # No fingerprint in any answer.
    for scan in scans.values():
        for response in scan.responses():
            assert response.header("Server") is None and response.header("User-Agent") is None, response.raw
    # svmap finds the port (OPTIONS is answered 200 to a trusted source) but no product.
    svmap = [r for r in scans["svmap"].responses() if r.status >= 200]
    assert sorted({(cseq_method(r), r.status) for r in svmap}) == [("INVITE", 403), ("OPTIONS", 200)], svmap
    assert scans["svmap"].results() == [(f"127.0.0.1:{gw.sip_port}", "unknown")], str(scans["svmap"])
    # Every INVITE any scanner sent got the policy's refusal, with its Reason.
    invites = [r for s in scans.values() for r in s.responses() if cseq_method(r) == "INVITE" and r.status >= 200]
    assert len({r.call_id for r in invites}) >= 2, invites
    for response in invites:
        assert response.status == 403, response.raw
        assert response.header("Reason") == 'SIP;cause=403;text="organizer_missing"'
        assert response.header("X-Dialout-Decision") == "deny;reason=organizer_missing"
    # svwar enumerates nothing: every extension gets the same answer as a random one.
    for name in ("svwar REGISTER", "svwar INVITE", "svwar OPTIONS"):
        assert scans[name].results() == [], str(scans[name])
    assert {r.status for r in scans["svwar REGISTER"].responses()} == {405}  # REGISTER: not here, for anyone
    assert "method not allowed" in scans["svwar REGISTER"].stderr
    assert len(scans["svwar OPTIONS"].responses()) == 12  # the random probe and 100-110, all 200
    # svcrack: REGISTER is not implemented here (405), there is no password to guess.
    assert scans["svcrack"].results() == [] and "The password for" not in scans["svcrack"].stderr
    assert "unknown response" in scans["svcrack"].stderr, str(scans["svcrack"])

    # Each INVITE was decided (deny, organizer_missing) and none reached the trunk or the ledger.
    lines = gw.wait_calls(len({r.call_id for r in invites}))
    assert {line["call_id"] for line in lines} == {r.call_id for r in invites}
    assert {(line["decision"], line["reason"], line["bridge_status"]) for line in lines} == {
        ("deny", "organizer_missing", 403)
    }
    assert all(line["trunk_attempts"] == [] and line["trunk_status"] is None for line in lines)
    assert [d for d in to_trunk if d.startswith(b"INVITE")] == [], to_trunk
    assert ledger_rows(gw) == 0

    assert_keeps_serving(gw, tmp_path, bridge_ip=SCANNER)
