"""The capacity build carries a thousand relayed calls at once through the
real gateway (the PyPI pjsua2 wheels stop at 4 calls)."""

import time

import pytest

from tests.integration.gateway_proc import example_policy_text
from tests.integration.sipp_runner import free_port, run_sipp

pytestmark = pytest.mark.integration

CONCURRENT = 1000


def test_pjproject_version_is_the_pinned_one():
    import pjsua2_build

    from gateway import _sipcore

    assert _sipcore.pj_version() == pjsua2_build.PJPROJECT_VERSION
    assert len(pjsua2_build.SOURCE_SHA256) == 64


def test_a_thousand_concurrent_relayed_calls(make_gateway, tmp_path):
    # One organiser places them all: lift the fair-use guards out of the way.
    policy = (
        example_policy_text()
        .replace("max_concurrent_per_organizer = 10", "max_concurrent_per_organizer = 5000")
        .replace("max_concurrent_per_tenant = 300", "max_concurrent_per_tenant = 5000")
        .replace("max_calls_per_minute_per_organizer = 20", "max_calls_per_minute_per_organizer = 100000")
    )
    gw = make_gateway(policy_text=policy)
    trunk = run_sipp(
        "trunk_answer.xml",
        "",
        tmp_path / "trunk",
        calls=CONCURRENT,
        local_port=gw.trunk_port,
        extra=["-mp", str(free_port())],
        background=True,
        timeout_s=120,
    )
    # 1,000 calls at 250/s take 4 s to open; each talks for 10 s, so all are up at once.
    peak = 0

    bridge = run_sipp(
        "bridge_call.xml",
        gw.target,
        tmp_path / "bridge",
        calls=CONCURRENT,
        rate=250,
        limit=CONCURRENT,
        local_port=free_port(),
        extra=[
            "-key",
            "organizer",
            "alice@contoso.com",
            "-key",
            "location",
            "FR",
            "-mp",
            str(free_port()),
            "-d",
            "10000",
        ],
        timeout_s=120,
        background=True,
    )
    deadline = time.monotonic() + 60
    while bridge.poll() is None and time.monotonic() < deadline:
        peak = max(peak, gw.metric("dialout_active_calls") or 0)
        time.sleep(0.5)
    out, err = bridge.communicate(timeout=120)
    trunk.communicate(timeout=60)
    assert bridge.returncode == 0, err[-2000:]
    assert trunk.returncode == 0
    assert peak >= CONCURRENT * 0.95
    lines = gw.wait_calls(CONCURRENT, timeout_s=60)
    assert all(line["reason"] == "allowed" and line["bridge_status"] == 200 for line in lines)
