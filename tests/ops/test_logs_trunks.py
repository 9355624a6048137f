"""`summary` per trunk: attempts, answers, ASR, failures and failovers, from
synthetic canonical lines (`trunk`, `trunk_attempts`) as the gateway writes them."""

from __future__ import annotations

import json

import pytest

from ops import logs as la
from ops.logs import reading
from tests.ops.test_loganalysis import call, deny, lines, refusal, write


def routed(call_id, attempts, *, final=None, bridge_status=None, **kw):
    """A relayed call that tried `attempts` = [(trunk, status), ...] in order."""
    answered = bool(attempts) and attempts[-1][1] is not None and 200 <= attempts[-1][1] < 300
    status = bridge_status or (200 if answered else (attempts[-1][1] or 408))
    return call(
        call_id,
        reason="allowed" if answered else "trunk_failure",
        bridge_status=status,
        billed_units=1 if answered else 0,
        trunk=final if final is not None else (attempts[-1][0] if attempts else None),
        trunk_attempts=[{"trunk": t, "status": s} for t, s in attempts],
        **kw,
    )


LOG = [
    routed("c1", [("us-a", 503), ("us-b", 200)]),  # failed over, answered
    routed("c2", [("us-a", 200)]),
    routed("c3", [("us-a", 486)]),  # busy: no failover on 4xx
    routed("c4", [("us-a", None), ("us-b", 503), ("us-c", 200)]),  # setup timeout, then a 503
    routed("c5", [("us-a", 503), ("us-b", 408)]),  # failed over, not answered
    routed("c6", [("eu", 200)], tenant="fabrikam"),
    deny("c7", "not_domestic", trunk=None, trunk_attempts=[]),  # rejected: no trunk
    refusal(),
]


def trunks(log=LOG, top=0, **filters):
    return la.summarize([lines(log)], la.Filters.from_strings(**filters)).to_dict(top=top)["trunks"]


def by_name(t):
    return {row["trunk"]: row for row in t["trunks"]}


def test_attempts_answers_asr_and_failures_per_trunk():
    t = trunks()
    assert t["calls"] == 6 and t["failover_calls"] == 3 and t["failover_answered"] == 2
    rows = by_name(t)
    assert rows["us-a"] == {
        "trunk": "us-a",
        "attempts": 5,
        "answers": 1,
        "asr": 0.2,
        "failures": {"4xx": 1, "5xx": 2, "timeout": 1},
        "failed_over_from": 3,
        "failed_over_to": 0,
        "final": 2,
    }
    assert rows["us-b"] == {
        "trunk": "us-b",
        "attempts": 3,
        "answers": 1,
        "asr": 0.3333,
        "failures": {"5xx": 1, "timeout": 1},
        "failed_over_from": 1,
        "failed_over_to": 3,
        "final": 2,
    }
    assert rows["us-c"]["attempts"] == 1 and rows["us-c"]["asr"] == 1.0 and rows["us-c"]["failed_over_to"] == 1
    assert rows["eu"]["failed_over_from"] == rows["eu"]["failed_over_to"] == 0
    assert [r["trunk"] for r in t["trunks"]] == ["us-a", "us-b", "eu", "us-c"]  # by attempts, then name
    assert sum(r["final"] for r in t["trunks"]) == t["calls"]


def test_failover_paths_say_which_trunk_a_call_failed_over_from():
    assert trunks()["failovers"] == [
        {"from": "us-a", "to": "us-b", "calls": 3},
        {"from": "us-b", "to": "us-c", "calls": 1},
    ]


def test_rejected_calls_and_calls_that_reached_no_trunk_are_not_counted():
    t = trunks([deny("d1", "no_entitlement", trunk=None, trunk_attempts=[]), call("d2", trunk=None, trunk_attempts=[])])
    assert t == {"calls": 0, "failover_calls": 0, "failover_answered": 0, "trunks": [], "failovers": []}


def test_a_line_without_trunk_attempts_counts_one_attempt_on_its_trunk():
    """The Kamailio plugin's line (and an older gateway's) has `trunk` and `trunk_status` only."""
    t = trunks(
        [
            call("k1", trunk="carrier.example", trunk_status=200),
            call("k2", reason="trunk_failure", bridge_status=503, trunk="carrier.example", trunk_status=503),
            call("k3"),
        ]
    )  # neither field: not counted
    assert t["calls"] == 2 and t["failover_calls"] == 0
    assert by_name(t)["carrier.example"] | {"failures": None} == {
        "trunk": "carrier.example",
        "attempts": 2,
        "answers": 1,
        "asr": 0.5,
        "failures": None,
        "failed_over_from": 0,
        "failed_over_to": 0,
        "final": 2,
    }


def test_malformed_attempts_are_skipped():
    t = trunks([call("m1", trunk="us-a", trunk_attempts=["us-a", {"status": 200}, {"trunk": "us-a", "status": "x"}])])
    assert by_name(t) == {
        "us-a": {
            "trunk": "us-a",
            "attempts": 1,
            "answers": 0,
            "asr": 0.0,
            "failures": {"timeout": 1},
            "failed_over_from": 0,
            "failed_over_to": 0,
            "final": 1,
        }
    }


def test_filters_apply_and_top_cuts_the_trunk_rows():
    t = trunks(tenant="fabrikam")
    assert t["calls"] == 1 and [r["trunk"] for r in t["trunks"]] == ["eu"]
    t = trunks(top=1)
    assert [r["trunk"] for r in t["trunks"]] == ["us-a"] and len(t["failovers"]) == 1
    assert t["calls"] == 6  # totals are over every trunk


@pytest.mark.parametrize("compress", [False, True])
def test_worker_processes_give_the_same_trunk_counts(tmp_path, monkeypatch, compress):
    path = write(tmp_path / "big.log", LOG * 300, compress)
    monkeypatch.setattr(reading, "CHUNK_BYTES", 4096)
    one = la.summarize_path(str(path), jobs=1).to_dict(top=0)["trunks"]
    two = la.summarize_path(str(path), jobs=2).to_dict(top=0)["trunks"]
    assert two == one and one["calls"] == 6 * 300 and by_name(one)["us-a"]["attempts"] == 5 * 300


def test_human_table_has_a_row_per_trunk_and_the_failover_paths():
    d = la.summarize([lines(LOG)]).to_dict(top=0)
    text = la.format_summary(d, "gw.log")
    section = text[text.index("\ntrunks ") :]
    assert "6 calls reached a trunk; 3 failed over, 2 of them answered" in section
    row = next(line.split() for line in section.splitlines() if line.strip().startswith("us-a "))
    # trunk, attempts, answered, ASR (2 cells), failed over from, to, final, failures
    assert row[:8] == ["us-a", "5", "1", "20.0", "%", "3", "0", "2"]
    assert " ".join(row[8:]) == "4xx 1, 5xx 2, timeout 1"
    paths = section[section.index("\nfailovers") :].split("\n\n")[0].splitlines()
    assert [line.split() for line in paths[4:]] == [["us-a", "us-b", "3"], ["us-b", "us-c", "1"]]


def test_human_table_leaves_the_section_out_when_no_call_reached_a_trunk():
    d = la.summarize([lines([deny("d1", "not_domestic", trunk=None, trunk_attempts=[])])]).to_dict()
    assert "\ntrunks " not in la.format_summary(d, "gw.log")


def test_cli_json_and_table(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path / "gw.log", LOG)
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "logs", str(path), "summary", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trunks"]["failovers"][0] == {"from": "us-a", "to": "us-b", "calls": 3}
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "logs", str(path), "summary", "--top", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "failed over from" in out.stdout and "us-c" not in out.stdout
