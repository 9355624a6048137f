"""The one config schema (gateway/schema.py): every section, every key, one error format."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from gateway.config import ConfigValueError
from gateway.config_types import _split
from gateway.schema import ConfigFile, toml_fields, validate
from gateway.settings import TrunkCheckError, parse_runtime_settings, runtime_settings

# A file that uses every section, with one row in every array of tables.
FULL: dict[str, Any] = {
    "gateway": {
        "listen": [{"transport": "udp", "address": "127.0.0.1", "port": 5060}],
        "trusted_sources": ["10.0.0.0/24"],
        "caller_id": "sip:+18005550100@gw.example",
    },
    "trunks": [
        {
            "name": "na",
            "uri": "sip:na.example:5060",
            "destinations": ["US", "CA"],
            "priority": 1,
            "username": "gw",
            "password_env": "NA_PASSWORD",
            "setup_timeout_s": 5,
            "register": True,
        },
        {
            "name": "eu",
            "uri": "sip:eu.example:5060;transport=tcp",
            "destinations": ["FR", "+44"],
            "transport": "tcp",
            "caller_id": "sip:+33142685300@gw.example",
            "p_asserted_identity": True,
        },
    ],
    "sip": {"t1_ms": 500, "headers": {"organizer": "X-Org"}},
    "store": {"url": "sqlite:///var/l.db", "heartbeat_s": 30},
    "logging": {"level": "info"},
    "metrics": {"address": "127.0.0.1", "port": 0},
    "policy": {
        "promotions": [{"name": "p", "end": "2019-11-30", "monthly_cap_minutes_per_user": 900}],
        "credits": {"rates": {"FR": 0.02}},
    },
    "tenants": [{"id": "contoso", "caller_id": "+33 1 42 68 53 00", "credits": {"enabled": True, "balance": 5.0}}],
    "organizers": [{"id": "alice@contoso.com", "tenant": "contoso", "usage_location": "FR"}],
}


def full(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    data.update(copy.deepcopy(changes))
    return data


def test_the_full_file_validates_and_builds():
    spec = validate(full())
    rt = runtime_settings(spec, environ={"NA_PASSWORD": "s3cret"})
    assert [t.name for t in rt.trunks] == ["na", "eu"]
    na, eu = rt.trunks
    assert na.password == "s3cret" and na.register and na.regions == {"US", "CA"} and na.key == "trunks[0]"
    assert eu.prefixes == ("+44",) and eu.transport == "tcp" and eu.p_asserted_identity
    assert rt.caller_id == "sip:+18005550100@gw.example"
    assert rt.trunk.uri == "sip:na.example:5060" and rt.trunk.caller_id == rt.caller_id  # the first trunk
    assert rt.headers.organizer == "X-Org" and rt.headers.tenant == "X-Dialout-Tenant"
    assert spec.tenants[0].caller_id == "+33142685300"  # normalised to E.164


def test_the_shorthand_is_one_catch_all_trunk():
    gateway = {k: v for k, v in FULL["gateway"].items() if k != "caller_id"}
    rt = parse_runtime_settings(
        {"gateway": gateway, "trunk": {"uri": "sip:t.example", "caller_id": "sip:+18005550100@a.example"}}
    )
    (t,) = rt.trunks
    assert (t.name, t.destinations, t.any_destination, t.setup_timeout_s) == ("trunk", ("*",), True, 0.0)
    assert rt.caller_id == "sip:+18005550100@a.example" and rt.trunk.answer_timeout_s == 60


def test_password_env_must_be_set_at_start_up():
    spec = validate(full())
    with pytest.raises(TrunkCheckError) as err:
        runtime_settings(spec, environ={})
    assert str(err.value) == "trunks[0].password_env: the environment variable NA_PASSWORD is not set (trunk na)"
    rt = runtime_settings(spec, environ={}, strict=False)  # what `run --check` does: build, then report
    assert rt.trunks[0].password is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"trunks": [dict(FULL["trunks"][0], priority=-3)]},
            "trunks[0].priority: expected an integer >= 0 and <= 1000, got -3",
        ),
        (
            {"trunks": [FULL["trunks"][0], dict(FULL["trunks"][1], name="NA")]},
            "trunks[1].name: expected a name not used by another trunk (trunks[0]), got 'NA'",
        ),
        (
            {"trunks": [dict(FULL["trunks"][0], destinations=["US", "Narnia"])]},
            "trunks[0].destinations[1]: expected an ISO",
        ),
        ({"trunks": [dict(FULL["trunks"][0], destinations=["+1 876"])]}, "trunks[0].destinations[0]: expected an ISO"),
        ({"trunks": [dict(FULL["trunks"][0], destinations=[])]}, "trunks[0].destinations: expected a non-empty list"),
        (
            {"trunks": [dict(FULL["trunks"][0], password="x")]},
            "trunks[0].password_env: expected either password or password_env, not both, got 'NA_PASSWORD'",
        ),
        (
            {"trunks": [dict(FULL["trunks"][1], password="hunter2")]},
            "trunks[0].username: expected a user name for the digest password",
        ),
        (
            {"trunks": [dict(FULL["trunks"][1], transport="udp")]},
            'trunks[0].transport: expected "tcp", as the uri says',
        ),
        (
            {"trunks": [dict(FULL["trunks"][0], weight=0)]},
            "trunks[0].weight: expected an integer >= 1 and <= 100, got 0",
        ),
        (
            {"trunks": [dict(FULL["trunks"][0], setup_timeout_s=math.nan)]},
            "trunks[0].setup_timeout_s: expected a finite",
        ),
        ({"trunks": [dict(FULL["trunks"][0], regster=True)]}, "trunks[0].regster: expected one of the known keys: "),
        ({"trunks": [dict(FULL["trunks"][0], name="us a")]}, "trunks[0].name: expected a name of 1-64 letters"),
        ({"trunks": [dict(FULL["trunks"][0], password_env="1X")]}, "trunks[0].password_env: expected an environment"),
        (
            {"trunk": {"uri": "sip:x.example"}},
            "trunks: expected either one [trunk] table or [[trunks]] entries, not both",
        ),
        (
            {"gateway": dict(FULL["gateway"], caller_id=None)},
            "trunks[0].caller_id: expected a caller ID URI here, or a default in gateway.caller_id",
        ),
        ({"gateway": dict(FULL["gateway"], min_se_s=2000)}, "gateway.min_se_s: expected seconds <= session_expires_s"),
        (
            {"gateway": dict(FULL["gateway"], session_expires_s=60)},
            "gateway.session_expires_s: expected an integer >= 90",
        ),
        (
            {"gateway": dict(FULL["gateway"], drain_timeout_s=-1)},
            "gateway.drain_timeout_s: expected a finite number >= 0",
        ),
        ({"metrics": {"port": 70000}}, "metrics.port: expected an integer >= 0 and <= 65535, got 70000"),
        ({"metrics": {"address": "localhost"}}, "metrics.address: expected an IP address"),
        ({"logging": {"refusal_log_interval_s": math.inf}}, "logging.refusal_log_interval_s: expected a finite number"),
        ({"store": {"credits_floor": math.inf}}, "store.credits_floor: expected a finite number >= 0"),
        ({"store": {"heartbeat_s": 0.5}}, "store.heartbeat_s: expected an integer >= 1 and <= 3600, got 0.5"),
        ({"tenants": [{"id": "t", "caller_id": "+1555"}]}, "tenants[0].caller_id: expected an E.164 number"),
        ({"tenants": [{"id": "t", "caller_id": "0142685300"}]}, "tenants[0].caller_id: expected an E.164 number"),
        ({"sip": {"headers": {"payer": "X-Payer"}}}, "sip.headers.payer: expected one of the known keys: initiator, "),
        ({"gateway": 5}, "gateway: expected a table, got 5"),
        ({"trunks": {"name": "x"}}, "trunks: expected an array of tables [[trunks]], got {'name': 'x'}"),
    ],
)
def test_errors_are_one_line_with_the_key_path(change, message):
    with pytest.raises(ConfigValueError) as err:
        validate(full(**change))
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text and err.value.key == text.split(":", 1)[0]


def test_passwords_are_never_quoted():
    with pytest.raises(ConfigValueError) as err:
        validate(full(trunks=[dict(FULL["trunks"][0], password=12345, password_env=None)]))
    assert str(err.value) == "trunks[0].password: expected a non-empty string, got (hidden)"
    with pytest.raises(ConfigValueError) as err:
        validate(full(trunks=[dict(FULL["trunks"][1], password="hunter2")]))
    assert "hunter2" not in str(err.value)


def _numeric_paths(model, data, path=()):
    """(key path tuple, is_int) of every numeric key under `model` that `data` can reach."""
    for name, info in toml_fields(model).items():
        bare, _ = _split(info.annotation)
        inner, _ = _split(bare)
        if bare in (int, float):
            yield path + (name,), bare is int
        elif isinstance(bare, type) and issubclass(bare, ConfigFile.__mro__[1]):  # a Section
            if info.default is None and name not in (data or {}):
                continue  # an optional table the file leaves out (e.g. [trunk] next to [[trunks]])
            yield from _numeric_paths(bare, (data or {}).get(name, {}), path + (name,))
        elif getattr(bare, "__origin__", None) is list and data and data.get(name):
            (item,) = bare.__args__
            item, _ = _split(item)
            if isinstance(item, type) and issubclass(item, ConfigFile.__mro__[1]):
                yield from _numeric_paths(item, data[name][0], path + (name, 0))


def _set(data, path, value):
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value


NUMERIC = list(_numeric_paths(ConfigFile, FULL)) + [(("policy", "credits", "rates", "FR"), False)]


def test_the_walk_reaches_every_section():
    sections = {p[0] for p, _ in NUMERIC}
    assert sections >= {"gateway", "trunks", "sip", "store", "logging", "metrics", "policy", "tenants"}
    assert len(NUMERIC) >= 36


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1"], ids=repr)
@pytest.mark.parametrize(
    ("path", "is_int"), NUMERIC, ids=lambda p: ".".join(map(str, p)) if isinstance(p, tuple) else ""
)
def test_no_numeric_key_takes_nan_inf_bools_or_strings(path, is_int, bad):
    data = full()
    _set(data, path, bad)
    with pytest.raises(ConfigValueError) as err:
        validate(data)
    assert err.value.key.replace("[", ".").replace("]", "") == ".".join(map(str, path))
    assert ("an integer" if is_int else "finite") in str(err.value) or "price per minute" in str(err.value)
