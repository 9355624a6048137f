"""`dialout-gw db`, `usage` and `directory import`, through gateway.cli.main."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.cli import main
from gateway.commands.usage import format_report
from store import BucketSpec, CallOpen, open_store
from tests.terminal import run_on_a_terminal

T0 = datetime(2018, 7, 10, 12, 0, tzinfo=UTC)

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
    assert t["top_organizers"][0] == {
        "organizer": "alice@contoso.com",
        "calls": 2,
        "talk_s": 186.0,
        "billed_minutes": 5.0,
    }
    code, out, _ = run(capsys, "usage", "--config", config, "--month", "2018-07")
    assert code == 0 and "remaining 1,495.0" in out and "alice@contoso.com" in out
    code, _, err = run(capsys, "usage", "--config", config, "--tenant", "nobody")
    assert code == 2 and err.startswith("dialout-gw usage: --tenant: unknown tenant 'nobody'")
    code, _, err = run(capsys, "usage", "--config", config, "--month", "July")
    assert code == 2 and "--month: expected YYYY-MM" in err


def test_usage_formats_text_by_default_json_on_request_and_text_on_a_terminal(config, store_url, capsys, monkeypatch):
    assert run(capsys, "db", "upgrade", "--config", config)[0] == 0
    s = open_store(store_url, instance_id="gw")
    s.open_call(
        CallOpen(
            "c0",
            "contoso",
            "alice@contoso.com",
            "+33142685300",
            "FR",
            "Europe/Paris",
            T0,
            (BucketSpec("tenant_pool", 1500),),
        )
    )
    s.answered("c0", T0)
    s.close_call("c0", T0 + timedelta(seconds=61), "normal")
    s.close()
    argv = ("usage", "--config", config, "--month", "2018-07")
    code, text, _ = run(capsys, *argv)  # piped: the readable report, as before --format existed
    assert code == 0 and text.startswith("tenant contoso   month 2018-07 (Europe/Paris)\n")
    code, as_json, _ = run(capsys, *argv, "--json")
    assert code == 0 and run(capsys, *argv, "--format", "json")[1] == as_json
    assert json.loads(as_json)["tenants"][0]["calls"]["total"] == 1
    assert run(capsys, *argv, "--format", "text")[1] == text
    code, shown = run_on_a_terminal(monkeypatch, list(argv))
    assert code == 0 and shown == text
    code, shown = run_on_a_terminal(monkeypatch, [*argv, "--json"])
    assert code == 0 and json.loads(shown) == json.loads(as_json)


def _tenant(**over):
    t = {
        "tenant": "contoso",
        "known": True,
        "period": "2018-07",
        "timezone": "Europe/Paris",
        "pool": {
            "size_minutes": 1500.0,
            "used_minutes": 1210.0,
            "reserved_minutes": 3.0,
            "remaining_minutes": 287.0,
            "percent_used": 80.9,
        },
        "credits": {
            "enabled": True,
            "balance": 120.0,
            "spent_total": 14.5,
            "spent_this_month": 4.25,
            "reserved": 0.5,
            "left": 105.0,
        },
        "addon_minutes": 42.0,
        "promotion": {"used_minutes": 0.0, "reserved_minutes": 0.0, "cap_minutes": None},
        "calls": {"total": 1234, "answered": 1200, "live": 1, "talk_minutes": 1150.25, "billed_minutes": 1210.0},
        "top_organizers": [
            {"organizer": "alice@contoso.com", "calls": 1000, "talk_s": 60000.0, "billed_minutes": 1010.0},
            {"organizer": "bob@contoso.com", "calls": 1, "talk_s": 60.0, "billed_minutes": 1.0},
        ],
        "top_destinations": [{"e164": "+33142685300", "calls": 1234, "talk_s": 69015.0, "billed_minutes": 1210.0}],
        "alerts": [{"kind": "pool_80", "at": datetime(2018, 7, 20, 8, 30, tzinfo=UTC).timestamp(), "percent": 80}],
    }
    t.update(over)
    return t


def test_usage_format_report():
    text = format_report(
        {
            "month": "2018-07",
            "tenants": [
                _tenant(),
                _tenant(
                    tenant="fabrikam",
                    timezone="America/New_York",
                    top_organizers=[],
                    top_destinations=[],
                    alerts=[],
                    credits={
                        "enabled": False,
                        "balance": 0.0,
                        "spent_total": 0.0,
                        "spent_this_month": 0.0,
                        "reserved": 0.0,
                        "left": 0.0,
                    },
                    promotion={"used_minutes": 90.0, "reserved_minutes": 0.0, "cap_minutes": 900.0},
                    calls={"total": 1, "answered": 0, "live": 0, "talk_minutes": 0.0, "billed_minutes": 0.0},
                ),
            ],
        }
    )
    contoso, fabrikam = text.split("\n\ntenant ")
    assert contoso.splitlines()[:6] == [
        "tenant contoso   month 2018-07 (Europe/Paris)",
        "  pool        1,500.0 min   used 1,210.0 (80.9 % used)   reserved 3.0   remaining 287.0",
        "  credits     enabled   left 105.00 of 120.00   reserved 0.50   spent 4.25 this month, 14.50 in all",
        "  add-on      42.0 min to US/Canada (fair use, not deducted)",
        "  calls       1,234 calls: 1,200 answered, 1 live   talk 1,150.2 min   billed 1,210.0 min",
        "  alerts      pool 80 % used (since 2018-07-20 10:30)",  # in the tenant's timezone
    ]
    # The top lists are tables: a header, names left, numbers right, one column width for both.
    assert text.split("\n\n")[1:3] == [
        "  top organisers     calls  billed min\n"
        "  alice@contoso.com  1,000     1,010.0\n"
        "  bob@contoso.com        1         1.0",
        "  top destinations   calls  billed min\n  +33142685300       1,234     1,210.0",
    ]
    assert fabrikam.splitlines() == [
        "fabrikam   month 2018-07 (America/New_York)",
        "  pool        1,500.0 min   used 1,210.0 (80.9 % used)   reserved 3.0   remaining 287.0",
        "  credits     disabled   balance 0.00",
        "  add-on      42.0 min to US/Canada (fair use, not deducted)",
        "  promotion   90.0 min of 900.0",
        "  calls       1 call: 0 answered, 0 live   talk 0.0 min   billed 0.0 min",
    ]
    assert format_report({"month": "2018-07", "tenants": []}) == "no tenants in the config and no usage in the ledger"


def test_directory_import_csv_and_json(config, store_url, tmp_path, capsys):
    (tmp_path / "tenants.csv").write_text(
        "id,timezone,subscription_licences,credits_enabled,credits_balance\n"
        "northwind,America/New_York,4,yes,50\n"
        "tailspin,,0,,\n"
    )
    (tmp_path / "organizers.csv").write_text(
        "id,tenant,usage_location,audio_conferencing,usca_addon,credits_licence,dialout_policy\n"
        "dan@northwind.com,northwind,US,subscription,true,false,any\n"
    )
    (tmp_path / "more.json").write_text(
        json.dumps(
            {
                "tenants": [
                    {"id": "woodgrove", "timezone": "Europe/Berlin", "credits": {"enabled": False, "balance": 0}}
                ],
                "organizers": [
                    {
                        "id": "eve@woodgrove.com",
                        "tenant": "woodgrove",
                        "usage_location": "DE",
                        "dialout_policy": "tag:DialoutCPCDomesticPSTNInternational",
                    }
                ],
            }
        )
    )
    code, out, err = run(
        capsys,
        "directory",
        "import",
        "--config",
        config,
        str(tmp_path / "tenants.csv"),
        str(tmp_path / "organizers.csv"),
        str(tmp_path / "more.json"),
    )
    assert code == 0, err
    assert out == "imported 3 tenants and 2 organizers\n"
    s = open_store(store_url)
    tenants, organizers = s.directory_rows()
    s.close()
    assert tenants[0] == {
        "id": "northwind",
        "timezone": "America/New_York",
        "subscription_licences": 4,
        "credits": {"enabled": True, "balance": 50.0},
    }
    assert tenants[1] == {"id": "tailspin", "subscription_licences": 0}
    assert organizers[0] == {
        "id": "dan@northwind.com",
        "tenant": "northwind",
        "usage_location": "US",
        "audio_conferencing": "subscription",
        "usca_addon": True,
        "credits_licence": False,
        "dialout_policy": "any",
    }


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "t.csv",
            "id,subscription_licences\nok,1\nbad,many\n",
            "t.csv row 3: key 'subscription_licences': expected a whole number >= 0, got 'many'",
        ),
        ("t.csv", "id,licences\nx,1\n", "t.csv: header: unknown column 'licences' for tenants"),
        ("o.csv", "id,tenant,usca_addon\na,t,perhaps\n", "o.csv row 2: key 'usca_addon': expected true or false"),
        ("o.csv", "id,tenant\n,t\n", "o.csv row 2: key 'id': required"),
        (
            "d.json",
            '{"organizers": [{"id": "a", "tenant": "t"}, {"id": "b"}]}',
            "d.json organizers[1]: key 'tenant': required",
        ),
        (
            "d.json",
            '{"tenants": [{"id": "t", "credits": {"enabled": "yes"}}]}',
            "d.json tenants[0]: credits: key 'enabled': expected true or false",
        ),
        ("d.json", '{"tenants": [{"id": "t"}, {"id": "T"}]}', "tenant 'T' appears twice"),
        ("d.json", "[1, 2]", 'expected an object {"tenants"'),
        ("d.txt", "x", "unknown file type"),
    ],
)
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
    assert code == 1 and err.startswith(
        "dialout-gw db: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/db"
    )
    assert err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(capsys, "db", "upgrade", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "config file not found" in err
