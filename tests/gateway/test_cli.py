"""`dialout-gw` as an operator meets it: help, version, and clear start-up errors."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.gateway_proc import gateway_config
from tests.integration.sipp_runner import free_port

REPO = Path(__file__).resolve().parents[2]


def dialout_gw(*args, cwd=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO
    )


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def test_help_lists_every_command_and_explains():
    proc = dialout_gw("--help")
    assert proc.returncode == 0
    for command in ("run", "explain", "usage", "db", "directory"):
        assert command in proc.stdout
    assert "dial-out gateway" in proc.stdout and "exit codes" in proc.stdout
    run_help = dialout_gw("run", "--help")
    assert run_help.returncode == 0 and "SIGTERM" in run_help.stdout and "SIGHUP" in run_help.stdout


def test_version_names_the_pjproject_build_under_it():
    import pjsua2_build

    proc = dialout_gw("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("dialout-gw ")
    assert f"pjproject {pjsua2_build.PJPROJECT_VERSION} " in proc.stdout
    assert f"source sha256 {pjsua2_build.SOURCE_SHA256}" in proc.stdout


def test_missing_config_file(tmp_path):
    assert_user_error(dialout_gw("run", "--config", str(tmp_path / "nope.toml")), "nope.toml")


def test_toml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nlisten = [\n")
    assert_user_error(dialout_gw("run", "--config", str(bad)), "bad.toml", "TOML syntax error")


@pytest.mark.parametrize(
    "old,new,fragment",
    [
        ("port = {sip}", 'port = "five"', "gateway.listen[0].port"),
        ('trusted_sources = ["127.0.0.1/32"]', 'trusted_sources = ["127.0.0.300/32"]', "gateway.trusted_sources[0]"),
        ('dialout_policy = "zone_a"', 'dialout_policy = "sometimes"', "dialout_policy"),
        ('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"', "timezone"),
    ],
)
def test_bad_values_name_the_key(tmp_path, old, new, fragment):
    sip = free_port()
    text = gateway_config(sip_port=sip, trunk_port=free_port(), db_path=tmp_path / "l.db")
    text = text.replace(old.format(sip=sip), new, 1)
    assert new in text, "the test's replacement did not apply"
    cfg = tmp_path / "gw.toml"
    cfg.write_text(text)
    assert_user_error(dialout_gw("run", "--config", str(cfg)), "gw.toml", fragment)


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        cfg = tmp_path / "gw.toml"
        cfg.write_text(gateway_config(sip_port=port, trunk_port=free_port(), db_path=tmp_path / "l.db"))
        proc = dialout_gw("run", "--config", str(cfg))
    assert_user_error(proc, "cannot listen on udp 127.0.0.1:")


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        gateway_config(
            sip_port=free_port(),
            trunk_port=free_port(),
            db_path=tmp_path / "l.db",
            store_url=f"postgresql://nobody:secret@127.0.0.1:{free_port(socket.SOCK_STREAM)}/x",
        )
    )
    proc = dialout_gw("run", "--config", str(cfg))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "store.url" in proc.stderr and "secret" not in proc.stderr


def test_check_validates_config_and_ledger_then_exits(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(gateway_config(sip_port=free_port(), trunk_port=free_port(), db_path=tmp_path / "l.db"))
    proc = dialout_gw("run", "--config", str(cfg), "--check")
    assert proc.returncode == 0, proc.stderr
    assert '"config_ok"' in proc.stdout and (tmp_path / "l.db").exists()


def test_the_example_config_is_valid(tmp_path):
    proc = dialout_gw("run", "--config", str(REPO / "examples" / "gateway.toml"), "--check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


TRUNKS = """
[[trunks]]
name = "na"
uri = "sip:127.0.0.1:{port}"
destinations = ["US", "CA"]
username = "gw"
password_env = "DIALOUT_TEST_TRUNK_PASSWORD"
caller_id = "sip:+18005550100@gw-under-test"

[[trunks]]
name = "eu"
uri = "sip:127.0.0.1:{port}"
destinations = ["FR", "+999"]
caller_id = "sip:+33142685300@gw-under-test"
"""


def _trunks_config(tmp_path) -> Path:
    port = free_port()
    text = gateway_config(sip_port=free_port(), trunk_port=port, db_path=tmp_path / "l.db")
    start = text.index("[trunk]\n")
    end = text.index("\n[", start + 1)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(text[:start] + TRUNKS.format(port=port) + text[end:])
    return cfg


def _run_with_env(env_extra, *args):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DIALOUT_TEST_TRUNK_PASSWORD"} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def test_check_reports_trunk_findings_and_fails_on_errors(tmp_path):
    cfg = _trunks_config(tmp_path)
    proc = _run_with_env({}, "run", "--config", str(cfg), "--check")
    assert_user_error(
        proc,
        f"dialout-gw run: {cfg}: error: trunks[0].password_env: the environment variable "
        "DIALOUT_TEST_TRUNK_PASSWORD is not set (trunk na)",
        f"dialout-gw run: {cfg}: warning: trunks[1].destinations[1]: no E.164 number starts with +999",
    )
    assert not (tmp_path / "l.db").exists()  # refused before the ledger was opened
    ok = _run_with_env({"DIALOUT_TEST_TRUNK_PASSWORD": "s3cret"}, "run", "--config", str(cfg), "--check")
    assert ok.returncode == 0, ok.stderr
    assert "warning: trunks[1].destinations[1]" in ok.stderr and "error" not in ok.stderr
    assert '"trunk_check"' in ok.stdout and '"config_ok"' in ok.stdout and "s3cret" not in ok.stdout + ok.stderr


def test_run_refuses_an_unset_password_env_with_one_line(tmp_path):
    proc = _run_with_env({}, "run", "--config", str(_trunks_config(tmp_path)))
    assert_user_error(
        proc,
        "gw.toml: trunks[0].password_env: the environment variable DIALOUT_TEST_TRUNK_PASSWORD is not set (trunk na)",
    )
    assert len(proc.stderr.strip().splitlines()) == 1
