"""Number masking (`logging.mask_numbers`) and URL password redaction: `sip.privacy`.

Only the country calling code and the last two digits survive. The log
processors that apply them to every line are tested in
tests/ops/test_log_privacy.py; the integration side (a real gateway with
mask_numbers on, checked for leaks in its whole log) is in
tests/integration/test_logs_cli.py.
"""

from __future__ import annotations

import re

import pytest

from sip.privacy import country_code, mask_number, mask_numbers_in, redact_url


@pytest.mark.parametrize(
    "number,masked",
    [
        ("+33142685300", "+33xxxxxxx00"),  # France
        ("+12122001234", "+1xxxxxxxx34"),  # US (NANP, 1-digit code)
        ("+18762091234", "+1xxxxxxxx34"),  # Jamaica is NANP too: the code is still 1
        ("+442079460958", "+44xxxxxxxx58"),  # UK
        ("+4930901820", "+49xxxxxx20"),  # Germany, short subscriber number
        ("+81312345678", "+81xxxxxxx78"),  # Japan
        ("+263242123456", "+263xxxxxxx56"),  # Zimbabwe, 3-digit code
        ("+5372345678", "+53xxxxxx78"),  # Cuba
        ("+33 1 42 68 53 00", "+33xxxxxxx00"),  # formatted E.164: separators dropped
        ("+1 (212) 200-1234", "+1xxxxxxxx34"),
    ],
)
def test_e164_keeps_country_code_and_last_two_digits(number, masked):
    assert mask_number(number) == masked


@pytest.mark.parametrize(
    "dialled,masked",
    [
        ("0142685300", "xxxxxxxx00"),  # national: no country code to keep
        ("0033612345678", "xxxxxxxxxxx78"),  # international prefix, not '+': all but two hidden
        ("011 44 20 7946 0958", "xxxxxxxxxxxxx58"),
        ("(415) 555-2671", "xxxxxxxx71"),
        ("112", "x12"),
        ("911", "x11"),
        ("12ab", "12"),  # junk keeps at most its last two digits
        ("+999123456", "xxxxxxx56"),  # '+' with no valid country code: nothing kept but two
    ],
)
def test_raw_dialled_strings_hide_all_but_the_last_two_digits(dialled, masked):
    assert mask_number(dialled) == masked


@pytest.mark.parametrize("value", [None, ""])
def test_none_and_empty_pass_through(value):
    assert mask_number(value) == value


@pytest.mark.parametrize("value", ["+", "abc", "sip:", "tel:"])
def test_no_digits_gives_no_digits(value):
    assert not re.search(r"\d", mask_number(value) or "")


NUMBERS = [
    "+33142685300",
    "+12122001234",
    "+442079460958",
    "+263242123456",
    "0142685300",
    "tel:+33-1-42-68-53-00",
    "sip:+33142685300@carrier.example",
    "+33 6 12 34 56 78",
    "0033612345678",
    "+1 876 209 1234",
]


@pytest.mark.parametrize("number", NUMBERS)
def test_masked_form_never_contains_more_than_code_and_two_digits(number):
    masked = mask_number(number)
    digits = re.sub(r"\D", "", number)
    kept = re.sub(r"\D", "", masked)
    assert len(kept) <= 3 + 2
    # No run of 3+ consecutive digits of the original survives (other than the country code).
    body = masked.split("x")[-1]
    assert len(body) <= 2 and digits.endswith(body)
    assert digits not in masked and digits[-6:] not in masked


def test_masking_is_stable_so_lines_about_one_number_still_match():
    assert mask_number("+33142685300") == mask_number("+33 1 42 68 53 00")
    assert mask_number("+33142685300") != mask_number("+33142685301")


@pytest.mark.parametrize(
    "uri,masked",
    [
        ("tel:+33-1-42-68-53-00", "tel:+33xxxxxxx00"),
        ("TEL:+12122001234", "TEL:+1xxxxxxxx34"),
        ("tel:0142685300;phone-context=+33", "tel:xxxxxxxx00;phone-context=+33"),
        ("tel:+33142685300;ext=0142685300", "tel:+33xxxxxxx00;ext=xxxxxxxx00"),
    ],
)
def test_tel_uri_keeps_its_country_code_and_parameters(uri, masked):
    assert mask_number(uri) == masked
    assert mask_number(uri).split(";")[0][4:] == mask_number(uri.split(";")[0][4:])  # same mask as the bare number


@pytest.mark.parametrize(
    "value",
    NUMBERS
    + ["112", "12ab", "+999123456", "+331", "tel:+33-1-42-68-53-00", "tel:0142685300;phone-context=+33", "", None],
)
def test_masking_a_masked_value_changes_nothing(value):
    once = mask_number(value)
    assert mask_number(once) == once
    text = f"call to {value} from {value}"
    assert mask_numbers_in(mask_numbers_in(text)) == mask_numbers_in(text)


@pytest.mark.parametrize(
    "number,code",
    [
        ("+33142685300", "33"),
        ("+1 212 200 1234", "1"),
        ("+263242123456", "263"),
        ("+7 495 123 45 67", "7"),
        ("+999123456", None),
        ("", None),
    ],
)
def test_country_code(number, code):
    assert country_code(number) == code


def test_short_international_numbers_do_not_repeat_the_country_code():
    assert mask_number("+331") == "+331" and mask_number("+33") == "+33"


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "+33142685300 is in FR (fixed_line); charged to tenant_pool for up to 14400 s",
            "+33xxxxxxx00 is in FR (fixed_line); charged to tenant_pool for up to 14400 s",
        ),
        ("'+4930123456' → +4930123456, region DE", "'+49xxxxxx56' → +49xxxxxx56, region DE"),
        ("To: sip:+33142685300@10.200.100.250;user=phone", "To: sip:+33xxxxxxx00@10.200.100.250;user=phone"),
        ("dialled 0142 68 53 00 in FR", "dialled xxxxxxxx00 in FR"),
        ("call 1-21985@127.0.0.1 ended with 486 after 3600 s", "call 1-21985@127.0.0.1 ended with 486 after 3600 s"),
        ("tel:+33-1-42-68-53-00 refused", "tel:+33xxxxxxx00 refused"),
        ("local time 2026-11-22T06:16:31.604390+01:00", "local time 2026-11-22T06:16:31.604390+01:00"),
        ("dialled 01.42.68.53.00 at 10:02:31.604390", "dialled xxxxxxxx00 at 10:02:31.604390"),
        ("", ""),
        (None, None),
    ],
)
def test_numbers_inside_free_text_are_masked_and_the_rest_stays_readable(text, expected):
    assert mask_numbers_in(text) == expected


# --- URL passwords ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("postgresql://gw:s3cret@db.example:5432/ledger", "postgresql://gw:***@db.example:5432/ledger"),
        ("postgres://gw:p@ss@db/ledger", "postgres://gw:***@db/ledger"),  # unescaped '@' in the password
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("https://hook:tok3n@alerts.example/hook?x=1", "https://hook:***@alerts.example/hook?x=1"),
        (
            "cannot connect to postgresql://gw:pw@h1/db; fell back to postgresql://gw:pw2@h2/db",
            "cannot connect to postgresql://gw:***@h1/db; fell back to postgresql://gw:***@h2/db",
        ),
        (
            "store.url: expected sqlite:///PATH, got 'mysql://root:hunter2@db/x'",
            "store.url: expected sqlite:///PATH, got 'mysql://root:***@db/x'",
        ),
        ("postgresql://gw@db/ledger", "postgresql://gw@db/ledger"),  # no password
        (
            "http://host:8080/path?email=a@b.example",
            "http://host:8080/path?email=a@b.example",
        ),  # a port, not a password
        ("sqlite:///var/ledger.db", "sqlite:///var/ledger.db"),
        ("sip:+33142685300@carrier.example", "sip:+33142685300@carrier.example"),
        ("postgresql://gw:***@db/ledger", "postgresql://gw:***@db/ledger"),  # idempotent
        ("", ""),
        (None, None),
    ],
)
def test_redact_url_hides_passwords_only(text, expected):
    assert redact_url(text) == expected


def test_privacy_module_is_stdlib_only():
    import ast
    import sys
    from pathlib import Path

    import sip.privacy

    tree = ast.parse(Path(sip.privacy.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_the_call_path_name_is_the_same_function():
    import gateway.privacy

    assert gateway.privacy.mask_number is mask_number and gateway.privacy.mask_numbers_in is mask_numbers_in


def test_country_codes_match_phonenumbers():
    # The table is a copy, so that masking needs no third-party module; this says when it drifts.
    import phonenumbers

    from sip.privacy import _COUNTRY_CODES

    assert {str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE} == _COUNTRY_CODES
