"""Replay every input kept under tests/data/fuzz/crashers/ (see its README)
against one running gateway, with the invariants of the fuzz run, and the
answer each note's `expect:` line names: the answer to the INVITE for a kept
INVITE or trunk answer, the answer to the request in the call for a kept
in-dialog request."""

from __future__ import annotations

import re

import pytest

from tests.fuzzing import FuzzCase, number_for
from tests.integration import netns
from tests.integration.fuzz_harness import CRASHERS, Fuzzer, NetnsGateway, PyTrunk, trunk_leg_violations

pytestmark = pytest.mark.integration


def role_of(name: str) -> str:
    """`<hash>.<udp|tcp>.sip`: an INVITE; `<hash>.trunk.sip`: a trunk's answer;
    `<hash>.dialog.<udp|tcp>.sip`: a request inside an established call."""
    parts = name.split(".")
    return parts[1] if len(parts) > 3 or parts[1] == "trunk" else "invite"


def kept_inputs() -> list[tuple[str, str, bytes, str | None, str]]:
    """(name, transport, bytes, expected final status or "none" or None, seed name) per kept input."""
    out = []
    for path in sorted(CRASHERS.glob("*.sip")):
        transport = "tcp" if path.name.endswith(".tcp.sip") else "udp"
        note = path.with_suffix(".txt")
        expect = None
        seed = path.name
        if note.exists():
            text = note.read_text()
            m = re.search(r"(?m)^expect:\s*(\d{3}|none)\s*$", text)
            expect = m.group(1) if m else None
            m = re.search(r"role \w+: seed (\w+)", text)
            seed = m.group(1) if m else seed
        out.append((path.name, transport, path.read_bytes(), expect, seed))
    return out


def test_the_crashers_directory_is_documented():
    assert (CRASHERS / "README.md").exists()
    for name, *_ in kept_inputs():
        assert (CRASHERS / name).with_suffix(".txt").exists(), f"{name} has no note saying why it was kept"


def test_every_kept_input_is_survived_and_answered_as_expected(tmp_path):
    inputs = kept_inputs()
    if not inputs:
        pytest.skip("no input kept under tests/data/fuzz/crashers/")
    why = netns.available()
    if why is not None:
        pytest.skip(f"replaying fuzz inputs needs a private network namespace: {why}")
    ns = netns.NetNamespace()
    gw = NetnsGateway.create_in(ns, tmp_path / "gw").start()
    trunk = PyTrunk(ns, gw.trunk_port)
    fuzzer = Fuzzer(ns, gw, trunk, keep_crashers=False)
    wrong = []
    try:
        for number, (name, transport, data, expect, seed) in enumerate(inputs):
            # Trunk answers and in-dialog requests ride on a clean call to number_for(case).
            result = fuzzer.run_case(FuzzCase(9000 + number, seed, (), transport, data, role_of(name)))
            got = str(result.final) if result.final is not None else "none"
            if expect is not None and got != expect:
                wrong.append(f"{name}: expected {expect}, got {got} ({result.statuses})")
        assert gw.alive()
        assert fuzzer.normal_call(9998) == (200, 200)
        gw.wait_for(
            lambda e: (
                e.get("event") == "call" and e.get("destination") == number_for(9998) and e.get("reason") == "allowed"
            ),
            10,
        )
        gw.assert_no_leaks(timeout_s=30)
        violations = trunk_leg_violations(gw.call_lines(), trunk.snapshot())
    finally:
        fuzzer.close()
        trunk.close()
        rc = gw.stop()
        ns.close()
    gw.assert_stdout_is_json()
    assert rc == 0
    assert not fuzzer.crashes, [(what, str(c.seed_name)) for c, what, _ in fuzzer.crashes]
    assert not fuzzer.findings, fuzzer.findings
    assert not wrong, wrong
    assert not violations, violations
