"""`dialout-gw logs` on the log of a real gateway driven by SIPp, and number
masking (`logging.mask_numbers = true`) checked over the whole log.

The CLI runs as a subprocess (`python -m gateway.cli logs ...`), as operators run it.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.gateway_proc import REPO, GatewayProcess, gateway_config
from tests.integration.sipp_runner import free_port, run_sipp
from tests.integration.test_gateway_calls import expect_status

pytestmark = pytest.mark.integration

RELAYED = ("alice@contoso.com", "+33142685300")
REJECTED = [
    # organizer, number, status, reason
    ("bob@contoso.com", "+4930123456", 403, "not_domestic"),
    ("frank@fabrikam.com", "+442071234567", 403, "no_entitlement"),
    ("nobody@contoso.com", "+33142685300", 403, "organizer_unknown"),
    ("alice@contoso.com", "+19005550100", 403, "destination_blocked"),
]


PYTHON_M = [sys.executable, "-m", "gateway.cli"]
# The installed entry point (`dialout-gw`, i.e. gateway.cli:main), as operators run it.
_SCRIPT = Path(sys.executable).parent / "dialout-gw"
ENTRY_POINT = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"]
)


def logs_cli(*args, stdin: bytes | None = None, command=PYTHON_M) -> subprocess.CompletedProcess:
    return subprocess.run([*command, "logs", *map(str, args)], input=stdin, capture_output=True, cwd=REPO, timeout=60)


def relay_one_call(gw, tmp_path, organizer, number):
    """Like test_relay's bridge/start_trunk, with free media ports instead of 7000/9000
    (other suites may be running SIPp on the same machine)."""
    trunk = run_sipp(
        "trunk_answer.xml",
        "",
        tmp_path / "trunk",
        local_port=gw.trunk_port,
        extra=["-mp", str(free_port())],
        background=True,
        timeout_s=30,
    )
    result = run_sipp(
        "bridge_call.xml",
        gw.target,
        tmp_path / "bridge",
        service=number,
        local_port=free_port(),
        extra=["-key", "organizer", organizer, "-key", "location", "FR", "-mp", str(free_port()), "-d", "200"],
        timeout_s=30,
    )
    _, trunk_err = trunk.communicate(timeout=30)
    assert result.returncode == 0, (result.stderr[-1500:], trunk_err[-1500:])


def drive_calls(gw, tmp_path, rejected=REJECTED, untrusted=True):
    """One relayed call through a SIPp trunk, the given rejections, and an untrusted source."""
    relay_one_call(gw, tmp_path, *RELAYED)
    for organizer, number, status, reason in rejected:
        res, trace = expect_status(gw, tmp_path, status, organizer=organizer, number=number, name=f"reject-{reason}")
        assert res.returncode == 0, (reason, res.stderr[-1000:], trace[-1000:])
    if untrusted:
        res, _ = expect_status(gw, tmp_path, 403, local_ip="127.0.0.2", name="untrusted")
        assert res.returncode == 0
    gw.wait_calls(1 + len(rejected))
    if untrusted:
        gw.wait_for(lambda e: e.get("event") == "admission_refused")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A gateway that carried one relayed call, four rejections and one refusal, then stopped."""
    tmp_path = tmp_path_factory.mktemp("logs-cli")
    gw = GatewayProcess.create(tmp_path / "gw", extra_gateway='untrusted = "reject"').start()
    try:
        drive_calls(gw, tmp_path)
    finally:
        assert gw.stop() == 0
    return gw


def summary_json(*args, stdin=None) -> dict:
    proc = logs_cli(*args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def test_summary_json_counts_what_sipp_did(ran):
    lines = ran.call_lines()
    d = summary_json(ran.log_path, "summary", "--json")
    assert d["calls"]["total"] == 5 and d["calls"]["relayed"] == 1 and d["calls"]["rejected"] == 4
    assert d["calls"]["answered"] == 1 and d["calls"]["relay_ratio"] == 0.2
    assert {r["reason"]: r["calls"] for r in d["reasons"]} == {
        "allowed": 1,
        "not_domestic": 1,
        "no_entitlement": 1,
        "organizer_unknown": 1,
        "destination_blocked": 1,
    }
    # Tenants, organisers and regions agree with the gateway's own lines.
    for key, name in (("tenants", "tenant"), ("organizers", "organizer"), ("regions", "region")):
        expected = Counter((line.get(name) or "-") for line in lines)
        assert {r[name]: r["calls"] for r in d[key]} == dict(expected), key
    tenants = {r["tenant"]: r for r in d["tenants"]}
    assert tenants["contoso"]["relayed"] == 1 and tenants["contoso"]["billed_units"] == 1
    assert tenants["fabrikam"] == {
        "tenant": "fabrikam",
        "calls": 1,
        "relayed": 0,
        "rejected": 1,
        "billed_units": 0,
        "talk_s": 0.0,
    }
    setup = d["setup_ms"]
    assert setup["all"]["count"] == 5 and setup["relayed"]["count"] == 1 and setup["rejected"]["count"] == 4
    relayed_setup = next(line["setup_ms"] for line in lines if line["decision"] == "allow")
    assert setup["relayed"]["p50"] == setup["relayed"]["p99"] == round(relayed_setup, 2)
    assert 0 < setup["all"]["p50"] <= setup["all"]["p99"] <= setup["all"]["max"]
    assert d["admission_refusals"] == {"lines": 1, "total": 1, "by_reason": {"untrusted_source": 1}}
    assert d["lines"]["malformed"] == 0 and d["lines"]["total"] >= 8


def test_summary_table_for_people(ran):
    proc = logs_cli(ran.log_path, "summary")
    assert proc.returncode == 0
    out = proc.stdout.decode()
    for text in (
        "calls",
        "relayed (allow)",
        "top reasons",
        "not_domestic",
        "top tenants",
        "fabrikam",
        "top organisers",
        "bob@contoso.com",
        "top destination regions",
        "setup time (ms)",
        "admission refusals",
        "untrusted_source",
    ):
        assert text in out, text


def test_filters_on_the_real_log(ran):
    assert summary_json(ran.log_path, "summary", "--json", "--tenant", "fabrikam")["calls"]["total"] == 1
    d = summary_json(ran.log_path, "summary", "--json", "--reason", "not_domestic")
    assert d["calls"]["total"] == 1 and d["reasons"][0]["reason"] == "not_domestic"
    assert summary_json(ran.log_path, "summary", "--json", "--since", "2999-01-01")["calls"]["total"] == 0
    first = min(line["timestamp"] for line in ran.call_lines())
    assert summary_json(ran.log_path, "summary", "--json", "--since", first)["calls"]["total"] == 5
    assert summary_json(ran.log_path, "summary", "--json", "--until", first)["calls"]["total"] == 0


def test_gzip_and_stdin_give_the_same_summary(ran, tmp_path):
    plain = summary_json(ran.log_path, "summary", "--json")
    packed = tmp_path / "gateway.log.1"
    packed.write_bytes(gzip.compress(ran.log_path.read_bytes()))
    assert summary_json(packed, "summary", "--json") == plain
    assert summary_json("-", "summary", "--json", stdin=packed.read_bytes()) == plain


def test_call_shows_a_rejection_with_its_trace(ran):
    line = next(e for e in ran.call_lines() if e["reason"] == "not_domestic")
    proc = logs_cli(ran.log_path, "call", line["call_id"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert f"call {line['call_id']}" in out and "deny  not_domestic" in out and "bridge 403" in out
    assert "bob@contoso.com" in out and "\n  trace\n" in out
    for step in line["trace"]:
        assert step in out
    d = summary_json(ran.log_path, "call", line["call_id"], "--json")
    assert d["found"] and d["call"]["reason"] == "not_domestic" and d["call"]["trace"] == line["trace"]
    assert d["call"]["explanation"] == line["explanation"]


def test_call_shows_the_relayed_call(ran):
    line = next(e for e in ran.call_lines() if e["decision"] == "allow")
    d = summary_json(ran.log_path, "call", line["call_id"], "--json")
    assert d["call"]["bridge_status"] == 200 and d["call"]["trunk_status"] == 200
    assert "trace" not in d["call"]
    proc = logs_cli(ran.log_path, "call", line["call_id"], "--tenant", "fabrikam")
    assert proc.returncode == 1 and b"matching the filters" in proc.stderr


MISTAKES = [
    ("missing.log", "summary"),
    ("LOG", "summary", "--since", "yesterday"),
    ("LOG", "call", "x", "--until", "soon"),
    ("LOG",),
    ("LOG", "summary", "--jobs", "0"),
]


def test_operator_mistakes_exit_2_with_one_line(ran, tmp_path):
    for args in MISTAKES:
        args = [ran.log_path if a == "LOG" else tmp_path / a if a.endswith(".log") else a for a in args]
        proc = logs_cli(*args, command=ENTRY_POINT)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert err.startswith("dialout-gw logs: ") and err.count("\n") == 1 and "Traceback" not in err
    proc = logs_cli(ran.log_path, "call", "no-such-call", command=ENTRY_POINT)
    assert proc.returncode == 1 and b"no line about call" in proc.stderr


def test_python_dash_m_reports_operator_mistakes_without_traceback(tmp_path):
    proc = logs_cli(tmp_path / "missing.log", "summary", command=PYTHON_M)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


# --- number masking -------------------------------------------------------------------------------


def masked_gateway(workdir) -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    sip_port, trunk_port = free_port(), free_port()
    text = gateway_config(sip_port=sip_port, trunk_port=trunk_port, db_path=workdir / "ledger.db")
    assert "pjsip_level = 1" in text
    text = text.replace("pjsip_level = 1", "pjsip_level = 1\nmask_numbers = true")
    return GatewayProcess(workdir, text, sip_port=sip_port, trunk_port=trunk_port)


MASK_REJECTED = REJECTED[:1] + REJECTED[3:]  # not_domestic (+49...), destination_blocked (+1900...)
FULL_NUMBERS = [RELAYED[1]] + [r[1] for r in MASK_REJECTED]


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("masked")
    gw = masked_gateway(tmp_path / "gw").start()
    try:
        drive_calls(gw, tmp_path, MASK_REJECTED, untrusted=False)
    finally:
        assert gw.stop() == 0
    return gw


def leaks(gw) -> list[str]:
    """Every place in the gateway's output (stdout log and stderr) where a full number appears,
    as 'event.key' for JSON lines or 'line N' otherwise. A number counts as present if its
    national significant part (without the country code) is there, in any formatting."""
    patterns = {n: re.compile(r"\D?".join(n[-9:])) for n in FULL_NUMBERS}
    found = []
    for path in (gw.log_path, gw.err_path):
        for i, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
            hits = [n for n, p in patterns.items() if p.search(raw)]
            if not hits:
                continue
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                found.append(f"{path.name} line {i}: {raw[:160]}")
                continue
            for key, value in event.items():
                text = json.dumps(value, ensure_ascii=False)
                for n in hits:
                    if patterns[n].search(text):
                        found.append(f"{path.name} line {i}: event={event.get('event')} key={key} has {n}")
    return found


def test_masked_fields_and_readable_reasons(masked):
    lines = {line["reason"]: line for line in masked.call_lines()}
    assert set(lines) == {"allowed", "not_domestic", "destination_blocked"}
    assert lines["allowed"]["dialled"] == "+33xxxxxxx00" and lines["allowed"]["destination"] == "+33xxxxxxx00"
    assert lines["not_domestic"]["dialled"] == "+49xxxxxx56"
    assert lines["destination_blocked"]["destination"] == "+1xxxxxxxx00"
    # Reasons, regions and explanations stay readable.
    assert lines["allowed"]["region"] == "FR" and lines["not_domestic"]["region"] == "DE"
    for line in lines.values():
        assert line["explanation"]
    # The log tool works the same on a masked log.
    d = summary_json(masked.log_path, "summary", "--json")
    assert {r["reason"] for r in d["reasons"]} == set(lines)


def test_no_full_number_anywhere_in_a_masked_log(masked):
    found = leaks(masked)
    assert found == [], "\n".join(found)
