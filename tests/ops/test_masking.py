"""Number masking (`logging.mask_numbers`): `gateway.privacy.mask_number`.

Only the country calling code and the last two digits survive. The
integration side (a real gateway with mask_numbers on, checked for leaks in
its whole log) is in tests/integration/test_logs_cli.py.
"""

from __future__ import annotations

import re

import pytest

from gateway.privacy import mask_number, mask_numbers_in


@pytest.mark.parametrize("number,masked", [
    ("+33142685300", "+33xxxxxxx00"),       # France
    ("+12122001234", "+1xxxxxxxx34"),       # US (NANP, 1-digit code)
    ("+18762091234", "+1xxxxxxxx34"),       # Jamaica is NANP too: the code is still 1
    ("+442079460958", "+44xxxxxxxx58"),     # UK
    ("+4930901820", "+49xxxxxx20"),         # Germany, short subscriber number
    ("+81312345678", "+81xxxxxxx78"),       # Japan
    ("+263242123456", "+263xxxxxxx56"),     # Zimbabwe, 3-digit code
    ("+5372345678", "+53xxxxxx78"),         # Cuba
    ("+33 1 42 68 53 00", "+33xxxxxxx00"),  # formatted E.164: separators dropped
    ("+1 (212) 200-1234", "+1xxxxxxxx34"),
])
def test_e164_keeps_country_code_and_last_two_digits(number, masked):
    assert mask_number(number) == masked


@pytest.mark.parametrize("dialled,masked", [
    ("0142685300", "xxxxxxxx00"),           # national: no country code to keep
    ("0033612345678", "xxxxxxxxxxx78"),     # international prefix, not '+': all but two hidden
    ("011 44 20 7946 0958", "xxxxxxxxxxxxx58"),
    ("(415) 555-2671", "xxxxxxxx71"),
    ("112", "x12"),
    ("911", "x11"),
    ("12ab", "12"),                         # junk keeps at most its last two digits
    ("+999123456", "xxxxxxx56"),            # '+' with no valid country code: nothing kept but two
])
def test_raw_dialled_strings_hide_all_but_the_last_two_digits(dialled, masked):
    assert mask_number(dialled) == masked


@pytest.mark.parametrize("value", [None, ""])
def test_none_and_empty_pass_through(value):
    assert mask_number(value) == value


@pytest.mark.parametrize("value", ["+", "abc", "sip:", "tel:"])
def test_no_digits_gives_no_digits(value):
    assert not re.search(r"\d", mask_number(value) or "")


NUMBERS = ["+33142685300", "+12122001234", "+442079460958", "+263242123456", "0142685300",
           "tel:+33-1-42-68-53-00", "sip:+33142685300@carrier.example", "+33 6 12 34 56 78",
           "0033612345678", "+1 876 209 1234"]


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


def test_tel_uri_is_masked_but_loses_its_country_code():
    # A tel: URI is not '+...' at its start, so the country code is not recognised:
    # the result is safe (all but two digits hidden) but less useful. Pinned here
    # so a change is deliberate.
    assert mask_number("tel:+33-1-42-68-53-00") == "xxxxxxxxx00"


@pytest.mark.parametrize("text,expected", [
    ("+33142685300 is in FR (fixed_line); charged to tenant_pool for up to 14400 s",
     "+33xxxxxxx00 is in FR (fixed_line); charged to tenant_pool for up to 14400 s"),
    ("'+4930123456' → +4930123456, region DE", "'+49xxxxxx56' → +49xxxxxx56, region DE"),
    ("To: sip:+33142685300@10.200.100.250;user=phone", "To: sip:+33xxxxxxx00@10.200.100.250;user=phone"),
    ("dialled 0142 68 53 00 in FR", "dialled xxxxxxxx00 in FR"),
    ("call 1-21985@127.0.0.1 ended with 486 after 3600 s", "call 1-21985@127.0.0.1 ended with 486 after 3600 s"),
    ("", ""),
    (None, None),
])
def test_numbers_inside_free_text_are_masked_and_the_rest_stays_readable(text, expected):
    assert mask_numbers_in(text) == expected
