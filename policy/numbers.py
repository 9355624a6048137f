"""Destination handling: dialled string → E.164, region and number type.

Everything comes from phonenumbers' own metadata (number types, short-number
and emergency tables, `region_code_for_number`), so no prefix lists are kept
by hand. The only exception is satellite service, which phonenumbers has no
type for: it is recognised by the ITU codes reserved for it (+870, +881,
and Thuraya's +882 16).

Parsing a dialled string is pure and the same string is dialled again and
again, so results are cached per (dialled, region, validation). The cache is
bounded twice: at most PARSE_CACHE_SIZE entries (least recently used go
first), and no string longer than MAX_DIALLED_LENGTH is parsed or cached, so
junk cannot grow it past a few megabytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, shortnumberinfo


class NumberType(StrEnum):
    """Our names for phonenumbers' integer `PhoneNumberType`s, plus three of our own."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"
    # Not phonenumbers types:
    SATELLITE = "satellite"
    EMERGENCY = "emergency"
    SHORT_CODE = "short_code"

    @classmethod
    def from_phonenumbers(cls, value: int) -> NumberType:
        return _FROM_PN[value]


_FROM_PN: dict[int, NumberType] = {
    PhoneNumberType.FIXED_LINE: NumberType.FIXED_LINE,
    PhoneNumberType.MOBILE: NumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE: NumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: NumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: NumberType.SHARED_COST,
    PhoneNumberType.VOIP: NumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER: NumberType.PAGER,
    PhoneNumberType.UAN: NumberType.UAN,
    PhoneNumberType.VOICEMAIL: NumberType.VOICEMAIL,
    PhoneNumberType.UNKNOWN: NumberType.UNKNOWN,
}

#: E.164 digit prefixes of satellite services (ITU-T E.164 assignments).
SATELLITE_PREFIXES: tuple[str, ...] = ("870", "881", "88216")

#: Validation levels: "valid" (inside an assigned range of the metadata, the
#: default) or "possible" (only the length fits the region's plan; such a
#: number has type UNKNOWN, which is blocked unless the config unblocks it).
VALIDATION_LEVELS = ("possible", "valid")

#: The longest dialled string that is parsed at all; longer is `number_invalid`
#: before any parsing or caching. An E.164 number has at most 15 digits; the
#: rest is room for `tel:`, visual separators and `;phone-context=` (a domain
#: context can be long), far above anything a bridge sends.
MAX_DIALLED_LENGTH = 128

#: Entries of the parse cache (each key is at most MAX_DIALLED_LENGTH characters).
PARSE_CACHE_SIZE = 65536

# What may appear in a dialled number once `tel:`/`sip:` and parameters are
# removed: ASCII digits, one leading "+", and visual separators. Letters
# (vanity numbers), "*", "#" and non-ASCII digits are refused on purpose: a
# bridge sends digits, and anything else is either junk or an attempt to
# smuggle a string past the checks.
_ALLOWED = re.compile(r"\+?[ \-.()/]*[0-9][0-9 \-.()/]*\Z")
_VISUAL = str.maketrans("", "", " -.()/")


@dataclass(frozen=True, slots=True)
class NormalizedNumber:
    """The result of normalising one dialled string. `ok` is False when it is junk."""

    ok: bool
    e164: str | None = None
    region: str | None = None
    number_type: NumberType | None = None
    valid: bool = False  # inside an assigned range (phonenumbers.is_valid_number)
    error: str | None = None  # why it is not a number, when not ok

    @property
    def is_special(self) -> bool:
        """Emergency or short code: dialled digits that are not an E.164 number."""
        return self.number_type in (NumberType.EMERGENCY, NumberType.SHORT_CODE)


def _invalid(error: str) -> NormalizedNumber:
    return NormalizedNumber(ok=False, error=error)


def _strip_uri(dialled: str) -> tuple[str, str | None]:
    """Remove `tel:`/`sip:` and URI parameters; return (number, phone-context)."""
    text = dialled.strip()
    lowered = text[:5].lower()
    if lowered.startswith("tel:"):
        text = text[4:]
    elif lowered.startswith("sip:") or lowered.startswith("sips:"):
        text = text[text.index(":") + 1 :]
        text = text.split("@", 1)[0]
    context = None
    if ";" in text:
        number, *params = text.split(";")
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "phone-context":
                context = value.strip()
        text = number
    return text.strip(), context


def _is_satellite(e164: str) -> bool:
    return e164[1:].startswith(SATELLITE_PREFIXES)


def normalize_destination(dialled: str, region: str, validation: str = "valid") -> NormalizedNumber:
    """Normalise a dialled string in the organiser's usage-location `region`.

    Accepts `+…`, the region's international prefix (`00`, `011`, …), national
    formats, `tel:` URIs with `;phone-context=+CC…` and visual separators.
    Never raises for bad input: it returns `NormalizedNumber(ok=False, error=…)`.
    Emergency and short codes of `region` come back ok, with type
    EMERGENCY/SHORT_CODE, region `region` and no E.164 form.

    Strings longer than MAX_DIALLED_LENGTH are refused before parsing and are
    never cached; the others are cached (`normalize_destination.cache_info()`).
    """
    if not isinstance(dialled, str):
        return _invalid("empty" if dialled is None else "not a string")
    if len(dialled) > MAX_DIALLED_LENGTH:
        return _invalid(f"too long: {len(dialled)} characters, at most {MAX_DIALLED_LENGTH} are accepted")
    return _normalize(dialled, region, validation)


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _normalize(dialled: str, region: str, validation: str) -> NormalizedNumber:
    if not dialled.strip():
        return _invalid("empty")
    if not dialled.isascii():
        return _invalid("non-ASCII characters")
    number, context = _strip_uri(dialled)
    if not number or not _ALLOWED.match(number):
        return _invalid("not a phone number (only digits, a leading '+' and separators are accepted)")
    if context is not None and context.startswith("+"):
        # RFC 3966 local number with a global context: the context gives the
        # country (and maybe area) code; national prefixes are stripped by phonenumbers.
        if not _ALLOWED.match(context):
            return _invalid("bad phone-context")
        text = f"tel:{number};phone-context={context}"
    else:
        text = number  # domain contexts say nothing about the country: parse in `region`

    digits = number.translate(_VISUAL)
    # Dialled digits that are special services in the region come first:
    # "112" is a complete, valid call in FR even though it is no E.164 number.
    national = not digits.startswith("+") and (context is None or not context.startswith("+"))
    if national and shortnumberinfo.connects_to_emergency_number(digits, region):
        return NormalizedNumber(ok=True, region=region, number_type=NumberType.EMERGENCY)
    try:
        parsed = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return _invalid(str(exc.args[0] if exc.args else exc))

    is_valid = phonenumbers.is_valid_number(parsed)
    if not is_valid and not digits.startswith("+") and shortnumberinfo.is_valid_short_number_for_region(parsed, region):
        return NormalizedNumber(ok=True, region=region, number_type=NumberType.SHORT_CODE)
    if not phonenumbers.is_possible_number(parsed):
        return _invalid("not a possible number")
    if validation == "valid" and not is_valid:
        return _invalid("not in an assigned number range")
    dest_region = phonenumbers.region_code_for_number(parsed)
    if not dest_region or dest_region == "ZZ":
        return _invalid("no region for this number")
    e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    if _is_satellite(e164):
        number_type = NumberType.SATELLITE
    else:
        number_type = _FROM_PN.get(phonenumbers.number_type(parsed), NumberType.UNKNOWN)
    return NormalizedNumber(ok=True, e164=e164, region=dest_region, number_type=number_type, valid=is_valid)


# The cache's own controls, on the public function (tests and the benchmark use them).
normalize_destination.cache_info = _normalize.cache_info  # type: ignore[attr-defined]
normalize_destination.cache_clear = _normalize.cache_clear  # type: ignore[attr-defined]
