"""Config parsing: defaults, validation messages with key paths, load_config errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from policy_testlib import BASE

from gateway.config import ConfigError, ConfigValueError, load_config, parse_policy_sections
from policy import NumberType

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"


def _mutate(fn):
    data = copy.deepcopy(BASE)
    fn(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "key", "expected"),
    [
        (
            lambda d: d["organizers"][2].update(dialout_policy="worldwide"),
            "organizers[2].dialout_policy",
            "tag:DialoutCPC",
        ),
        (
            lambda d: d["organizers"][1].update(audio_conferencing="gold"),
            "organizers[1].audio_conferencing",
            "subscription, pay_per_minute or none",
        ),
        (lambda d: d["organizers"][0].update(usage_location="XX"), "organizers[0].usage_location", "ISO 3166"),
        (lambda d: d["organizers"][0].pop("usage_location"), "organizers[0].usage_location", "required"),
        (lambda d: d["organizers"][0].update(tenant="nope"), "organizers[0].tenant", "[[tenants]]"),
        (lambda d: d["organizers"][0].update(usca_addon="yes"), "organizers[0].usca_addon", "true or false"),
        (lambda d: d["organizers"][0].update(dialout_polcy="any"), "organizers[0].dialout_polcy", "known keys"),
        (
            lambda d: d["organizers"].append(dict(d["organizers"][0], id="ALICE@contoso.com")),
            "organizers[8].id",
            "not used",
        ),
        (lambda d: d["tenants"][0].update(timezone="Mars/Olympus"), "tenants[0].timezone", "IANA timezone"),
        (
            lambda d: d["tenants"][0].update(subscription_licences=-1),
            "tenants[0].subscription_licences",
            "integer >= 0",
        ),
        (
            lambda d: d["tenants"][0].update(credits={"enabled": True, "balance": "lots"}),
            "tenants[0].credits.balance",
            "number",
        ),
        (lambda d: d["tenants"][1].pop("id"), "tenants[1].id", "required"),
        (lambda d: d.update(tenants={"id": "x"}), "tenants", "array of tables"),
        (lambda d: d["policy"].update(zone_a=["FR", "Narnia"]), "policy.zone_a[1]", "ISO 3166"),
        (lambda d: d["policy"].update(billing_increment="hour"), "policy.billing_increment", '"minute" or "second"'),
        (lambda d: d["policy"].update(max_call_length_s=0), "policy.max_call_length_s", "integer >= 1"),
        (
            lambda d: d["policy"].update(blocked_number_types=["premium"]),
            "policy.blocked_number_types[0]",
            "premium_rate",
        ),
        (lambda d: d["policy"].update(number_validation="strict"), "policy.number_validation", '"possible" or "valid"'),
        (
            lambda d: d["policy"].update(promotions=[{"name": "p", "end": "2018-02-30"}]),
            "policy.promotions[0].end",
            "YYYY-MM-DD",
        ),
        (lambda d: d["policy"].update(promotions=[{"name": "p"}]), "policy.promotions[0].end", "required"),
        (
            lambda d: d["policy"].update(promotions=[{"name": "p", "start": "2019-01-01", "end": "2018-01-01"}]),
            "policy.promotions[0].start",
            "on or before",
        ),
        (lambda d: d["policy"]["credits"]["rates"].update(JM=-1), "policy.credits.rates.JM", ">= 0"),
        (
            lambda d: d["policy"]["guards"].update(max_concurrent_per_organizer=0),
            "policy.guards.max_concurrent_per_organizer",
            "integer >= 1",
        ),
        (lambda d: d["policy"]["guards"].update(high_risk_regions="CU"), "policy.guards.high_risk_regions", "list"),
        (lambda d: d["policy"].update(colour="blue"), "policy.colour", "known keys"),
        (
            lambda d: d["policy"].update(default_dialout_policy="sometimes"),
            "policy.default_dialout_policy",
            "any, domestic",
        ),
    ],
)
def test_errors_name_the_key_and_what_was_expected(mutate, key, expected):
    with pytest.raises(ConfigValueError) as err:
        parse_policy_sections(_mutate(mutate))
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: expected")
    assert expected in str(err.value)


def test_defaults_for_an_empty_policy():
    s = parse_policy_sections({})
    cat = s.catalogue
    assert len(cat.zone_a) == 44
    assert cat.max_call_length_s == 4 * 3600
    assert cat.billing_increment.value == "minute"
    assert cat.pool_minutes_per_subscription == 60
    assert cat.number_validation == "valid"
    assert NumberType.EMERGENCY in cat.blocked_types and NumberType.PREMIUM_RATE in cat.blocked_types
    assert NumberType.UNKNOWN in cat.blocked_types
    assert [p.enabled for p in cat.promotions] == [True, False]
    assert s.organizers == {} and s.tenants == {}


def test_organiser_defaults_deny():
    data = {"tenants": [{"id": "t"}], "organizers": [{"id": "o", "tenant": "t", "usage_location": "fr"}]}
    s = parse_policy_sections(data)
    o = s.organizer("O")
    assert o.usage_location == "FR" and o.audio_conferencing.value == "none"
    assert o.dialout_policy.value == "disabled" and not o.usca_addon and not o.credits_licence
    assert o.tenant.timezone == "UTC"


def test_settings_are_frozen():
    s = parse_policy_sections(copy.deepcopy(BASE))
    with pytest.raises(AttributeError):  # a frozen dataclass: FrozenInstanceError
        s.catalogue.max_call_length_s = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.organizers["x"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        s.catalogue.credit_rates["FR"] = 0  # type: ignore[index]


def test_the_example_config_loads():
    from gateway.settings import runtime_settings
    from policy import check_trunks, route

    cfg = load_config(EXAMPLE)
    assert cfg.path == EXAMPLE
    assert set(cfg.raw_sections) == {"gateway", "trunks", "store", "logging"}
    assert [t["name"] for t in cfg.raw_sections["trunks"]] == [
        "north-america",
        "europe",
        "europe-backup",
        "rest-of-world",
    ]
    assert cfg.policy.tenant("fabrikam").caller_id == "+12125550123"
    assert len(cfg.policy.tenants) == 2 and 5 <= len(cfg.policy.organizers) <= 8
    assert {o.audio_conferencing.value for o in cfg.policy.organizers.values()} == {
        "subscription",
        "pay_per_minute",
        "none",
    }
    assert any(o.policy_name.startswith("tag:DialoutCPC") for o in cfg.policy.organizers.values())
    assert cfg.catalogue is cfg.policy.catalogue
    assert cfg.directory["organizers"] is cfg.policy.organizers
    runtime = runtime_settings(cfg.sections, environ={})
    assert check_trunks(runtime.trunks) == []
    assert [t.name for t in route("+33142685300", "FR", runtime.trunks)] == ["europe", "europe-backup", "rest-of-world"]
    assert [t.name for t in route("+18762091234", "JM", runtime.trunks)] == ["rest-of-world"]


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_load_config_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path, '[policy]\nmax_call_length_s = 10\n\n[[tenants]\nid = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "line 4" in str(err.value)


def test_load_config_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="polcy: expected one of the known keys: gateway, logging, "):
        load_config(_write(tmp_path, "[polcy]\nx = 1\n"))


def test_load_config_raw_section_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError, match="trunk: expected a table"):
        load_config(_write(tmp_path, 'trunk = "sip:x"\n'))


def test_load_config_wraps_policy_errors_with_the_file_name(tmp_path):
    path = _write(
        tmp_path,
        '[[tenants]]\nid = "t"\n[[organizers]]\nid = "o"\ntenant = "t"\nusage_location = "FR"\n'
        '[[organizers]]\nid = "p"\ntenant = "t"\nusage_location = "FR"\n'
        '[[organizers]]\nid = "q"\ntenant = "t"\nusage_location = "FR"\ndialout_policy = "open"\n',
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: organizers[2].dialout_policy: expected")


def test_toml_dates_are_accepted(tmp_path):
    cfg = load_config(_write(tmp_path, '[[policy.promotions]]\nname = "p"\nstart = 2020-01-01\nend = 2020-01-31\n'))
    (promo,) = cfg.catalogue.promotions
    assert str(promo.start) == "2020-01-01" and promo.enabled and len(promo.regions) == 44
    with pytest.raises(ConfigError, match="no time"):
        load_config(_write(tmp_path, '[[policy.promotions]]\nname = "p"\nend = 2020-01-31T00:00:00\n'))


# --- numeric keys: finite and in range (toll-fraud regression: a `nan` limit never triggers) -----------

NAN, INF = float("nan"), float("inf")


def _set(path: str):
    """A mutation that writes a value at `path` in BASE: dotted keys, `[i]` list indexes."""

    def setter(value):
        def mutate(data):
            node = data
            parts = path.replace("]", "").replace("[", ".").split(".")
            for part in parts[:-1]:
                if part.isdigit():
                    node = node[int(part)]
                else:
                    node = node.setdefault(part, {})
            node[parts[-1]] = value

        return mutate

    return setter


PROMO = [{"name": "p", "end": "2019-11-30", "monthly_cap_minutes_per_user": 900}]

# (key path, a good value, bad values): every numeric key of [policy], [[tenants]] and [[organizers]].
NUMERIC_KEYS = [
    ("policy.max_call_length_s", 3600, [0, -1, 86_401, NAN, INF, 1.5, True]),
    ("policy.promotions[0].monthly_cap_minutes_per_user", 900, [0, -1, 1e7, NAN, INF, -INF]),
    ("policy.usca_addon.fair_use_minutes_per_month", 5000, [0, -5, 1e9, NAN, INF]),
    ("policy.pool.minutes_per_subscription", 60, [-1, 1e9, NAN, INF]),
    ("policy.credits.default_rate_per_minute", 0.25, [-0.25, 1e-310, 0.00009, 1e7, NAN, INF, "0.25"]),
    ("policy.credits.rates.DE", 0.02, [-1, 1e-310, 5e-5, 1e300, NAN, INF, -INF, True]),
    ("policy.guards.max_concurrent_per_organizer", 5, [0, -1, 10**7, NAN, INF, 2.0]),
    ("policy.guards.max_concurrent_per_tenant", 50, [0, 10**7, NAN]),
    ("policy.guards.max_calls_per_minute_per_organizer", 10, [0, 10**7, INF]),
    ("policy.guards.max_distinct_destinations_per_day", 100, [0, 10**7, NAN]),
    ("policy.guards.retry_after_concurrency_s", 30, [0, 86_401, NAN]),
    ("policy.guards.retry_after_rate_s", 60, [0, 86_401, INF]),
    ("tenants[0].subscription_licences", 25, [-1, 10**8, NAN, 2.5]),
    ("tenants[0].pay_per_minute_licences", 5, [-1, 10**8, INF]),
    ("tenants[0].credits.balance", 100.0, [-0.01, 1e13, NAN, INF, -INF]),
]


@pytest.mark.parametrize(
    ("key", "bad"),
    [pytest.param(key, bad, id=f"{key}={bad!r}") for key, _, bads in NUMERIC_KEYS for bad in bads],
)
def test_numeric_keys_refuse_non_finite_and_out_of_range_values(key, bad):
    def mutate(data):
        if ".promotions[" in key:
            data["policy"]["promotions"] = copy.deepcopy(PROMO)
        _set(key)(bad)(data)

    with pytest.raises(ConfigValueError) as err:
        parse_policy_sections(_mutate(mutate))
    assert err.value.key == key
    message = str(err.value)
    assert message.startswith(f"{key}: expected ") and f"got {bad!r}" in message
    if isinstance(bad, float):  # integer keys say "an integer", the others "a finite number"
        assert "finite" in message or "an integer >= " in message


@pytest.mark.parametrize(("key", "good"), [(key, good) for key, good, _ in NUMERIC_KEYS])
def test_numeric_keys_accept_sane_values(key, good):
    def mutate(data):
        if ".promotions[" in key:
            data["policy"]["promotions"] = copy.deepcopy(PROMO)
        _set(key)(good)(data)

    parse_policy_sections(_mutate(mutate))


def test_free_destinations_and_an_empty_pool_are_still_allowed():
    s = parse_policy_sections(
        _mutate(
            lambda d: d["policy"].update(
                credits={"default_rate_per_minute": 0, "rates": {"FR": 0}}, pool={"minutes_per_subscription": 0}
            )
        )
    )
    assert s.catalogue.credit_rate("FR") == 0 and s.catalogue.default_credit_rate == 0
    assert s.tenant("contoso").pool_minutes == 0


def test_messages_say_what_was_expected():
    with pytest.raises(ConfigValueError) as err:
        parse_policy_sections(_mutate(lambda d: d["policy"]["credits"]["rates"].update(DE=1e-310)))
    assert str(err.value) == (
        "policy.credits.rates.DE: expected a price per minute: 0 (free) or a finite number >= 0.0001 "
        "and <= 1000000, got 1e-310"
    )
    with pytest.raises(ConfigValueError) as err:
        parse_policy_sections(_mutate(lambda d: d["policy"]["usca_addon"].update(fair_use_minutes_per_month=NAN)))
    assert str(err.value) == (
        "policy.usca_addon.fair_use_minutes_per_month: expected a finite number > 0 and <= 1000000, got nan"
    )


def test_toml_inf_and_nan_are_refused_with_the_file_name(tmp_path):
    path = _write(tmp_path, "[policy.usca_addon]\nfair_use_minutes_per_month = nan\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: policy.usca_addon.fair_use_minutes_per_month: expected a finite number")
    path = _write(tmp_path, "[policy.credits.rates]\nDE = inf\n")
    with pytest.raises(ConfigError, match=r"policy\.credits\.rates\.DE: expected a price per minute"):
        load_config(path)
