"""Destination handling: formats, regions from metadata, number classes, junk."""

from __future__ import annotations

import phonenumbers
import pytest
from policy_testlib import AFTER_PROMO, FR_PARIS, IN_PROMO, US_NYC, example_e164, make_settings, run

from policy import ZONE_A, Bucket, NumberType, Reason, Snapshot, normalize_destination

OTHER_PLUS_ONE_REGIONS = sorted(set(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]) - {"US", "CA"})


def test_other_plus_one_regions_are_derived_from_metadata():
    # A sanity floor, so the parametrisation below cannot silently be empty.
    assert {"JM", "DO", "PR", "BS", "VI", "GU"} <= set(OTHER_PLUS_ONE_REGIONS)
    assert "US" not in OTHER_PLUS_ONE_REGIONS and "CA" not in OTHER_PLUS_ONE_REGIONS


@pytest.mark.parametrize(
    ("dialled", "region", "e164", "dest_region"),
    [
        ("+33142685300", "US", FR_PARIS, "FR"),
        ("+33 1 42 68 53 00", "US", FR_PARIS, "FR"),
        ("+33 (0)1 42.68.53.00", "US", FR_PARIS, "FR"),
        ("01 42 68 53 00", "FR", FR_PARIS, "FR"),
        ("01-42-68-53-00", "FR", FR_PARIS, "FR"),
        ("0033142685300", "FR", FR_PARIS, "FR"),  # FR international prefix
        ("011 33 1 42 68 53 00", "US", FR_PARIS, "FR"),  # US international prefix
        ("tel:+33-1-42-68-53-00", "US", FR_PARIS, "FR"),
        ("TEL:+33142685300", "US", FR_PARIS, "FR"),
        ("tel:0142685300;phone-context=+33", "US", FR_PARIS, "FR"),
        ("tel:212-200-1234;phone-context=+1", "FR", US_NYC, "US"),
        ("tel:0142685300;phone-context=example.com", "FR", FR_PARIS, "FR"),
        ("tel:+12122001234;ext=12", "FR", US_NYC, "US"),
        ("sip:+12122001234@trunk.example;user=phone", "FR", US_NYC, "US"),
        ("(212) 200-1234", "US", US_NYC, "US"),
        ("1 212 200 1234", "US", US_NYC, "US"),
        ("+1 876 209 1234", "US", "+18762091234", "JM"),
        ("+1 787 200 1234", "US", "+17872001234", "PR"),
        ("+44 7624 200123", "GB", "+447624200123", "IM"),
        ("  +33142685300  ", "US", FR_PARIS, "FR"),
    ],
)
def test_formats_normalise_to_e164_and_region(dialled, region, e164, dest_region):
    n = normalize_destination(dialled, region)
    assert n.ok, n.error
    assert (n.e164, n.region) == (e164, dest_region)


@pytest.mark.parametrize(
    "dialled",
    [
        "",
        "   ",
        "+",
        "++33142685300",
        "abc",
        "12ab",
        "1-800-FLOWERS",  # vanity letters are refused
        "1" * 40,
        "9" * 40,
        "+" + "3" * 40,
        "+999123456",  # unassigned country code
        "*67 212 200 1234",
        "#31#",
        "0142685300#",
        "tel:",
        "tel:;phone-context=+33",
        "sip:@host",
        "\x00\x01",
        "１２１２２００１２３４",  # fullwidth digits
        "٠١٤٢٦٨٥٣٠٠",  # Arabic-Indic digits
        "０１４２６８５３００",
        "+３３１４２６８５３００",
        "2⁰1",  # superscript
        "+33 1 42 68 53 00 ☎",
        "1",
        "42",  # neither a number nor a short code in FR
    ],
)
@pytest.mark.parametrize("region", ["FR", "US"])
def test_junk_is_number_invalid(settings, dialled, region):
    n = normalize_destination(dialled, region)
    assert not n.ok and n.error
    organizer = "alice@contoso.com" if region == "FR" else "erin@fabrikam.com"
    d = run(settings, organizer, dialled)
    assert (d.allow, d.reason, d.status) == (False, Reason.NUMBER_INVALID, 484)
    assert d.e164 is None


def test_junk_never_raises_even_for_non_strings():
    assert not normalize_destination(None, "FR").ok  # type: ignore[arg-type]


@pytest.mark.parametrize("region", OTHER_PLUS_ONE_REGIONS)
def test_every_plus_one_region_other_than_us_ca_is_its_own_region(settings, region):
    e164 = example_e164(region)
    assert e164.startswith("+1")
    n = normalize_destination(e164, "US")
    assert n.ok and n.region == region
    # Dialled nationally from the US it is the same number.
    assert normalize_destination(e164[2:], "US").region == region
    # The add-on never pays for it: erin (subscription, add-on, no credits) gets
    # the pool only if the region is in Zone A (PR is), else no entitlement.
    d = run(settings, "erin@fabrikam.com", e164)
    assert d.bucket is not Bucket.USCA_UNLIMITED
    assert Bucket.USCA_UNLIMITED not in d.fallback_buckets
    if region in settings.catalogue.zone_a:
        assert d.allow and d.bucket is Bucket.TENANT_POOL
    else:
        assert (d.allow, d.reason) == (False, Reason.NO_ENTITLEMENT)


@pytest.mark.parametrize("region", OTHER_PLUS_ONE_REGIONS)
def test_every_plus_one_region_other_than_us_is_not_domestic_for_a_us_organiser(region):
    s = make_settings()
    import copy

    from policy_testlib import BASE

    from gateway.config import parse_policy_sections

    data = copy.deepcopy(BASE)
    data["organizers"][4]["dialout_policy"] = "domestic"
    s = parse_policy_sections(data)
    d = run(s, "erin@fabrikam.com", example_e164(region))
    assert (d.allow, d.reason) == (False, Reason.NOT_DOMESTIC)


@pytest.mark.parametrize(("region", "usca"), [("US", True), ("CA", True)])
def test_us_and_ca_are_the_addon(settings, region, usca):
    d = run(settings, "erin@fabrikam.com", example_e164(region))
    assert d.allow and d.bucket is Bucket.USCA_UNLIMITED


@pytest.mark.parametrize(
    ("dialled", "region", "number_type"),
    [
        ("112", "FR", NumberType.EMERGENCY),
        ("15", "FR", NumberType.EMERGENCY),
        ("911", "US", NumberType.EMERGENCY),
        ("112", "DE", NumberType.EMERGENCY),
        ("999", "GB", NumberType.EMERGENCY),
        ("000", "AU", NumberType.EMERGENCY),
        ("3950", "FR", NumberType.SHORT_CODE),
        ("+19002001234", "US", NumberType.PREMIUM_RATE),
        ("+881612345678", "US", NumberType.SATELLITE),
        ("+870773123456", "US", NumberType.SATELLITE),
        ("+33142685300", "US", NumberType.FIXED_LINE),
        ("+33612345678", "US", NumberType.MOBILE),
        ("+18002001234", "US", NumberType.TOLL_FREE),
    ],
)
def test_number_classes_come_from_metadata(dialled, region, number_type):
    n = normalize_destination(dialled, region)
    assert n.ok and n.number_type is number_type


@pytest.mark.parametrize(
    "kind",
    [
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
        phonenumbers.PhoneNumberType.PAGER,
        phonenumbers.PhoneNumberType.VOICEMAIL,
    ],
)
def test_blocked_types_from_metadata_examples_are_blocked(kind):
    s = make_settings()
    # Find a region in phonenumbers' metadata with an example of this type.
    checked = 0
    for region in ("GB", "FR", "DE", "US", "IT", "ES", "NL", "AT", "BE", "CH", "SE", "NO", "PL"):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is None or phonenumbers.number_type(number) != kind:
            continue
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        d = run(s, "alice@contoso.com", e164)
        assert (d.allow, d.reason, d.status) == (False, Reason.DESTINATION_BLOCKED, 403), (region, e164)
        assert d.number_type is NumberType.from_phonenumbers(kind)
        checked += 1
    assert checked, f"no example of {kind} in the sampled regions"


def test_blocked_types_are_configurable_but_emergency_stays_blocked():
    s = make_settings(blocked_number_types=[])
    d = run(s, "alice@contoso.com", "+19002001234")
    assert d.reason is not Reason.DESTINATION_BLOCKED
    # Premium numbers never draw on the pool even when not blocked; alice has credits.
    assert d.allow and d.bucket is Bucket.CREDITS
    assert run(s, "alice@contoso.com", "112").reason is Reason.DESTINATION_BLOCKED
    assert run(s, "alice@contoso.com", "3950").reason is Reason.DESTINATION_BLOCKED


def test_validation_level_valid_rejects_possible_but_unassigned():
    unassigned = "+33 7 00 00 00 00"  # right length for FR, outside every assigned range
    n = normalize_destination(unassigned, "FR", "possible")
    assert n.ok and not n.valid and n.region == "FR" and n.number_type is NumberType.UNKNOWN
    assert not normalize_destination(unassigned, "FR", "valid").ok
    assert not normalize_destination(unassigned, "FR").ok  # "valid" is the default
    assert run(make_settings(), "alice@contoso.com", unassigned).reason is Reason.NUMBER_INVALID
    # "possible" parses it, but its type, unknown, is blocked by default ...
    loose = make_settings(number_validation="possible")
    assert run(loose, "alice@contoso.com", unassigned).reason is Reason.DESTINATION_BLOCKED
    # ... unless the config also unblocks unknown: two explicit steps.
    opted_in = make_settings(number_validation="possible", blocked_number_types=["premium_rate"])
    assert run(opted_in, "alice@contoso.com", unassigned).allow
    assert run(make_settings(), "alice@contoso.com", FR_PARIS).allow


def test_parsing_is_cached_per_dialled_and_region():
    normalize_destination.cache_clear()
    a = normalize_destination("+33 1 42 68 53 00", "FR")
    b = normalize_destination("+33 1 42 68 53 00", "FR")
    assert a is b
    info = normalize_destination.cache_info()
    assert info.hits >= 1 and info.misses == 1
    c = normalize_destination("+33 1 42 68 53 00", "US")
    assert c == a and normalize_destination.cache_info().misses == 2


def test_national_format_uses_usage_location(settings):
    # "0142685300" is Paris for a FR organiser; for a US organiser it is no number.
    assert run(settings, "alice@contoso.com", "0142685300", snapshot=Snapshot()).e164 == FR_PARIS
    d = run(settings, "erin@fabrikam.com", "0142685300", AFTER_PROMO)
    assert d.reason is Reason.NUMBER_INVALID


# --- length cap and a bounded cache (regression: any length was parsed and cached) -----------------------


def test_the_length_cap_is_a_documented_constant():
    from policy.numbers import MAX_DIALLED_LENGTH, PARSE_CACHE_SIZE

    assert 32 <= MAX_DIALLED_LENGTH <= 256
    assert normalize_destination.cache_info().maxsize == PARSE_CACHE_SIZE


@pytest.mark.parametrize("length", [129, 1000, 1_000_000])
def test_over_the_cap_is_number_invalid_without_parsing_or_caching(settings, length):
    from policy.numbers import MAX_DIALLED_LENGTH

    dialled = "+33" + "1" * (length - 3)
    assert len(dialled) > MAX_DIALLED_LENGTH
    before = normalize_destination.cache_info()
    n = normalize_destination(dialled, "FR")
    assert not n.ok and n.error == f"too long: {length} characters, at most {MAX_DIALLED_LENGTH} are accepted"
    d = run(settings, "alice@contoso.com", dialled)
    assert (d.allow, d.reason, d.status) == (False, Reason.NUMBER_INVALID, 484)
    assert "too long" in d.explanation
    # The explanation goes into a SIP Warning header and the log line: it quotes a short prefix only.
    assert len(d.explanation) < 200 and all(len(c.detail) < 200 for c in d.trace)
    after = normalize_destination.cache_info()
    assert (after.currsize, after.misses) == (before.currsize, before.misses)


def test_at_the_cap_a_long_but_legitimate_tel_uri_still_parses():
    from policy.numbers import MAX_DIALLED_LENGTH

    head = "tel:0142685300;phone-context="
    domain = "pbx." + "a" * (MAX_DIALLED_LENGTH - len(head) - len("pbx..example")) + ".example"
    dialled = head + domain
    assert len(dialled) == MAX_DIALLED_LENGTH
    n = normalize_destination(dialled, "FR")
    assert n.ok and n.e164 == FR_PARIS


def test_non_strings_are_invalid_and_never_reach_the_cache():
    before = normalize_destination.cache_info()
    for junk in (None, 33142685300, b"+33142685300", ["+33142685300"]):
        assert not normalize_destination(junk, "FR").ok  # type: ignore[arg-type]
    assert normalize_destination.cache_info().currsize == before.currsize


# --- possible-but-unassigned numbers never reach a paid destination by default (toll-fraud regression) ---

INTERNATIONAL_PREMIUM = "+97912345678"  # +979: International Premium Rate Service; possible, not valid
GERMAN_0900 = "+4990012345678"  # DE 0900 premium, one digit too many for a typed range; possible, not valid


@pytest.mark.parametrize(
    ("dialled", "now", "was"),
    [
        (INTERNATIONAL_PREMIUM, AFTER_PROMO, Bucket.CREDITS),  # was allowed on credits
        (GERMAN_0900, IN_PROMO, Bucket.PROMOTION),  # was allowed on the promotion
        (GERMAN_0900, AFTER_PROMO, Bucket.TENANT_POOL),  # and on the pool
    ],
)
def test_unassigned_premium_lookalikes_are_refused_by_default(dialled, now, was):
    n = normalize_destination(dialled, "FR", "possible")
    assert n.ok and not n.valid and n.number_type is NumberType.UNKNOWN  # what made them slip through
    d = run(make_settings(), "alice@contoso.com", dialled, now)
    assert (d.allow, d.reason, d.status) == (False, Reason.NUMBER_INVALID, 484)
    assert "not in an assigned number range" in d.explanation
    # Even with the old validation level, the unknown type is blocked by default.
    d = run(make_settings(number_validation="possible"), "alice@contoso.com", dialled, now)
    assert (d.allow, d.reason, d.status) == (False, Reason.DESTINATION_BLOCKED, 403)
    assert "unknown" in d.explanation
    # Only a config that opts in twice calls them (and then the old bucket pays).
    opted_in = make_settings(number_validation="possible", blocked_number_types=["premium_rate"])
    d = run(opted_in, "alice@contoso.com", dialled, now)
    assert d.allow and d.bucket is was


def test_the_defaults_are_valid_and_unknown_blocked():
    cat = make_settings().catalogue
    assert cat.number_validation == "valid" and NumberType.UNKNOWN in cat.blocked_types


ZONE_A_SORTED = sorted(ZONE_A)


def _examples(region: str) -> list[phonenumbers.PhoneNumber]:
    out = []
    for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None and phonenumbers.region_code_for_number(number) == region:
            out.append(number)
    return out


@pytest.mark.parametrize("region", ZONE_A_SORTED)
def test_normal_numbers_in_every_zone_a_country_still_pass(settings, region):
    examples = _examples(region)
    assert examples, f"phonenumbers has no fixed-line or mobile example for {region}"
    for number in examples:
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        d = run(settings, "alice@contoso.com", e164)  # policy any, subscription: the pool pays
        assert d.allow and d.bucket is Bucket.TENANT_POOL, (e164, d.explanation)
        assert d.region == region and d.number_type is not NumberType.UNKNOWN


@pytest.mark.parametrize("region", ZONE_A_SORTED)
def test_normal_numbers_dialled_nationally_by_a_local_organiser_still_pass(region):
    import copy

    from policy_testlib import BASE

    from gateway.config import parse_policy_sections

    data = copy.deepcopy(BASE)
    data["organizers"].append(
        {
            "id": "local@contoso.com",
            "tenant": "contoso",
            "usage_location": region,
            "audio_conferencing": "subscription",
            "dialout_policy": "any",
        }
    )
    s = parse_policy_sections(data)
    for number in _examples(region):
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        d = run(s, "local@contoso.com", national)
        assert d.allow and d.e164 == e164 and d.region == region, (national, d.explanation)


# --- the international (IDD) prefix comes from the usage location's metadata (regression: 00 everywhere) --

FR_DIGITS, US_DIGITS = "33 1 42 68 53 00", "1 212 200 1234"
IDD_REGIONS = ("US", "GB", "HK", "KR", "TH", "JP", "AU")

# (usage location, IDD prefix or "" for a prefix that is not one there, rest, expected E.164 or None for 484)
IDD_TABLE = [
    ("US", "011", FR_DIGITS, FR_PARIS),
    ("US", "011", "44 20 7946 0958", "+442079460958"),
    ("US", "011", US_DIGITS, US_NYC),
    ("US", "", "00 " + FR_DIGITS, None),  # 00 is not the US prefix
    ("GB", "00", FR_DIGITS, FR_PARIS),
    ("GB", "00", US_DIGITS, US_NYC),
    ("GB", "", "011 " + FR_DIGITS, None),
    ("HK", "00", FR_DIGITS, FR_PARIS),  # HK: 00, 001, 002, 0030, 0050, 0059, 006–009
    ("HK", "001", FR_DIGITS, FR_PARIS),
    ("HK", "0030", FR_DIGITS, FR_PARIS),
    ("HK", "009", FR_DIGITS, FR_PARIS),
    ("HK", "001", US_DIGITS, US_NYC),
    ("HK", "", "00 " + US_DIGITS, None),  # read as 001 + 212…: no possible number, never Morocco
    ("KR", "001", FR_DIGITS, FR_PARIS),  # KR: carrier codes 001, 002, 005, 00700, …; bare 00 is none
    ("KR", "002", FR_DIGITS, FR_PARIS),
    ("KR", "005", FR_DIGITS, FR_PARIS),
    ("KR", "00700", FR_DIGITS, FR_PARIS),
    ("KR", "001", US_DIGITS, US_NYC),
    ("KR", "", "00 " + FR_DIGITS, None),  # a national 00…: unassigned in KR, not France
    ("KR", "", "00 " + US_DIGITS, None),
    ("TH", "001", FR_DIGITS, FR_PARIS),  # TH: 001–009
    ("TH", "007", FR_DIGITS, FR_PARIS),
    ("TH", "009", FR_DIGITS, FR_PARIS),
    ("TH", "001", US_DIGITS, US_NYC),
    ("TH", "", "00 " + FR_DIGITS, None),  # 003 + 31 42 68 53 00: an unassigned Dutch number, never dialled
    ("JP", "010", FR_DIGITS, FR_PARIS),
    ("JP", "010", US_DIGITS, US_NYC),
    ("JP", "", "00 " + FR_DIGITS, None),
    ("AU", "0011", FR_DIGITS, FR_PARIS),  # AU: 0011, 0014, 0015, …
    ("AU", "0014", FR_DIGITS, FR_PARIS),
    ("AU", "0011", US_DIGITS, US_NYC),
    ("AU", "", "00 " + FR_DIGITS, None),
]


def _idd_settings():
    import copy

    from policy_testlib import BASE

    from gateway.config import parse_policy_sections

    data = copy.deepcopy(BASE)
    for region in IDD_REGIONS:
        data["organizers"].append(
            {
                "id": f"idd-{region.lower()}@contoso.com",
                "tenant": "contoso",
                "usage_location": region,
                "audio_conferencing": "subscription",
                "credits_licence": True,
                "dialout_policy": "any",
            }
        )
    return parse_policy_sections(data)


@pytest.fixture(scope="module")
def idd_settings():
    return _idd_settings()


@pytest.mark.parametrize(
    ("region", "prefix", "rest", "e164"), IDD_TABLE, ids=[f"{r}:{p or 'not-idd'}:{x}" for r, p, x, _ in IDD_TABLE]
)
def test_international_prefix_is_the_usage_locations(idd_settings, region, prefix, rest, e164):
    import re

    from phonenumbers.phonemetadata import PhoneMetadata

    if prefix:  # the table says what phonenumbers' metadata says, nothing hand-kept
        assert re.fullmatch(PhoneMetadata.metadata_for_region(region).international_prefix, prefix), (region, prefix)
    dialled = f"{prefix} {rest}".strip()
    for text in (dialled, dialled.replace(" ", ""), dialled.replace(" ", "-")):
        d = run(idd_settings, f"idd-{region.lower()}@contoso.com", text)
        if e164 is None:
            assert (d.allow, d.reason, d.status) == (False, Reason.NUMBER_INVALID, 484), (text, d.e164, d.region)
        else:
            assert d.allow and d.e164 == e164, (text, d.explanation)


@pytest.mark.parametrize("region", IDD_REGIONS)
@pytest.mark.parametrize(
    "dialled",
    [
        "+33142685300",
        "+33 1 42 68 53 00",
        "+33 (0)1 42.68.53.00",
        "+33/1/42/68/53/00",
        "tel:+33-1-42-68-53-00",
        "tel:0142685300;phone-context=+33",
        "tel:1 42 68 53 00;phone-context=+33",
        "sip:+33142685300@trunk.example;user=phone",
    ],
)
def test_plus_tel_separators_and_phone_context_work_from_every_idd_region(idd_settings, region, dialled):
    d = run(idd_settings, f"idd-{region.lower()}@contoso.com", dialled)
    assert d.allow and d.e164 == FR_PARIS and d.region == "FR", d.explanation
