"""The capacity build holds >= 1,000 calls at once (the PyPI wheels stop at 4)."""

import json
import subprocess
import sys
from pathlib import Path

import pjsua2 as pj
import pytest

from tests.integration.sipp_runner import free_port, run_sipp

pytestmark = pytest.mark.integration

CONCURRENT = 1000


def test_pjproject_is_at_least_2_14():
    # The build script refuses older sources; this checks what got installed.
    ep = pj.Endpoint()
    ep.libCreate()
    try:
        assert ep.libVersion().major == 2 and ep.libVersion().minor >= 14
    finally:
        ep.libDestroy()


def test_thousand_concurrent_ringing_calls_are_all_accepted(tmp_path):
    port = free_port()
    uas = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("ringing_uas.py")), str(port), str(CONCURRENT + 200)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert json.loads(uas.stdout.readline()) == {"ready": True}
        # 1,000 calls at 250/s take 4 s to open; each rings for 8 s before its
        # CANCEL, so all of them ring at the same time.
        result = run_sipp(
            "cancel_after_ring.xml", f"127.0.0.1:{port}", tmp_path,
            calls=CONCURRENT, rate=250, limit=CONCURRENT, local_port=free_port(),
            extra=["-d", "8000"], timeout_s=90,
        )
    finally:
        uas.terminate()
        out, err = uas.communicate(timeout=30)
    report = json.loads(out.strip().splitlines()[-1])
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert result.successful == CONCURRENT and result.failed == 0
    assert report["refused"] == 0
    assert report["total"] == CONCURRENT
    assert report["peak"] >= CONCURRENT
