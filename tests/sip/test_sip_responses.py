"""Rejection and BYE headers, header stripping, reason phrases."""

from __future__ import annotations

import pytest

from sip import bye_reason_header, reason_phrase, reject_headers, sanitize_text, strip_headers
from sip.message import parse_header_params, split_header_list
from sip.responses import MAX_WARNING_TEXT

# (reason code, status) pairs from dialout-rules.md "Names that other systems see".
CONTRACT = [
    ("untrusted_source", 403),
    ("overloaded", 503),
    ("organizer_missing", 403),
    ("organizer_unknown", 403),
    ("number_invalid", 484),
    ("destination_blocked", 403),
    ("no_audio_conferencing", 403),
    ("dialout_disabled", 403),
    ("not_domestic", 403),
    ("outside_zone_a", 403),
    ("limit_concurrency", 480),
    ("limit_rate", 480),
    ("fraud_suspected", 403),
    ("fair_use_exceeded", 403),
    ("no_entitlement", 403),
    ("trunk_timeout", 408),
    ("trunk_failure", 486),
]


@pytest.mark.parametrize("reason, status", CONTRACT)
def test_reject_headers_contract(reason, status):
    headers = reject_headers(reason, status, "Some human sentence.", "gw1.example.com", None)
    assert headers == [
        ("Reason", f'SIP;cause={status};text="{reason}"'),
        ("Warning", '399 gw1.example.com "Some human sentence."'),
        ("X-Dialout-Decision", f"deny;reason={reason}"),
    ]


def test_retry_after_only_when_given():
    headers = reject_headers("limit_rate", 480, "Too many calls per minute.", "gw", 30)
    assert headers[-1] == ("Retry-After", "30")
    assert [n for n, _ in headers] == ["Reason", "Warning", "X-Dialout-Decision", "Retry-After"]
    assert reject_headers("overloaded", 503, "Busy.", "gw", 0)[-1] == ("Retry-After", "0")
    assert "Retry-After" not in dict(reject_headers("overloaded", 503, "Busy.", "gw", None))


def test_reason_header_is_valid_rfc3326():
    _, value = reject_headers("number_invalid", 484, "x", "gw", None)[0]
    protocol, _, params = value.partition(";")
    assert protocol == "SIP"
    assert dict(parse_header_params(params)) == {"cause": "484", "text": "number_invalid"}


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ('The organiser "Jane" is unknown.', 'The organiser \\"Jane\\" is unknown.'),
        ("C:\\path\\x", "C:\\\\path\\\\x"),
        ("two\r\nlines\tand\x00nul\x7fdel\x85nel", "two lines and nul del nel"),
        ("   padded    words   ", "padded words"),
        ("Numéro bloqué", "Numéro bloqué"),
        ("bad\udcffsurrogate", "bad surrogate"),
        ("", "Forbidden"),
        ("\r\n\t", "Forbidden"),
    ],
)
def test_warning_text_is_sanitised(sentence, expected):
    _, warning = reject_headers("destination_blocked", 403, sentence, "gw.example.com", None)[1]
    assert warning == f'399 gw.example.com "{expected}"'


def test_warning_text_is_capped_and_stays_one_quoted_string():
    sentence = ('"' * 150) + ("x" * 300)
    _, warning = reject_headers("fraud_suspected", 403, sentence, "gw", None)[1]
    code, agent, text = warning.split(" ", 2)
    assert (code, agent) == ("399", "gw")
    assert text.startswith('"') and text.endswith('"')
    inner = text[1:-1]
    unescaped = inner.replace('\\"', '"')
    assert len(unescaped) <= MAX_WARNING_TEXT
    assert unescaped.endswith("...")
    # every quote inside is escaped: splitting as a header list keeps it whole
    assert split_header_list(warning) == [warning]
    assert not inner.endswith("\\")


def test_sanitize_never_leaves_a_dangling_escape():
    text = sanitize_text("a" * 196 + "\\\\\\\\\\\\")
    assert len(text.replace("\\\\", "\\")) <= MAX_WARNING_TEXT
    assert text.endswith("...")


@pytest.mark.parametrize(
    "host, agent",
    [
        ("gw.example.com", "gw.example.com"),
        ("gw.example.com:5060", "gw.example.com:5060"),
        ("[2001:db8::1]:5061", "[2001:db8::1]:5061"),
        ("  gw  ", "gw"),
        ("", "-"),
        ("bad host", "-"),
        ('evil"host', "-"),
    ],
)
def test_warn_agent(host, agent):
    _, warning = reject_headers("not_domestic", 403, "x", host, None)[1]
    assert warning == f'399 {agent} "x"'


@pytest.mark.parametrize(
    "args",
    [
        ("", 403),
        ("has space", 403),
        ('quote"d', 403),
        ("ok", 200),
        ("ok", 99),
        ("ok", 700),
        ("ok", True),
        ("ok", "403"),
    ],
)
def test_reject_headers_refuses_bad_input(args):
    with pytest.raises(ValueError):
        reject_headers(*args, "x", "gw", None)


@pytest.mark.parametrize("retry", [-1, 1.5, "5", True])
def test_reject_headers_refuses_bad_retry_after(retry):
    with pytest.raises(ValueError):
        reject_headers("overloaded", 503, "x", "gw", retry)


def test_decision_header_name_is_configurable():
    headers = reject_headers("overloaded", 503, "x", "gw", None, decision_header="X-Gw-Decision")
    assert headers[2] == ("X-Gw-Decision", "deny;reason=overloaded")


@pytest.mark.parametrize(
    "args, kwargs, value",
    [
        (("duration_exhausted",), {}, 'Q.850;cause=16;text="duration_exhausted"'),
        (("duration_exhausted", None), {}, 'Q.850;cause=16;text="duration_exhausted"'),
        (("duration_exhausted", 'all "minutes"\r\nused'), {}, 'Q.850;cause=16;text="all \\"minutes\\" used"'),
        (("duration_exhausted", "  "), {}, 'Q.850;cause=16;text="duration_exhausted"'),
        (("trunk_timeout",), {"q850_cause": 102}, 'Q.850;cause=102;text="trunk_timeout"'),
    ],
)
def test_bye_reason_header(args, kwargs, value):
    assert bye_reason_header(*args, **kwargs) == ("Reason", value)


@pytest.mark.parametrize("kwargs", [{"q850_cause": 0}, {"q850_cause": 128}, {"q850_cause": True}])
def test_bye_reason_header_refuses_bad_cause(kwargs):
    with pytest.raises(ValueError):
        bye_reason_header("duration_exhausted", **kwargs)


def test_bye_reason_header_refuses_bad_reason():
    with pytest.raises(ValueError):
        bye_reason_header('bad "reason"')


def test_strip_headers():
    headers = [
        ("Via", "SIP/2.0/UDP x"),
        ("X-Dialout-Organizer", "alice"),
        ("x-dialout-tenant", "t"),
        ("X-DIALOUT-Meeting", "m"),
        ("X-Dialoutish", "kept: no dash after the prefix"),
        ("P-Asserted-Identity", "<sip:+1@x>"),
        ("X-Other", "kept"),
    ]
    assert strip_headers(headers) == [
        ("Via", "SIP/2.0/UDP x"),
        ("X-Dialoutish", "kept: no dash after the prefix"),
        ("P-Asserted-Identity", "<sip:+1@x>"),
        ("X-Other", "kept"),
    ]
    assert strip_headers(iter(headers), prefix="x-") == [
        ("Via", "SIP/2.0/UDP x"),
        ("P-Asserted-Identity", "<sip:+1@x>"),
    ]
    assert strip_headers([]) == []


@pytest.mark.parametrize(
    "status, phrase",
    [
        (100, "Trying"),
        (180, "Ringing"),
        (183, "Session Progress"),
        (200, "OK"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (408, "Request Timeout"),
        (480, "Temporarily Unavailable"),
        (484, "Address Incomplete"),
        (486, "Busy Here"),
        (487, "Request Terminated"),
        (503, "Service Unavailable"),
        (505, "Version Not Supported"),
        (603, "Decline"),
        (199, "Early Dialog Terminated"),
        (299, "Successful"),
        (499, "Request Failure"),
        (599, "Server Failure"),
        (699, "Global Failure"),
    ],
)
def test_reason_phrase(status, phrase):
    assert reason_phrase(status) == phrase


@pytest.mark.parametrize("status", [0, 99, 700, True, "200"])
def test_reason_phrase_refuses_non_status(status):
    with pytest.raises(ValueError):
        reason_phrase(status)


def test_sanitize_blanks_format_characters_such_as_bidi_overrides():
    """Found by fuzzing: "organiser alice@con\u202etoso.com is not in the directory"
    went into a Warning with its right-to-left override, which makes the rest
    of the line read backwards to an operator."""
    assert sanitize_text("alice@con\u202etoso.com") == "alice@con toso.com"
    assert sanitize_text("a\u2066b\u200bc\U000e0041d\ufeffe") == "a b c d e"
    assert sanitize_text("café ☎ +33 1 42 68 53 00") == "café ☎ +33 1 42 68 53 00"
