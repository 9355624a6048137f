"""Fuzzed INVITEs against the real gateway (issue "Survive any input"), then
the other inputs of a call: fuzzed trunk answers to a clean INVITE, and
fuzzed requests the bridge sends inside an established call.

A bounded run in `make test` (FUZZ_CASES cases or FUZZ_SECONDS of fuzzing,
whichever ends first; 300 cases and at most 45 s by default; for the call
inputs FUZZ_CALL_CASES and FUZZ_CALL_SECONDS, 40 cases and at most 45 s),
a longer one with `make fuzz`. Inputs are deterministic per case
(tests/fuzzing.py, FUZZ_SEED); the harness, its safety net (a private
network namespace) and the invariants are in
tests/integration/fuzz_harness.py. At the end of each run:

* the gateway is alive and relays a normal call;
* every stdout line is a JSON object;
* `dialout_active_calls` is 0 and the ledger holds no live call;
* no trunk leg stayed answered while its bridge leg was not (defined in
  fuzz_harness.py: each trunk leg is released by the time its call's line is
  written, and none is left answered at the end);
* no input crashed or hung the gateway, and none made it log an error;
* every body crossed as its Content-Length delimits it (the bridge's INVITE
  and in-dialog requests toward the trunk, the trunk's answers toward the
  bridge).

Inputs that crash or hang it, or make it log an error, are written to
tests/data/fuzz/crashers/; test_fuzz_crashers.py replays every file there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fuzzing import make_case, make_dialog_case, make_trunk_case, number_for, radamsa_available
from tests.integration import netns
from tests.integration.fuzz_harness import (
    Fuzzer,
    NetnsGateway,
    PyTrunk,
    env_int,
    summary,
    trunk_leg_violations,
    write_report,
)

pytestmark = pytest.mark.integration

FUZZ_CASES = env_int("FUZZ_CASES", 300)
FUZZ_SECONDS = env_int("FUZZ_SECONDS", 45)
FUZZ_SEED = env_int("FUZZ_SEED", 4475)
FUZZ_FIRST = env_int("FUZZ_FIRST", 0)  # replay one stretch: FUZZ_FIRST=812 FUZZ_CASES=1
FUZZ_CALL_CASES = env_int("FUZZ_CALL_CASES", 40)  # about 0.75 s each: a call per case
FUZZ_CALL_SECONDS = env_int("FUZZ_CALL_SECONDS", 45)


@pytest.fixture
def namespace():
    why = netns.available()
    if why is not None:
        pytest.skip(f"fuzzing needs a private network namespace (root or user namespaces): {why}")
    ns = netns.NetNamespace()
    yield ns
    ns.close()


def test_fuzzed_invites_leave_the_gateway_alive_and_clean(namespace, tmp_path):
    report_path = Path(os.environ.get("FUZZ_REPORT", tmp_path / "fuzz-report.json"))
    fuzz_and_check(namespace, tmp_path, report_path, FUZZ_CASES, FUZZ_SECONDS, lambda case: make_case(case, FUZZ_SEED))


def test_fuzzed_trunk_answers_and_in_dialog_requests_leave_the_gateway_alive_and_clean(namespace, tmp_path):
    """Even cases: the trunk answers a clean INVITE with a fuzzed response
    (then a clean one when the gateway did not take it); odd cases: a clean
    call, a fuzzed request from the bridge inside it, then BYE."""
    report = Path(os.environ.get("FUZZ_REPORT", tmp_path / "fuzz-report.json"))
    report_path = report.with_name(report.stem + "-calls" + report.suffix)

    def case_for(case: int):
        return make_trunk_case(case, FUZZ_SEED) if case % 2 == 0 else make_dialog_case(case, FUZZ_SEED)

    fuzz_and_check(namespace, tmp_path, report_path, FUZZ_CALL_CASES, FUZZ_CALL_SECONDS, case_for, at_least=20)


def fuzz_and_check(
    namespace, tmp_path, report_path: Path, cases: int, seconds: int, case_for, at_least: int = 50
) -> None:
    gw = NetnsGateway.create_in(namespace, tmp_path / "gw").start()
    trunk = PyTrunk(namespace, gw.trunk_port)
    fuzzer = Fuzzer(namespace, gw, trunk)
    try:
        deadline = time.monotonic() + seconds
        for case in range(FUZZ_FIRST, FUZZ_FIRST + cases):
            if time.monotonic() > deadline:
                break
            fuzzer.run_case(case_for(case))
        ran = len(fuzzer.results)

        # 1. alive, and a normal call still goes through, end to end.
        assert gw.alive(), f"the gateway is down after the fuzzing: {gw.err_path.read_text()[-3000:]}"
        clean_case = 9999
        assert fuzzer.normal_call(clean_case) == (200, 200)
        gw.wait_for(
            lambda e: (
                e.get("event") == "call"
                and e.get("destination") == number_for(clean_case)
                and e.get("reason") == "allowed"
                and e.get("bridge_status") == 200
            ),
            10,
        )

        # 2. nothing left live: metrics and ledger (abandoned 200s end by Timer H, 6.4 s).
        gw.assert_no_leaks(timeout_s=30)

        # 3. the trunk-leg invariant.
        legs = trunk.snapshot()
        violations = trunk_leg_violations(gw.call_lines(), legs)
    finally:
        fuzzer.close()
        trunk.close()
        rc = gw.stop()
    report = summary(fuzzer, trunk.snapshot()) | {
        "seed": FUZZ_SEED,
        "first": FUZZ_FIRST,
        "radamsa": radamsa_available(),
        "exit_code": rc,
    }
    write_report(report_path, report)
    print(f"\nfuzz report: {report}")

    # 4. every stdout line is JSON, and the gateway stopped cleanly.
    gw.assert_stdout_is_json()
    assert rc == 0, f"the gateway exited with {rc}"
    assert not fuzzer.crashes, (
        f"inputs crashed or hung the gateway (kept under tests/data/fuzz/crashers/): {report['crashes']}"
    )
    assert not fuzzer.findings, f"inputs made the gateway log errors: {fuzzer.findings[:5]}"
    assert not violations, violations[:10]
    assert ran >= min(cases, at_least), f"only {ran} cases ran in {seconds} s"
    assert report["outcomes"].get("answered", 0) > 0, "no fuzzed INVITE was relayed: the seeds no longer work"
