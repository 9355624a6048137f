import pytest

from gateway.settings import SettingsError, parse_runtime_settings

GOOD = {
    "gateway": {
        "listen": [{"transport": "udp", "address": "127.0.0.1", "port": 5060}],
        "trusted_sources": ["10.0.0.0/24"],
    },
    "trunk": {"uri": "sip:trunk.example.net:5060", "caller_id": "sip:+18005550100@gw.example.net"},
}


def with_change(section, key, value):
    data = {k: dict(v) for k, v in GOOD.items()}
    data.setdefault(section, {})[key] = value
    return data


def test_defaults():
    s = parse_runtime_settings(GOOD)
    assert s.max_concurrent_calls == 3000 and s.max_calls_per_second == 500
    assert s.trunk.answer_timeout_s == 60 and s.store.url == "sqlite:///var/ledger.db"
    assert s.headers.organizer == "X-Dialout-Organizer" and s.metrics.port == 0
    assert [str(n) for n in s.trusted_sources] == ["10.0.0.0/24"]


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("gateway", "listen", [], "gateway.listen"),
        (
            "gateway",
            "listen",
            [{"transport": "sctp", "address": "127.0.0.1", "port": 5060}],
            "gateway.listen[0].transport",
        ),
        ("gateway", "listen", [{"transport": "udp", "address": "gw.example", "port": 5060}], "not a host name"),
        ("gateway", "listen", [{"transport": "udp", "address": "127.0.0.1", "port": 70000}], "gateway.listen[0].port"),
        ("gateway", "listen", [{"transport": "tls", "address": "127.0.0.1", "port": 5061}], "cert_file"),
        ("gateway", "trusted_sources", ["10.0.0.0/33"], "gateway.trusted_sources[0]"),
        ("gateway", "max_calls_per_second", 0, "gateway.max_calls_per_second"),
        ("gateway", "max_concurrent_calls", "many", "gateway.max_concurrent_calls"),
        ("gateway", "host", "bad host!", "gateway.host"),
        ("gateway", "colour", "blue", "gateway.colour"),
        ("trunk", "uri", "trunk.example.net", "trunk.uri"),
        ("trunk", "caller_id", "+18005550100", "trunk.caller_id"),
        ("logging", "level", "loud", "logging.level"),
        ("logging", "pjsip_level", 9, "logging.pjsip_level"),
        ("sip", "headers", {"organizer": "X Bad"}, "sip.headers.organizer"),
        ("sip", "headers", {"payer": "X-Payer"}, "sip.headers.payer"),
    ],
)
def test_errors_name_the_key_and_what_was_expected(section, key, value, message):
    with pytest.raises(SettingsError) as err:
        parse_runtime_settings(with_change(section, key, value))
    assert message in str(err.value) and "expected" in str(err.value)


def test_store_section_errors_name_the_key():
    # One schema, one error type for every section.
    with pytest.raises(SettingsError, match="store.url: expected sqlite:///PATH or postgresql://"):
        parse_runtime_settings(with_change("store", "url", "mysql://x"))


def test_missing_sections():
    with pytest.raises(SettingsError, match="gateway"):
        parse_runtime_settings({"trunk": GOOD["trunk"]})
    with pytest.raises(SettingsError, match="trunk"):
        parse_runtime_settings({"gateway": GOOD["gateway"]})
