"""`dialout-gw db`, `usage` and `directory import`, through gateway.cli.main."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from gateway.cli import main
from store import BucketSpec, CallOpen, open_store

T0 = datetime(2018, 7, 10, 12, 0, tzinfo=timezone.utc)

CONFIG = """\
[store]
url = "{url}"
heartbeat_s = 30

[[tenants]]
id = "contoso"
timezone = "Europe/Paris"
subscription_licences = 25
credits = {{ enabled = true, balance = 120.0 }}

[[organizers]]
id = "alice@contoso.com"
tenant = "contoso"
usage_location = "FR"
audio_conferencing = "subscription"
dialout_policy = "any"
"""


@pytest.fixture
def config(tmp_path, store_url):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(url=store_url))
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_db_upgrade_is_idempotent(config, capsys):
    assert run(capsys, "db", "version", "--config", config)[:2] == (0, f"schema version 0 ({_dialect(config)})\n")
    code, out, _ = run(capsys, "db", "upgrade", "--config", config)
    assert code == 0 and out.startswith("schema version 2") and "upgraded from 0" in out
    code, out, _ = run(capsys, "db", "upgrade", "--config", config)
    assert code == 0 and "up to date" in out


def _dialect(config_path):
    return "sqlite" if "sqlite" in open(config_path).read() else "postgresql"


def test_usage_report(config, store_url, capsys):
    assert run(capsys, "usage", "--config", config)[0] == 2  # no schema yet: told to run db upgrade
    assert run(capsys, "db", "upgrade", "--config", config)[0] == 0
    s = open_store(store_url, instance_id="gw")
    chain = (BucketSpec("tenant_pool", 1500), BucketSpec("credits", 120.0, 0.1))
    for i, talk in enumerate([61, 125]):
        s.open_call(CallOpen(f"c{i}", "contoso", "alice@contoso.com", "+33142685300", "FR", "Europe/Paris", T0, chain))
        s.answered(f"c{i}", T0)
        s.close_call(f"c{i}", T0 + timedelta(seconds=talk), "normal")
    s.close()
    code, out, err = run(capsys, "usage", "--config", config, "--tenant", "CONTOSO", "--month", "2018-07", "--json")
    assert code == 0, err
    (t,) = json.loads(out)["tenants"]
    assert t["tenant"] == "contoso"
    assert t["pool"]["size_minutes"] == 1500.0 and t["pool"]["used_minutes"] == 5.0
    assert t["pool"]["remaining_minutes"] == 1495.0
    assert t["credits"]["left"] == 120.0
    assert t["top_organizers"][0] == {"organizer": "alice@contoso.com", "calls": 2, "talk_s": 186.0, "billed_minutes": 5.0}
    code, out, _ = run(capsys, "usage", "--config", config, "--month", "2018-07")
    assert code == 0 and "remaining 1,495.0" in out and "alice@contoso.com" in out
    code, _, err = run(capsys, "usage", "--config", config, "--tenant", "nobody")
    assert code == 2 and err.startswith("dialout-gw usage: --tenant: unknown tenant 'nobody'")
    code, _, err = run(capsys, "usage", "--config", config, "--month", "July")
    assert code == 2 and "--month: expected YYYY-MM" in err


def test_directory_import_csv_and_json(config, store_url, tmp_path, capsys):
    (tmp_path / "tenants.csv").write_text(
        "id,timezone,subscription_licences,credits_enabled,credits_balance\n"
        "northwind,America/New_York,4,yes,50\n"
        "tailspin,,0,,\n")
    (tmp_path / "organizers.csv").write_text(
        "id,tenant,usage_location,audio_conferencing,usca_addon,credits_licence,dialout_policy\n"
        "dan@northwind.com,northwind,US,subscription,true,false,any\n")
    (tmp_path / "more.json").write_text(json.dumps({
        "tenants": [{"id": "woodgrove", "timezone": "Europe/Berlin", "credits": {"enabled": False, "balance": 0}}],
        "organizers": [{"id": "eve@woodgrove.com", "tenant": "woodgrove", "usage_location": "DE",
                        "dialout_policy": "tag:DialoutCPCDomesticPSTNInternational"}]}))
    code, out, err = run(capsys, "directory", "import", "--config", config, str(tmp_path / "tenants.csv"),
                         str(tmp_path / "organizers.csv"), str(tmp_path / "more.json"))
    assert code == 0, err
    assert out == "imported 3 tenants and 2 organizers\n"
    s = open_store(store_url)
    tenants, organizers = s.directory_rows()
    s.close()
    assert tenants[0] == {"id": "northwind", "timezone": "America/New_York", "subscription_licences": 4,
                          "credits": {"enabled": True, "balance": 50.0}}
    assert tenants[1] == {"id": "tailspin", "subscription_licences": 0}
    assert organizers[0] == {"id": "dan@northwind.com", "tenant": "northwind", "usage_location": "US",
                             "audio_conferencing": "subscription", "usca_addon": True, "credits_licence": False,
                             "dialout_policy": "any"}


@pytest.mark.parametrize("name, content, message", [
    ("t.csv", "id,subscription_licences\nok,1\nbad,many\n", "t.csv row 3: key 'subscription_licences': expected a whole number >= 0, got 'many'"),
    ("t.csv", "id,licences\nx,1\n", "t.csv: header: unknown column 'licences' for tenants"),
    ("o.csv", "id,tenant,usca_addon\na,t,perhaps\n", "o.csv row 2: key 'usca_addon': expected true or false"),
    ("o.csv", "id,tenant\n,t\n", "o.csv row 2: key 'id': required"),
    ("d.json", '{"organizers": [{"id": "a", "tenant": "t"}, {"id": "b"}]}', "d.json organizers[1]: key 'tenant': required"),
    ("d.json", '{"tenants": [{"id": "t", "credits": {"enabled": "yes"}}]}', "d.json tenants[0]: credits: key 'enabled': expected true or false"),
    ("d.json", '{"tenants": [{"id": "t"}, {"id": "T"}]}', "tenant 'T' appears twice"),
    ("d.json", "[1, 2]", 'expected an object {"tenants"'),
    ("d.txt", "x", "unknown file type"),
])
def test_directory_import_rejects_bad_rows(tmp_path, capsys, name, content, message):
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(url=f"sqlite:///{tmp_path}/ledger.db"))
    (tmp_path / name).write_text(content)
    code, out, err = run(capsys, "directory", "import", "--config", str(config), str(tmp_path / name))
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "ledger.db").exists()  # nothing touched before every row is valid


def test_bad_store_config_and_unreachable_database(tmp_path, capsys):
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(url="mysql://x@y/z"))
    code, _, err = run(capsys, "db", "upgrade", "--config", str(config))
    assert code == 2 and "store.url: expected sqlite:///PATH or postgresql://" in err
    config.write_text(CONFIG.format(url="postgresql://u:pw@127.0.0.1:1/db"))
    code, _, err = run(capsys, "db", "upgrade", "--config", str(config))
    assert code == 1 and err.startswith("dialout-gw db: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/db")
    assert err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(capsys, "db", "upgrade", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "config file not found" in err
