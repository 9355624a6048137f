"""The Kamailio plugin end to end: SIPp bridge -> a real Kamailio (Debian's
kamailio 5.6 with app_python3) running examples/kamailio/kamailio.cfg and the
plugin -> SIPp trunk, with an SQLite ledger.

Kamailio runs in the foreground (-DD -E) on a free loopback port, its run
directory and log in the test's tmp dir, the shipped kamailio.cfg and loader
script as they are (only -A defines and two environment variables differ).
Each test checks SIPp's verdict, the messages SIPp traced, the plugin's
canonical "call" line in Kamailio's log, and the ledger row.

Needs the Debian packages `kamailio` and `kamailio-python3-modules`, and
`sip-tester` (scripts/setup.sh --test installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import uuid
from pathlib import Path

import pytest

from store import open_store
from tests.integration.gateway_proc import example_policy_text, gateway_config
from tests.integration.sipp_runner import free_port, run_sipp, scenario_from_template
from tests.integration.test_gateway_calls import final_response, header
from tests.integration.test_ledger_e2e import bucket_used, calls_rows
from tests.integration.test_relay import message_list, messages

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "examples" / "kamailio" / "kamailio.cfg"
LOADER = REPO / "examples" / "kamailio" / "dialout.py"
APP_PYTHON3 = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/app_python3.so")
BRIDGE_CALL = REPO / "docker" / "sipp" / "bridge_call.xml"  # follows the Record-Route
FR_NUMBER = "+33142685300"
ALICE = ["-key", "organizer", "alice@contoso.com", "-key", "location", "FR"]


# --------------------------------------------------------------------------- Kamailio


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
    if not path:
        pytest.fail(
            "kamailio not found: the Debian package `kamailio` is needed (scripts/setup.sh --test)", pytrace=False
        )
    if not list(Path("/usr/lib").glob("*/kamailio/modules/app_python3.so")):
        pytest.fail(
            "app_python3.so not found: the Debian package `kamailio-python3-modules` is needed "
            "(scripts/setup.sh --test)",
            pytrace=False,
        )
    return path


def embedded_python() -> str | None:
    """The libpython app_python3 is linked with, e.g. "3.11"."""
    modules = list(Path("/usr/lib").glob("*/kamailio/modules/app_python3.so"))
    if not modules:
        return None
    out = subprocess.run(["ldd", str(modules[0])], capture_output=True, text=True).stdout
    found = re.search(r"libpython(\d+\.\d+)", out)
    return found.group(1) if found else None


def options_ping(port: int, timeout_s: float = 0.5) -> int | None:
    """One OPTIONS to 127.0.0.1:port over UDP: the final status, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout_s)
        local = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{local}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(msg, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65535)
        except OSError:
            return None
        parts = data.split(b" ", 2)
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


class KamailioPlugin:
    """Kamailio with the plugin, in the foreground, everything in `workdir`."""

    def __init__(self, workdir: Path, config_text: str, *, trunk_port: int, port: int | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.trunk_port = trunk_port
        self.port = port or free_port()
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config_text)
        self.store_url = re.search(r'^url = "(.*)"$', config_text, re.M).group(1)
        self.run_dir = workdir / "run"
        self.run_dir.mkdir(exist_ok=True)
        self.log_path = workdir / "kamailio.log"
        self.cmd = [
            kamailio_binary(),
            "-f",
            str(KAMAILIO_CFG),
            "-DD",
            "-E",
            "-Y",
            str(self.run_dir),
            "-P",
            str(workdir / "kamailio.pid"),
            "-A",
            f"SIP_PORT={self.port}",
            "-A",
            f'DIALOUT_SCRIPT="{LOADER}"',
            "-A",
            "LOG_LEVEL=2",
            "-m",
            "64",
            "-M",
            "8",
        ]
        # The venv running these tests holds the project and its dependencies. An
        # embedded Python finds its standard library from the first `python3` on
        # PATH, here the venv's (perhaps a pyenv build): PYTHONHOME pins it to the
        # system Python that Kamailio's app_python3 is linked with.
        self.env = dict(
            os.environ,
            DIALOUT_SITE_PACKAGES=sysconfig.get_paths()["purelib"],
            DIALOUT_CONFIG=str(self.config_path),
            PYTHONHOME="/usr",
        )
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> KamailioPlugin:
        check = subprocess.run([*self.cmd, "-c"], capture_output=True, text=True, timeout=30, env=self.env)
        assert check.returncode == 0, f"kamailio -c rejected the config:\n{check.stderr[-3000:]}"
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("ab"),
            env=self.env,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if options_ping(self.port, 0.3) == 200 and self.events("kamailio_plugin_started"):
                return self
            time.sleep(0.1)
        raise AssertionError(f"kamailio did not start on {self.target}:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the main process stops its children
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session started above: ours only
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict]:
        """The plugin's JSON lines, from Kamailio's log."""
        out = []
        for line in self.log().splitlines():
            start = line.find('{"')
            if start < 0:
                continue
            try:
                event = json.loads(line[start:])
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def wait_for(self, predicate, timeout_s: float = 10, what: str = "event") -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no matching {what} in kamailio's log:\n{self.log()[-4000:]}")

    def call_line(self, call_id: str, timeout_s: float = 10) -> dict:
        return self.wait_for(
            lambda e: e.get("event") == "call" and e.get("call_id") == call_id, timeout_s, f"call line for {call_id}"
        )

    def ledger_row(self, call_id: str) -> dict | None:
        store = open_store(self.store_url, instance_id="test-reader")
        try:
            return store.call_row(call_id)
        finally:
            store.close()

    def reserved(self) -> float:
        """Capacity still held in reservations, over every bucket: 0 once every call is settled."""
        return sum(
            bucket_used(self.store_url, tenant, bucket)[1]
            for tenant in ("contoso", "fabrikam")
            for bucket in ("tenant_pool", "credits", "promotion")
        )

    def assert_clean(self) -> None:
        """No Python error in any Kamailio process, and no call left open in the ledger."""
        errors = [e for e in self.events() if e.get("event") in ("plugin_error", "ledger_write_failed")]
        assert not errors, errors
        assert "Traceback" not in self.log(), self.log()[-4000:]
        live = [(r["call_id"], r["state"]) for r in calls_rows(self.store_url) if r["state"] != "closed"]
        assert live == [], live
        assert self.reserved() == 0


def plugin_config(
    tmp_path: Path,
    trunk_port: int,
    *,
    policy_text: str | None = None,
    store_url: str | None = None,
    store_extra: str = "",
) -> str:
    text = gateway_config(
        sip_port=free_port(),
        trunk_port=trunk_port,
        db_path=tmp_path / "ledger.db",
        policy_text=policy_text,
        store_url=store_url,
        heartbeat_s=1,
    )
    if store_extra:
        text = text.replace("\n[store]\n", f"\n[store]\n{store_extra}\n", 1)
    return text


@pytest.fixture
def pg_ledger(postgres_url):
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"kam_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory):
    if embedded_python() not in (None, f"{os.sys.version_info[0]}.{os.sys.version_info[1]}"):
        pytest.fail(
            f"Kamailio's app_python3 embeds Python {embedded_python()}, but the project's venv is "
            f"Python {os.sys.version_info[0]}.{os.sys.version_info[1]}: build the venv with the system "
            "python3 (scripts/setup.sh picks it first)",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("kamailio")
    trunk_port = free_port()
    k = KamailioPlugin(workdir / "kamailio", plugin_config(workdir, trunk_port), trunk_port=trunk_port).start()
    yield k
    k.stop()


def start_trunk(k: KamailioPlugin, workdir: Path, scenario: str = "proxy_trunk_answer.xml", timeout_s: float = 30):
    return run_sipp(
        scenario,
        "",
        workdir / "trunk",
        local_port=k.trunk_port,
        extra=["-mp", str(free_port()), "-trace_msg"],
        background=True,
        timeout_s=timeout_s,
    )


def sipp_call_id(workdir: Path) -> str:
    """The Call-ID of the first INVITE a SIPp bridge traced."""
    invite = next(m for m in message_list(workdir) if m.startswith("INVITE "))
    return header(invite, "Call-ID")


# --------------------------------------------------------------------------- tests


def test_relayed_call_goes_to_the_trunk_as_e164_and_is_billed_in_the_ledger(kamailio, tmp_path):
    trunk = start_trunk(kamailio, tmp_path)
    result = run_sipp(
        str(BRIDGE_CALL),
        kamailio.target,
        tmp_path / "bridge",
        service=FR_NUMBER,
        local_port=free_port(),
        extra=[*ALICE, "-mp", str(free_port()), "-d", "1500", "-trace_msg"],
        timeout_s=30,
    )
    trunk.communicate(timeout=30)
    assert result.returncode == 0 and result.successful == 1, result.stderr[-2000:]
    assert trunk.returncode == 0

    # Toward the trunk: the E.164 Request-URI, no X-Dialout-* header, the SDP unchanged.
    invite = next(m for m in message_list(tmp_path / "trunk") if m.startswith("INVITE "))
    request_line = invite.splitlines()[0]
    assert request_line == f"INVITE sip:{FR_NUMBER}@127.0.0.1:{kamailio.trunk_port};user=phone SIP/2.0"
    assert not [line for line in invite.splitlines() if line.lower().startswith("x-dialout-")], invite
    assert "m=audio" in invite and "Record-Route:" in invite

    call_id = sipp_call_id(tmp_path / "bridge")
    line = kamailio.call_line(call_id)
    assert line["decision"] == "allow" and line["reason"] == "allowed"
    assert line["component"] == "kamailio" and line["ended_by"] == "bridge"
    assert line["destination"] == FR_NUMBER and line["organizer"] == "alice@contoso.com"
    assert line["bridge_status"] == 200 and line["billed_units"] == 1  # per started minute
    assert 0 <= line["setup_ms"] < 2000

    row = kamailio.ledger_row(call_id)
    assert row["state"] == "closed" and row["outcome"] == "allowed" and not row["recovered"]
    assert row["bucket"] == line["bucket"] and row["e164"] == FR_NUMBER
    assert 1.0 <= row["talk_s"] <= 3.5, row
    assert row["billed_units"] == 1 and json.loads(row["charges"]) == [[line["bucket"], 1.0]]
    assert len([e for e in kamailio.events("call") if e["call_id"] == call_id]) == 1  # settled once
    kamailio.assert_clean()


def test_the_trunk_hangs_up_through_the_proxy_and_the_call_is_billed_once(kamailio, tmp_path):
    trunk = run_sipp(
        "proxy_trunk_hangs_up.xml",
        "",
        tmp_path / "trunk",
        local_port=kamailio.trunk_port,
        extra=["-mp", str(free_port()), "-d", "800", "-rsa", kamailio.target, "-trace_msg"],
        background=True,
        timeout_s=30,
    )
    result = run_sipp(
        "proxy_bridge_wait_bye.xml",
        kamailio.target,
        tmp_path / "bridge",
        service=FR_NUMBER,
        local_port=free_port(),
        extra=[*ALICE, "-mp", str(free_port()), "-trace_msg"],
        timeout_s=30,
    )
    trunk.communicate(timeout=30)
    assert result.returncode == 0 and result.successful == 1, result.stderr[-2000:]
    assert trunk.returncode == 0

    call_id = sipp_call_id(tmp_path / "bridge")
    line = kamailio.call_line(call_id)
    assert line["reason"] == "allowed" and line["ended_by"] == "trunk" and line["billed_units"] == 1
    row = kamailio.ledger_row(call_id)
    assert row["state"] == "closed" and row["outcome"] == "allowed" and 0.5 <= row["talk_s"] < 3
    kamailio.assert_clean()


REJECTIONS = [
    # organizer, number, status, reason
    ("bob@contoso.com", "+4930123456", 403, "not_domestic"),
    ("alice@contoso.com", "12ab", 484, "number_invalid"),
    ("", FR_NUMBER, 403, "organizer_missing"),
]


@pytest.mark.parametrize("organizer,number,status,reason", REJECTIONS, ids=[r[3] for r in REJECTIONS])
def test_rejected_call_carries_the_gateways_reason_warning_and_decision_headers(
    kamailio, tmp_path, organizer, number, status, reason
):
    scenario = scenario_from_template("bridge_expect_status.xml.tmpl", tmp_path / "scenarios", status=status)
    workdir = tmp_path / "bridge"
    result = run_sipp(
        scenario,
        kamailio.target,
        workdir,
        service=number,
        local_port=free_port(),
        extra=["-key", "organizer", organizer, "-key", "location", "FR", "-trace_msg"],
        timeout_s=20,
    )
    trace = messages(workdir)
    assert result.returncode == 0 and result.successful == 1, (result.stderr[-1500:], trace[-1500:])
    response = final_response(trace, status)
    assert header(response, "Reason") == f'SIP;cause={status};text="{reason}"'
    assert header(response, "X-Dialout-Decision") == f"deny;reason={reason}"
    assert header(response, "Warning").startswith('399 gw-under-test "')

    call_id = sipp_call_id(workdir)
    line = kamailio.call_line(call_id)
    assert line["decision"] == "deny" and line["reason"] == reason and line["bridge_status"] == status
    assert line["explanation"] and line["trace"]
    assert kamailio.ledger_row(call_id) is None  # nothing reserved


@pytest.mark.parametrize("case", ["trunk_486", "bridge_cancels", "trunk_never_answers"])
def test_a_call_that_reserved_and_failed_before_the_answer_is_settled_once_for_nothing(kamailio, tmp_path, case):
    if case == "trunk_486":
        trunk_scenario = scenario_from_template(
            "trunk_fail.xml.tmpl", tmp_path / "scenarios", status=486, phrase="Busy Here"
        )
        bridge_scenario = scenario_from_template("bridge_expect_status.xml.tmpl", tmp_path / "scenarios", status=486)
        extra = []
        expected = ("trunk_failure", 486, 486)
    elif case == "bridge_cancels":
        trunk_scenario, bridge_scenario = "trunk_ring_forever.xml", "bridge_cancel.xml"
        extra = ["-d", "500"]
        expected = ("allowed", 487, 487)
    else:
        trunk_scenario = "trunk_ring_forever.xml"
        bridge_scenario = scenario_from_template("bridge_expect_status.xml.tmpl", tmp_path / "scenarios", status=408)
        extra = []
        expected = ("trunk_timeout", 408, None)
    trunk = start_trunk(kamailio, tmp_path, trunk_scenario)
    started = time.monotonic()
    workdir = tmp_path / "bridge"
    result = run_sipp(
        bridge_scenario,
        kamailio.target,
        workdir,
        service=FR_NUMBER,
        local_port=free_port(),
        extra=[*ALICE, "-trace_msg", *extra],
        timeout_s=20,
    )
    elapsed = time.monotonic() - started
    trunk.communicate(timeout=20)
    assert result.returncode == 0 and result.successful == 1, (result.stderr[-1500:], messages(workdir)[-2000:])
    assert trunk.returncode == 0  # the trunk saw its CANCEL / ACK

    call_id = sipp_call_id(workdir)
    outcome, bridge_status, trunk_status = expected
    line = kamailio.call_line(call_id)
    assert (line["reason"], line["bridge_status"], line["trunk_status"]) == expected
    assert line["billed_units"] == 0 and line["talk_s"] == 0 and line["charges"] == {}
    row = kamailio.ledger_row(call_id)
    assert row["state"] == "closed" and row["outcome"] == outcome and row["billed_units"] == 0
    assert row["a_status"] == bridge_status
    if case == "trunk_never_answers":
        # trunk.answer_timeout_s = 4: the plugin's 408 carries the gateway's reason headers.
        response = final_response(messages(workdir), 408)
        assert header(response, "Reason") == 'SIP;cause=408;text="trunk_timeout"'
        assert 3.5 <= elapsed < 10
    assert len([e for e in kamailio.events("call") if e["call_id"] == call_id]) == 1
    kamailio.assert_clean()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_dialog_module_cuts_the_call_at_its_authorised_duration_and_the_ledger_bills_it(tmp_path, request, backend):
    """max_call_length_s = 5, billed per second, reserved in 2-second chunks: the
    timer extends the grant twice, then the dialog times out and BYEs both sides.
    On PostgreSQL every Kamailio process (workers, timer) has its own connection."""
    policy = re.sub(r"(?m)^max_call_length_s = .*$", "max_call_length_s = 5", example_policy_text())
    policy = re.sub(r"(?m)^billing_increment = .*$", 'billing_increment = "second"', policy)
    assert "\nmax_call_length_s = 5\n" in policy and '\nbilling_increment = "second"\n' in policy
    store_url = request.getfixturevalue("pg_ledger") if backend == "postgres" else None
    trunk_port = free_port()
    k = KamailioPlugin(
        tmp_path / "kamailio",
        plugin_config(tmp_path, trunk_port, policy_text=policy, store_url=store_url, store_extra="chunk_s = 2"),
        trunk_port=trunk_port,
    ).start()
    try:
        trunk = start_trunk(k, tmp_path)
        started = time.monotonic()
        result = run_sipp(
            "proxy_bridge_wait_bye.xml",
            k.target,
            tmp_path / "bridge",
            service=FR_NUMBER,
            local_port=free_port(),
            extra=[*ALICE, "-mp", str(free_port()), "-trace_msg"],
            timeout_s=30,
        )
        elapsed = time.monotonic() - started
        trunk.communicate(timeout=30)
        assert result.returncode == 0 and result.successful == 1, result.stderr[-2000:]
        assert trunk.returncode == 0
        assert 4.5 <= elapsed < 9, elapsed

        # Both sides got the proxy's BYE, with the reason.
        for side in ("bridge", "trunk"):
            bye = next(m for m in message_list(tmp_path / side) if m.startswith("BYE "))
            assert header(bye, "Reason") == 'Q.850;cause=16;text="duration_exhausted"', bye

        call_id = sipp_call_id(tmp_path / "bridge")
        line = k.call_line(call_id)
        assert line["reason"] == "duration_exhausted" and line["ended_by"] == "gateway"
        assert line["max_duration_s"] == 5
        row = k.ledger_row(call_id)
        assert row["state"] == "closed" and row["outcome"] == "duration_exhausted"
        assert not row["recovered"] and not k.events("call_recovered")  # settled at the cut, not swept
        assert 4.0 <= row["talk_s"] <= 7.0, row
        assert row["billed_units"] == 5 and row["granted_s"] == 5  # never past the authorised 5 s
        extended = [e for e in k.events("grant_extended") if e["call_id"] == call_id]
        assert [e["granted_s"] for e in extended] == [4, 5]
        k.assert_clean()
    finally:
        k.stop()


def test_a_kamailio_killed_mid_call_settles_it_on_restart_to_its_last_heartbeat(tmp_path):
    """kill -9 of every Kamailio process: the restarted plugin recovers the call
    once, charged up to its last heartbeat (1 s here), and a third start finds
    nothing left to settle."""
    trunk_port = free_port()
    text = plugin_config(tmp_path, trunk_port)
    k = KamailioPlugin(tmp_path / "run1", text, trunk_port=trunk_port).start()
    trunk = start_trunk(k, tmp_path, timeout_s=60)
    bridge = run_sipp(
        str(BRIDGE_CALL),
        k.target,
        tmp_path / "bridge",
        service=FR_NUMBER,
        local_port=free_port(),
        extra=[*ALICE, "-mp", str(free_port()), "-d", "60000", "-trace_msg"],
        background=True,
        timeout_s=60,
    )
    try:
        answered = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not answered:
            answered = [r for r in calls_rows(k.store_url) if r["state"] == "answered"]
            time.sleep(0.1)
        assert answered, k.log()[-3000:]
        time.sleep(2.5)
        os.killpg(k.proc.pid, signal.SIGKILL)  # the session started for this Kamailio: all of it
        killed_at = time.time()
        k.proc.wait(10)
    finally:
        for sipp in (bridge, trunk):
            sipp.kill()
            sipp.communicate(timeout=10)

    [call] = answered
    again = KamailioPlugin(tmp_path / "run2", text, trunk_port=trunk_port, port=k.port).start()
    try:
        started = again.events("kamailio_plugin_started")[0]
        assert started["recovered_calls"] == 1
        assert [e["call_id"] for e in again.events("call_recovered")] == [call["call_id"]]
    finally:
        again.stop()
    row = again.ledger_row(call["call_id"])
    truth = killed_at - call["answered_at"]
    assert row["state"] == "closed" and row["recovered"] and row["outcome"] == "recovered"
    assert truth - 1 - 0.6 <= row["talk_s"] <= truth + 0.01, (row["talk_s"], truth)
    assert row["billed_units"] == 1 and again.reserved() == 0

    third = KamailioPlugin(tmp_path / "run3", text, trunk_port=trunk_port).start()
    try:
        assert third.events("kamailio_plugin_started")[0]["recovered_calls"] == 0
    finally:
        third.stop()
