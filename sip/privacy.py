"""What may not leave the gateway in clear: phone numbers and URL passwords.

Pure functions, stdlib only. `gateway.logs` applies them once, as structlog
processors, to every log line; the CLI uses `redact_url` on its error
messages.

Phone numbers (`logging.mask_numbers`): only the country calling code and the
last two digits survive, so that a log line still tells the country and lets
an operator match a complaint, but is no longer a phone number. Masking is
stable (one number, one mask) and idempotent (a masked value stays as it is),
so a value masked by its caller and again by the log processor comes out the
same.

URL passwords: `scheme://user:secret@host` becomes `scheme://user:***@host`,
always, wherever the URL is.
"""

from __future__ import annotations

import functools
import re

# ITU-T E.164 country calling codes (as known to phonenumbers 9.0). They form a
# prefix code: no code is the beginning of another, so the first 1, 2 or 3
# digits of an international number name at most one.
_COUNTRY_CODES = frozenset(
    [
        "1",
        "7",
        "20",
        "27",
        "30",
        "31",
        "32",
        "33",
        "34",
        "36",
        "39",
        "40",
        "41",
        "43",
        "44",
        "45",
        "46",
        "47",
        "48",
        "49",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "81",
        "82",
        "84",
        "86",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "98",
        "211",
        "212",
        "213",
        "216",
        "218",
        "220",
        "221",
        "222",
        "223",
        "224",
        "225",
        "226",
        "227",
        "228",
        "229",
        "230",
        "231",
        "232",
        "233",
        "234",
        "235",
        "236",
        "237",
        "238",
        "239",
        "240",
        "241",
        "242",
        "243",
        "244",
        "245",
        "246",
        "247",
        "248",
        "249",
        "250",
        "251",
        "252",
        "253",
        "254",
        "255",
        "256",
        "257",
        "258",
        "260",
        "261",
        "262",
        "263",
        "264",
        "265",
        "266",
        "267",
        "268",
        "269",
        "290",
        "291",
        "297",
        "298",
        "299",
        "350",
        "351",
        "352",
        "353",
        "354",
        "355",
        "356",
        "357",
        "358",
        "359",
        "370",
        "371",
        "372",
        "373",
        "374",
        "375",
        "376",
        "377",
        "378",
        "380",
        "381",
        "382",
        "383",
        "385",
        "386",
        "387",
        "389",
        "420",
        "421",
        "423",
        "500",
        "501",
        "502",
        "503",
        "504",
        "505",
        "506",
        "507",
        "508",
        "509",
        "590",
        "591",
        "592",
        "593",
        "594",
        "595",
        "596",
        "597",
        "598",
        "599",
        "670",
        "672",
        "673",
        "674",
        "675",
        "676",
        "677",
        "678",
        "679",
        "680",
        "681",
        "682",
        "683",
        "685",
        "686",
        "687",
        "688",
        "689",
        "690",
        "691",
        "692",
        "800",
        "808",
        "850",
        "852",
        "853",
        "855",
        "856",
        "870",
        "878",
        "880",
        "881",
        "882",
        "883",
        "886",
        "888",
        "960",
        "961",
        "962",
        "963",
        "964",
        "965",
        "966",
        "967",
        "968",
        "970",
        "971",
        "972",
        "973",
        "974",
        "975",
        "976",
        "977",
        "979",
        "992",
        "993",
        "994",
        "995",
        "996",
        "998",
    ]
)

# What mask_number writes: an optional +code, hidden digits, at most two kept.
_MASKED = re.compile(r"(?:\+\d{1,3})?x+\d{0,2}")

# A phone number inside free text: an optional +, then digits with the usual
# visual separators. Only runs of 7 digits or more are treated as numbers, so
# durations ("14400 s") and statuses stay readable.
_NUMBER_IN_TEXT = re.compile(r"\+?\d[\d\-. ()]{5,}\d")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_SECONDS = re.compile(r"\d\d\.\d+")  # the seconds of a clock time, after a ':'


def country_code(e164: str) -> str | None:
    """The country calling code that begins `e164` ('+' and separators allowed), or None."""
    digits = "".join(c for c in e164 if c.isdigit())
    for n in (1, 2, 3):
        if digits[:n] in _COUNTRY_CODES:
            return digits[:n]
    return None


def mask_number(number: str | None) -> str | None:
    """One phone number, masked: `+33142685300` -> `+33xxxxxxx00`.

    An international number (`+…`, also inside a `tel:` URI) keeps its
    country calling code; anything else keeps only its last two digits
    (`0142685300` -> `xxxxxxxx00`, `112` -> `x12`). A `tel:` URI keeps its
    scheme and its parameters, with numbers in them masked. None and ""
    pass through; an already masked value is returned as it is.
    """
    if not number:
        return number
    if number[:4].lower() == "tel:":
        core, sep, params = number[4:].partition(";")
        return number[:4] + _mask_plain(core) + sep + (mask_numbers_in(params) or "")
    return _mask_plain(number)


@functools.lru_cache(maxsize=65536)
def _mask_plain(number: str) -> str:
    if "x" in number and _MASKED.fullmatch(number):
        return number
    digits = "".join(c for c in number if c.isdigit())
    cc = country_code(digits) if number.lstrip().startswith("+") else None
    if cc:
        rest = digits[len(cc) :]
        kept = rest[-2:]
        return f"+{cc}{'x' * (len(rest) - len(kept))}{kept}"
    kept = digits[-2:]
    return "x" * (len(digits) - len(kept)) + kept


def mask_numbers_in(text: str | None) -> str | None:
    """`text` with every phone number in it masked (explanations, traces, pjsip lines).

    Runs of fewer than 7 digits, IPv4 addresses, ISO dates and the seconds of
    a clock time are left alone.
    """
    if not text:
        return text

    def one(match: re.Match[str]) -> str:
        start = match.start()
        if start and text[start - 1] == ":" and _SECONDS.fullmatch(match.group()):
            return str(match.group())
        return _mask_found(match.group())

    return _NUMBER_IN_TEXT.sub(one, text)


@functools.lru_cache(maxsize=65536)
def _mask_found(found: str) -> str:
    """A candidate number found in text, masked (or left alone if it is not a number)."""
    if sum(c.isdigit() for c in found) < 7 or _IPV4.fullmatch(found) or _ISO_DATE.fullmatch(found):
        return found
    compact = ("+" if found.startswith("+") else "") + "".join(c for c in found if c.isdigit())
    return _mask_plain(compact)


# scheme://user:password@ -- the password runs to the last '@' before the
# path, query or fragment, so an unescaped '@' in it is hidden too.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^/?#\s]*@")


def redact_url(text: str | None) -> str | None:
    """`text` (a URL, or a message that contains URLs) with every password in
    a URL replaced by `***`: `postgresql://gw:s3cret@db/ledger` ->
    `postgresql://gw:***@db/ledger`. Idempotent; None and "" pass through."""
    if not text or "://" not in text:
        return text
    return _URL_PASSWORD.sub(r"\1:***@", text)


__all__ = ["country_code", "mask_number", "mask_numbers_in", "redact_url"]
