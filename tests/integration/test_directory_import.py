"""Organisers imported into the ledger are decided on exactly like the file's."""

import json
import subprocess
import sys

import pytest

from tests.integration.gateway_proc import GatewayProcess
from tests.integration.test_gateway_calls import expect_status, final_response, header
from tests.integration.test_relay import bridge, start_trunk

pytestmark = pytest.mark.integration

IMPORT = {
    "tenants": [
        {
            "id": "northwind",
            "timezone": "Europe/London",
            "subscription_licences": 3,
            "credits": {"enabled": False, "balance": 0},
        }
    ],
    "organizers": [
        {
            "id": "nina@northwind.example",
            "tenant": "northwind",
            "usage_location": "GB",
            "audio_conferencing": "subscription",
            "dialout_policy": "tag:DialoutCPCandPSTNDomestic",
        },
    ],
}


def dialout_gw(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_imported_organizers_are_used_by_the_gateway(tmp_path):
    gw = GatewayProcess.create(tmp_path / "gw")
    rows = tmp_path / "directory.json"
    rows.write_text(json.dumps(IMPORT))
    imported = dialout_gw("directory", "import", "--config", str(gw.config_path), str(rows), cwd=gw.workdir)
    assert imported.returncode == 0, imported.stderr
    assert "1 tenants and 1 organizers" in imported.stdout

    gw.start()
    try:
        trunk = start_trunk(gw, tmp_path)
        assert (
            bridge(gw, tmp_path, organizer="nina@northwind.example", number="+442071234567", location="GB").returncode
            == 0
        )
        trunk.communicate(timeout=20)
        line = gw.wait_calls(1)[0]
        assert line["reason"] == "allowed" and line["tenant"] == "northwind" and line["bucket"] == "tenant_pool"
        # Her policy is domestic (GB): France is refused, as for any organiser in the file.
        result, trace = expect_status(gw, tmp_path, 403, organizer="nina@northwind.example")
        assert header(final_response(trace, 403), "Reason") == 'SIP;cause=403;text="not_domestic"'
        assert any(e.get("event") == "directory_from_ledger" for e in gw.events())
    finally:
        gw.stop()


def test_an_import_that_would_not_load_is_refused_before_writing(tmp_path):
    gw = GatewayProcess.create(tmp_path / "gw")
    bad = json.loads(json.dumps(IMPORT))
    bad["organizers"][0]["dialout_policy"] = "sometimes"
    rows = tmp_path / "bad.json"
    rows.write_text(json.dumps(bad))
    proc = dialout_gw("directory", "import", "--config", str(gw.config_path), str(rows), cwd=gw.workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "dialout_policy" in proc.stderr
    assert not (gw.workdir / "ledger.db").exists() or "nina" not in (gw.workdir / "ledger.db").read_bytes().decode(
        "latin-1"
    )
