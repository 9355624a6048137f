"""sip:/sips:/tel: URIs and the dialled number."""

from __future__ import annotations

import pytest

from sip import DialledNumber, SipParseError, SipUri, TelUri, dialled_from_request_uri, parse_uri


@pytest.mark.parametrize(
    "uri, scheme, user, password, host, port, params, headers",
    [
        ("sip:alice@example.com", "sip", "alice", None, "example.com", None, (), ()),
        ("SIPS:Alice@EXAMPLE.com:5061", "sips", "Alice", None, "example.com", 5061, (), ()),
        ("sip:example.com", "sip", None, None, "example.com", None, (), ()),
        (
            "sip:+33142345678@gw.example.com;user=phone",
            "sip",
            "+33142345678",
            None,
            "gw.example.com",
            None,
            (("user", "phone"),),
            (),
        ),
        (
            "sip:a:secret@h.example.com;Transport=TCP;lr",
            "sip",
            "a",
            "secret",
            "h.example.com",
            None,
            (("transport", "TCP"), ("lr", None)),
            (),
        ),
        ("sip:%75se%72@example.com", "sip", "user", None, "example.com", None, (), ()),
        ("sip:I%20have%20spaces@example.net", "sip", "I have spaces", None, "example.net", None, (), ()),
        ("sip:null-%00-null@example.com", "sip", "null-\x00-null", None, "example.com", None, (), ()),
        (
            "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
            "sip",
            "caller",
            None,
            "host5.example.net",
            None,
            (("lr", None), ("name", "value%41")),
            (),
        ),
        (
            "sip:user;par=u%40example.net@example.com",
            "sip",
            "user;par=u@example.net",
            None,
            "example.com",
            None,
            (),
            (),
        ),
        ("sip:[2001:DB8::1]:5060", "sip", None, None, "[2001:db8::1]", 5060, (), ()),
        (
            "sip:192.0.2.1:5080;maddr=239.255.255.1",
            "sip",
            None,
            None,
            "192.0.2.1",
            5080,
            (("maddr", "239.255.255.1"),),
            (),
        ),
        (
            "sip:bob@h.example.com?subject=project%20x&priority=urgent",
            "sip",
            "bob",
            None,
            "h.example.com",
            None,
            (),
            (("subject", "project x"), ("priority", "urgent")),
        ),
        ("sip:*21#@pbx_1.example.com", "sip", "*21#", None, "pbx_1.example.com", None, (), ()),
        # RFC 4475 3.1.1.2: every legal oddity in one user part
        (
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
            "sip",
            "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
            "example.com",
            None,
            (),
            (),
        ),
    ],
)
def test_parse_sip_uri(uri, scheme, user, password, host, port, params, headers):
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    assert (parsed.scheme, parsed.user, parsed.password, parsed.host, parsed.port) == (
        scheme,
        user,
        password,
        host,
        port,
    )
    assert parsed.params == params
    assert parsed.headers == headers
    assert parsed.raw == uri


def test_sip_uri_helpers():
    u = parse_uri("sip:+1@gw.example.com;USER=Phone;transport=TLS;lr")
    assert isinstance(u, SipUri)
    assert u.user_phone
    assert u.transport == "tls"
    assert u.has_param("LR") and u.param("lr") is None
    assert u.param("absent") is None
    v = parse_uri("sip:+1@gw.example.com")
    assert isinstance(v, SipUri)
    assert not v.user_phone and v.transport is None


@pytest.mark.parametrize(
    "uri, number, context, is_global",
    [
        ("tel:+1-212-555-0100", "+1-212-555-0100", None, True),
        ("TEL:+33(0)1.42.34.56.78", "+33(0)1.42.34.56.78", None, True),
        ("tel:0142345678;phone-context=+33", "0142345678", "+33", False),
        ("tel:7042;Phone-Context=example.com", "7042", "example.com", False),
        ("tel:863-1234;phone-context=+1-914-555", "863-1234", "+1-914-555", False),
        ("tel:%2B44%2020", "+44 20", None, True),
        ("tel:12ab", "12ab", None, False),
    ],
)
def test_parse_tel_uri(uri, number, context, is_global):
    parsed = parse_uri(uri)
    assert isinstance(parsed, TelUri)
    assert parsed.number == number
    assert parsed.phone_context == context
    assert parsed.is_global is is_global


@pytest.mark.parametrize(
    "uri, status",
    [
        ("sip:a b@example.com", 400),
        ("<sip:a@example.com>", 400),
        ("sip:a@example.com>", 400),
        ('sip:"a"@example.com', 400),
        ("sip:a@exa\tmple.com", 400),
        ("sip:caf\u00e9@example.com", 400),
        ("sip:a%4@example.com", 400),
        ("sip:a%@example.com", 400),
        ("sip:a%zz@example.com", 400),
        ("sip:a@b@example.com", 400),
        ("sip:@example.com", 400),
        ("sip:a@", 400),
        ("sip:a@-bad.example.com", 400),
        ("sip:a@bad..example.com", 400),
        ("sip:a@example.com:", 400),
        ("sip:a@example.com:port", 400),
        ("sip:a@example.com:70000", 400),
        ("sip:a@[2001:db8::1", 400),
        ("sip:a@[zzzz]", 400),
        ("sip:a@[::1]x", 400),
        ("sip:a@example.com;", 400),
        ("sip:a@example.com;;lr", 400),
        ("sip:a@example.com;=x", 400),
        ("sip:a@example.com?novalue", 400),
        ("tel:", 400),
        ("tel:;phone-context=+33", 400),
        ("tel:+1@example.com", 400),
        ("tel:+1;;x", 400),
        ("", 400),
        ("nocolon", 400),
        ("1sip:a@b", 400),
        ("http://example.com/", 416),
        ("urn:service:sos", 416),
    ],
)
def test_bad_uris(uri, status):
    with pytest.raises(SipParseError) as exc:
        parse_uri(uri)
    assert exc.value.status == status


@pytest.mark.parametrize(
    "uri, digits, context, is_tel, user_phone, policy_input",
    [
        ("sip:+33142345678@gw.example.com;user=phone", "+33142345678", None, False, True, "+33142345678"),
        ("sip:+33%201%2042%2034%2056%2078@gw", "+33 1 42 34 56 78", None, False, False, "+33 1 42 34 56 78"),
        ("sip:0033142345678@gw", "0033142345678", None, False, False, "0033142345678"),
        ("sip:011-33-1-42@gw", "011-33-1-42", None, False, False, "011-33-1-42"),
        ("sip:12ab@gw.example.com", "12ab", None, False, False, "12ab"),
        ("sip:911@gw", "911", None, False, False, "911"),
        ("sip:gw.example.com", "", None, False, False, ""),
        ("tel:+1-212-555-0100", "+1-212-555-0100", None, True, False, "+1-212-555-0100"),
        ("tel:01-42-34-56-78;phone-context=+33", "01-42-34-56-78", "+33", True, False, "+330142345678"),
        (
            "tel:(212) 555-0100;phone-context=+1".replace(" ", "%20"),
            "(212) 555-0100",
            "+1",
            True,
            False,
            "+12125550100",
        ),
        ("tel:5550100;phone-context=+1-212", "5550100", "+1-212", True, False, "+12125550100"),
        ("tel:7042;phone-context=example.com", "7042", "example.com", True, False, "7042"),
        ("tel:+44-20-7946-0000;phone-context=+33", "+44-20-7946-0000", "+33", True, False, "+44-20-7946-0000"),
        ("tel:0142;phone-context=+", "0142", "+", True, False, "0142"),
        ("tel:0142;phone-context=+3a", "0142", "+3a", True, False, "0142"),
        # telephone-subscriber params inside a SIP user part (RFC 3261 §19.1.1)
        (
            "sip:0142345678;phone-context=+33@gw.example.com;user=phone",
            "0142345678",
            "+33",
            False,
            True,
            "+330142345678",
        ),
        ("sip:0142345678;isub=12;PHONE-CONTEXT=%2B33@gw;user=phone", "0142345678", "+33", False, True, "+330142345678"),
        (
            "sip:5550100;phone-context=nyc.example.com@gw;user=phone",
            "5550100",
            "nyc.example.com",
            False,
            True,
            "5550100",
        ),
        ("sip:5550100;odd@gw;user=phone", "5550100", None, False, True, "5550100"),
    ],
)
def test_dialled_from_request_uri(uri, digits, context, is_tel, user_phone, policy_input):
    d = dialled_from_request_uri(uri)
    assert d == DialledNumber(digits=digits, phone_context=context, is_tel=is_tel, user_phone=user_phone)
    assert d.policy_input == policy_input


@pytest.mark.parametrize("uri", ["sip:+33 1@gw", "sip:<1>@gw", "mailto:a@b.example.com", "tel:+1@x"])
def test_dialled_from_garbage_uri_raises(uri):
    with pytest.raises(SipParseError):
        dialled_from_request_uri(uri)


def test_dialled_number_is_frozen_and_hashable():
    d = dialled_from_request_uri("tel:+1-212-555-0100")
    with pytest.raises(AttributeError):
        d.digits = "x"  # type: ignore[misc]
    assert hash(d) == hash(dialled_from_request_uri("tel:+1-212-555-0100"))
