"""The deployment topology without containers: SIPp bridge -> Kamailio
(dispatcher) -> two gateway processes -> two SIPp carriers, one PostgreSQL
ledger. As in docker/compose.yaml, carrier-a (priority 1) answers 503
(docker/sipp/trunk_503.xml) and every call fails over to carrier-b.

The same Kamailio config as docker/compose.yaml (docker/kamailio/kamailio.cfg),
with the addresses given on the command line. Everything is on loopback, every
process is started here and stopped at the end.

Needs the Debian packages `kamailio` (the dispatcher module is in it),
`sip-tester` and `postgresql`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.gateway_proc import GatewayProcess, example_policy_text, gateway_config
from tests.integration.sipp_runner import free_port, run_sipp

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
KAMAILIO_CFG = DOCKER / "kamailio" / "kamailio.cfg"
BRIDGE_SCENARIO = DOCKER / "sipp" / "bridge_call.xml"  # follows Record-Route
REFUSING_CARRIER = DOCKER / "sipp" / "trunk_503.xml"  # carrier-a: 503 to every call
ANSWERING_CARRIER = "proxy_trunk_answer.xml"  # carrier-b (tests/integration/sipp/)
FR_NUMBER = "+33142685300"
CALLS = 20


# --------------------------------------------------------------------------- helpers


def options_ping(port: int, timeout_s: float = 0.5) -> int | None:
    """Send one OPTIONS to 127.0.0.1:port over UDP; the status code of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout_s)
        local = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{local}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(msg, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except OSError:
                return None
            parts = data.split(b" ", 2)
            if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit() and int(parts[1]) >= 200:
                return int(parts[1])
    return None


def media_port() -> int:
    """A base for SIPp's -mp: SIPp binds the port and the next ones (RTCP,
    video), and other tests running at the same time use fixed ports."""
    for _ in range(100):
        base = free_port()
        if base > 65000:
            continue
        socks = []
        try:
            for p in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of 4 free UDP ports on loopback")


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
    if not path:
        pytest.fail(
            "kamailio not found: the Debian package `kamailio` is needed (scripts/setup.sh --test)", pytrace=False
        )
    return path


class Kamailio:
    """Kamailio in the foreground (-DD -E), private runtime dir and pid file."""

    def __init__(self, workdir: Path, port: int, gateways: list[tuple[str, int]], ping_interval_s: int = 1):
        self.workdir = workdir
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        self.run_dir = workdir / "run"
        self.run_dir.mkdir(exist_ok=True)
        self.dispatcher_list = workdir / "dispatcher.list"
        # set 1, destination, flags 0, priority 0, attributes
        self.dispatcher_list.write_text("".join(f"1 sip:127.0.0.1:{p} 0 0 duid={name}\n" for name, p in gateways))
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
            "-l",
            f"udp:127.0.0.1:{port}",
            "-l",
            f"tcp:127.0.0.1:{port}",
            "-A",
            f'DISPATCHER_LIST="{self.dispatcher_list}"',
            "-A",
            f"DS_PING_INTERVAL={ping_interval_s}",
            "-A",
            "LOG_LEVEL=2",
            "-m",
            "64",
            "-M",
            "8",
        ]
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15) -> Kamailio:
        check = subprocess.run([*self.cmd, "-c"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"kamailio -c rejected the config:\n{check.stderr[-3000:]}"
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=self.log_path.open("ab"), start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if options_ping(self.port, 0.3) == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"kamailio did not answer OPTIONS on {self.target}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"kamailio never logged {text!r}:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the main process stops its children
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group of the process started above
            self.proc.wait()


def topology_policy() -> str:
    """The example catalogue and directory, with the per-organiser guards opened
    up: one organiser places every call of this test within a minute."""
    text = example_policy_text()
    for key, value in (("max_concurrent_per_organizer", 200), ("max_calls_per_minute_per_organizer", 1000)):
        old = next(line for line in text.splitlines() if line.startswith(f"{key} ="))
        text = text.replace(old, f"{key} = {value}")
    return text


def carriers(refusing_port: int, answering_port: int) -> str:
    """docker/gateway.toml's two [[trunks]] on loopback ports. down_after is
    raised so that carrier-a is never marked down during the test: every call
    tries it first and fails over."""
    return "".join(
        f'[[trunks]]\nname = "{name}"\nuri = "sip:127.0.0.1:{port}"\ndestinations = ["*"]\n'
        f"priority = {priority}\nsetup_timeout_s = 5\nanswer_timeout_s = 6\ndown_after = 100\n\n"
        for name, port, priority in (("carrier-a", refusing_port, 1), ("carrier-b", answering_port, 2))
    )


def make_gateway(
    workdir: Path, instance_id: str, *, store_url: str, trunk_port: int, trunks: str | None = None
) -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    sip_port = free_port()
    text = gateway_config(
        sip_port=sip_port,
        trunk_port=trunk_port,
        db_path=workdir / "unused.db",
        store_url=store_url,
        policy_text=topology_policy(),
        trunks=trunks,
    )
    assert "\n[store]\n" in text and "instance_id" not in text
    text = text.replace("\n[store]\n", f'\n[store]\ninstance_id = "{instance_id}"\n', 1)
    return GatewayProcess(workdir, text, sip_port=sip_port, trunk_port=trunk_port)


@pytest.fixture
def topology_db(postgres_url):
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"topo_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(postgres_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def started(tmp_path):
    """Stops (in reverse order) everything registered, whatever happened."""
    things: list = []
    yield things
    errors = []
    for thing in reversed(things):
        try:
            if isinstance(thing, subprocess.Popen):
                if thing.poll() is None:
                    thing.kill()
                    thing.wait()
            else:
                thing.stop()
        except Exception as exc:  # keep stopping the others
            errors.append(exc)
    if errors:
        raise errors[0]


def ledger_rows(url: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT call_id, instance_id, state, outcome, billed_units FROM calls ORDER BY started_at"
        ).fetchall()


def bridge_calls(kamailio: Kamailio, workdir: Path, calls: int, rate: float):
    return run_sipp(
        str(BRIDGE_SCENARIO),
        kamailio.target,
        workdir,
        calls=calls,
        rate=rate,
        service=FR_NUMBER,
        local_port=free_port(),
        extra=[
            "-key",
            "organizer",
            "alice@contoso.com",
            "-key",
            "location",
            "FR",
            "-mp",
            str(media_port()),
            "-d",
            "200",
            "-trace_msg",
        ],
        timeout_s=60,
    )


# --------------------------------------------------------------------------- the test


def _mounts(service: dict) -> dict[str, Path]:
    """A compose service's bind mounts: container path -> host path (relative to docker/)."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            out[container] = (DOCKER / host).resolve()
    return out


def _host_path(service: dict, container_path: str) -> Path | None:
    """The host file a container path of this service maps to, through its bind mounts."""
    for container, host in _mounts(service).items():
        if container_path == container or container_path.startswith(container.rstrip("/") + "/"):
            return host / container_path[len(container) :].lstrip("/")
    return None


def test_docker_files_agree_with_each_other():
    """compose.yaml, gateway.toml, dispatcher.list, kamailio.cfg and the
    monitoring files name the same addresses and files, the gateway config
    loads, and Kamailio accepts its config as compose runs it. (Docker itself
    cannot run here.) The plugin topology: test_docker_plugin_profile_*."""
    import re

    import yaml

    from gateway.config import load_config
    from gateway.settings import parse_runtime_settings

    text = (DOCKER / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    addresses = {name: svc["networks"]["sip"]["ipv4_address"] for name, svc in services.items()}
    assert set(addresses) == {
        "postgres",
        "gw1",
        "gw2",
        "kamailio",
        "carrier-a",
        "carrier-b",
        "sipp-bridge",
        "kamailio-plugin",
        "sipp-bridge-plugin",
        "prometheus",
        "grafana",
    }, addresses
    assert len(set(addresses.values())) == len(addresses), addresses

    # Every file or folder compose mounts exists, and every SIPp scenario it names.
    for name, svc in services.items():
        for container, host in _mounts(svc).items():
            assert host.exists() or host == (DOCKER / "logs").resolve(), f"{name}: {host} ({container})"
        command = svc.get("command") or []
        for flag, value in zip(command, command[1:]):
            if flag == "-sf":
                scenario = _host_path(svc, value)
                assert scenario is not None and scenario.is_file(), f"{name}: -sf {value}"
            if flag == "-i":
                assert value == addresses[name], f"{name}: -i {value}"
    for gw in ("gw1", "gw2"):  # instance_id comes from the host name
        assert services[gw]["hostname"] == gw
        assert set(services[gw]["depends_on"]) == {"postgres", "carrier-a", "carrier-b"}

    settings = parse_runtime_settings(load_config(DOCKER / "gateway.toml").raw_sections)
    assert [str(n) for n in settings.trusted_sources] == [f"{addresses['kamailio']}/32"]
    assert {(lst.address, lst.port) for lst in settings.listeners} == {("0.0.0.0", 5060)}
    assert settings.store.url.startswith("postgresql://") and "@postgres:5432/" in settings.store.url
    assert settings.metrics.port == 9100 and "127.0.0.1:9100/healthz" in text
    store_section = (DOCKER / "gateway.toml").read_text().split("\n[store]\n", 1)[1].split("\n[", 1)[0]
    assert "instance_id" not in store_section

    # Two carriers: carrier-a (503) first, carrier-b (answers) when it fails.
    trunks = [(t.name, t.uri, t.priority, t.destinations) for t in settings.trunks]
    assert trunks == [
        ("carrier-a", f"sip:{addresses['carrier-a']}:5060", 1, ("*",)),
        ("carrier-b", f"sip:{addresses['carrier-b']}:5060", 2, ("*",)),
    ], trunks
    assert all(t.setup_timeout_s for t in settings.trunks)
    refusing = _host_path(services["carrier-a"], services["carrier-a"]["command"][1])
    assert "SIP/2.0 503 Service Unavailable" in refusing.read_text()
    # carrier-b answers both topologies' calls: it returns a proxy's Record-Route
    # (kamailio-plugin's), and the gateways send none.
    answering = _host_path(services["carrier-b"], services["carrier-b"]["command"][1])
    assert answering.name == ANSWERING_CARRIER and "[last_Record-Route:]" in answering.read_text()

    listed = re.findall(r"^1 sip:([0-9.]+):5060 ", (DOCKER / "kamailio" / "dispatcher.list").read_text(), re.M)
    assert listed == [addresses["gw1"], addresses["gw2"]]

    # Monitoring: Prometheus scrapes both gateways' metrics port; Grafana gets the dashboard.
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"gw1:{settings.metrics.port}", f"gw2:{settings.metrics.port}"]
    assert all((DOCKER / "prometheus" / f).is_file() for f in prometheus["rule_files"])
    assert _host_path(services["prometheus"], "/etc/prometheus/prometheus.yml").is_file()
    provider = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "dialout-gateway.yml").read_text())
    dashboards = provider["providers"][0]["options"]["path"]
    assert _host_path(services["grafana"], f"{dashboards}/dialout-gateway.json").is_file()
    datasource = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"

    dispatcher_list = DOCKER / "kamailio" / "dispatcher.list"
    check = subprocess.run(
        [
            kamailio_binary(),
            "-c",
            "-f",
            str(KAMAILIO_CFG),
            "-l",
            "udp:127.0.0.1:5060",
            "-A",
            f'DISPATCHER_LIST="{dispatcher_list}"',
            "-A",
            "DS_PING_INTERVAL=5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert _host_path(services["sipp-bridge"], "/scenarios/docker/bridge_call.xml") == BRIDGE_SCENARIO.resolve()


def test_docker_plugin_profile_runs_the_shipped_cfg_with_a_config_the_plugin_loads():
    """`--profile plugin`: kamailio-plugin runs examples/kamailio/kamailio.cfg (the
    kamailio-plugin image) with docker/kamailio-plugin.toml, which the plugin's own
    loader accepts: it relays to carrier-b (the plugin takes the first trunk only),
    trusts only sipp-bridge-plugin, keeps its own instance_id on the gateways'
    ledger, and has the gateways' policy, so both topologies decide alike."""
    import json
    import tomllib

    import yaml

    from gateway.config import load_config
    from gateway.settings import runtime_settings
    from kamailio_plugin.settings import load_settings
    from tests.test_dockerfile import copied_paths, instructions

    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    addresses = {name: svc["networks"]["sip"]["ipv4_address"] for name, svc in services.items()}
    plugin, bridge = services["kamailio-plugin"], services["sipp-bridge-plugin"]
    assert plugin["build"]["target"] == "kamailio-plugin" and "plugin" in plugin["profiles"]
    # `docker compose run --rm sipp-bridge-plugin` enables the bridge's profiles, which
    # must enable kamailio-plugin too; `--profile plugin up` must not run the one-shot.
    assert set(bridge["profiles"]) & set(plugin["profiles"]) and "plugin" not in bridge["profiles"]
    assert set(plugin["depends_on"]) == {"postgres", "carrier-b"}
    assert not any("profiles" in services[dep] for dep in plugin["depends_on"])  # always enabled
    for name, svc in services.items():  # the default topology needs nothing of the plugin's
        if "profiles" not in svc:
            assert not set(svc.get("depends_on", {})) & {"kamailio-plugin", "sipp-bridge-plugin"}, name

    # The config, found through the service's mounts, loads with the plugin's loader.
    config = _host_path(plugin, plugin["environment"]["DIALOUT_CONFIG"])
    assert config == (DOCKER / "kamailio-plugin.toml").resolve() and config.is_file()
    settings = load_settings(config)
    assert settings.trunk_host == f"{addresses['carrier-b']}:5060"
    assert [str(n) for n in settings.runtime.trusted_sources] == [f"{addresses['sipp-bridge-plugin']}/32"]
    gateways = runtime_settings(load_config(DOCKER / "gateway.toml").sections)
    assert settings.runtime.store.url == gateways.store.url
    assert settings.runtime.store.instance_id == plugin["hostname"] == "kamailio-plugin"
    assert settings.runtime.store.instance_id not in {services["gw1"]["hostname"], services["gw2"]["hostname"]}
    # The policy part is a copy of gateway.toml's (TOML has no include): the same data.
    ours = tomllib.loads(config.read_text())
    theirs = tomllib.loads((DOCKER / "gateway.toml").read_text())
    for key in ("policy", "tenants", "organizers"):
        assert ours[key] == theirs[key], f"kamailio-plugin.toml's [{key}] differs from gateway.toml's"

    # The bridge: sipp-bridge's scenario (it follows the Record-Route), to kamailio-plugin.
    assert bridge["command"][0] == f"{addresses['kamailio-plugin']}:5060"
    assert (
        bridge["command"][1:3]
        == services["sipp-bridge"]["command"][1:3]
        == ["-sf", "/scenarios/docker/bridge_call.xml"]
    )

    # The image's entrypoint and compose's command, with the image's copies of
    # examples/kamailio/ mapped back to the repository: Kamailio accepts them and
    # listens on the container's address.
    entrypoint = json.loads(
        next(ins.args for ins in instructions() if ins.stage == "kamailio-plugin" and ins.keyword == "ENTRYPOINT")
    )
    argv = entrypoint[1:] + plugin["command"]
    assert f"SIP_ADDRESS={addresses['kamailio-plugin']}" in argv and "SIP_PORT=5060" in argv
    in_image = {dest: REPO / source for source, dest in copied_paths("kamailio-plugin").items()}
    for dest, source in in_image.items():
        argv = [arg.replace(dest, str(source)) for arg in argv]
    run_dir = argv.index("-Y")
    argv = [arg for i, arg in enumerate(argv) if arg not in ("-DD", "-E") and i not in (run_dir, run_dir + 1)]
    assert argv[argv.index("-f") + 1] == str(REPO / "examples" / "kamailio" / "kamailio.cfg")
    check = subprocess.run([kamailio_binary(), "-c", *argv], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr[-3000:]
    assert f"udp: {addresses['kamailio-plugin']} [{addresses['kamailio-plugin']}]:5060" in check.stdout + check.stderr


@pytest.mark.postgres
def test_kamailio_dispatches_to_two_gateways_sharing_one_postgres_ledger(tmp_path, topology_db, started):
    trunk_port, refusing_port = free_port(), free_port()
    extra_calls = 4
    trunk = run_sipp(
        ANSWERING_CARRIER,
        "",
        tmp_path / "trunk",
        calls=CALLS + extra_calls,
        local_port=trunk_port,
        extra=["-mp", str(media_port())],
        background=True,
        timeout_s=90,
    )
    started.append(trunk)
    refusing = run_sipp(
        str(REFUSING_CARRIER),
        "",
        tmp_path / "carrier-a",
        calls=CALLS + extra_calls,
        local_port=refusing_port,
        extra=["-mp", str(media_port())],
        background=True,
        timeout_s=90,
    )
    started.append(refusing)

    gws = {}
    for name in ("gw-a", "gw-b"):
        gw = make_gateway(
            tmp_path / name,
            name,
            store_url=topology_db,
            trunk_port=trunk_port,
            trunks=carriers(refusing_port, trunk_port),
        )
        started.append(gw)
        gw.start()
        gws[name] = gw
    # The dispatcher's health probe is an OPTIONS: each gateway must answer it with 200.
    for name, gw in gws.items():
        assert options_ping(gw.sip_port, 2.0) == 200, f"{name} does not answer OPTIONS with 200"

    kam = Kamailio(tmp_path / "kamailio", free_port(), [(n, g.sip_port) for n, g in gws.items()], ping_interval_s=1)
    started.append(kam)
    kam.start()
    time.sleep(2.5)  # two probe rounds: a gateway failing its OPTIONS would be marked down by now
    assert "gateway DOWN" not in kam.log(), kam.log()[-3000:]

    # --- N calls through Kamailio: round-robin over both gateways.
    result = bridge_calls(kam, tmp_path / "bridge", CALLS, rate=10)
    assert result.returncode == 0 and result.successful == CALLS and result.failed == 0, (
        f"bridge: {result.successful} ok, {result.failed} failed\n{result.stderr[-2000:]}\n" + kam.log()[-3000:]
    )

    lines = {name: gw.wait_calls(1, timeout_s=10) for name, gw in gws.items()}
    deadline = time.monotonic() + 10
    while sum(len(v) for v in lines.values()) < CALLS and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = {name: gw.call_lines() for name, gw in gws.items()}
    per_gateway = {name: len(v) for name, v in lines.items()}
    assert sum(per_gateway.values()) == CALLS, per_gateway
    # Round-robin: both gateways took calls (exactly half each, unless a probe
    # changed the rotation, which the DOWN check above excludes).
    assert all(n > 0 for n in per_gateway.values()), per_gateway
    assert per_gateway == {"gw-a": CALLS // 2, "gw-b": CALLS // 2}, per_gateway
    for v in lines.values():
        for line in v:
            assert line["decision"] == "allow" and line["bridge_status"] == 200 and line["trunk_status"] == 200, line
            # carrier-a refused it with 503; the gateway failed over to carrier-b.
            assert line["trunk"] == "carrier-b" and line["trunk_attempts"] == [
                {"trunk": "carrier-a", "status": 503},
                {"trunk": "carrier-b", "status": 200},
            ], line
            # The bridge's BYE reached the gateway that took the call (via the Record-Route).
            assert line["ended_by"] == "bridge", line

    # --- One ledger: every call exactly once, written by the gateway that handled it.
    rows = ledger_rows(topology_db)
    assert len(rows) == CALLS, rows
    counts = Counter(r[0] for r in rows)
    assert all(c == 1 for c in counts.values()), counts
    by_instance = {name: {r[0] for r in rows if r[1] == name} for name in gws}
    for name, v in lines.items():
        assert by_instance[name] == {line["call_id"] for line in v}, name
    assert all(r[2] == "closed" and r[4] == 1 for r in rows), rows

    # --- Health probing: stop gw-b; Kamailio marks it down and sends everything to gw-a.
    assert gws["gw-b"].stop() == 0
    kam.wait_log("gateway DOWN", timeout_s=10)
    result = bridge_calls(kam, tmp_path / "bridge-failover", extra_calls, rate=5)
    assert result.returncode == 0 and result.successful == extra_calls, (
        f"bridge after gw-b stopped: {result.successful} ok, {result.failed} failed\n{result.stderr[-2000:]}"
    )
    gws["gw-a"].wait_calls(CALLS // 2 + extra_calls, timeout_s=10)
    rows = ledger_rows(topology_db)
    assert len(rows) == CALLS + extra_calls and len({r[0] for r in rows}) == len(rows)
    assert Counter(r[1] for r in rows) == {"gw-a": CALLS // 2 + extra_calls, "gw-b": CALLS // 2}

    trunk_out, trunk_err = trunk.communicate(timeout=30)
    assert trunk.returncode == 0, trunk_err[-2000:]
    _, refusing_err = refusing.communicate(timeout=30)
    assert refusing.returncode == 0, refusing_err[-2000:]  # exactly one 503 per call
