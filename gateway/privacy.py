"""Number masking for logs and metrics (`logging.mask_numbers`).

Only the country calling code and the last two digits survive, so that a log
line still tells the country and lets an operator match a complaint, but is
no longer a phone number. Reject reasons stay readable.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

# A phone number inside free text: an optional +, then digits with the usual
# visual separators. Only runs of 7 digits or more are treated as numbers, so
# durations ("14400 s") and statuses stay readable.
_NUMBER_IN_TEXT = re.compile(r"\+?\d[\d\-. ()]{5,}\d")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


@functools.lru_cache(maxsize=65536)
def mask_number(number: str | None) -> str | None:
    if not number:
        return number
    digits = [c for c in number if c.isdigit()]
    if number.startswith("+"):
        try:
            cc = phonenumbers.parse(number, None).country_code
        except phonenumbers.NumberParseException:
            cc = None
        if cc:
            hidden = max(0, len(digits) - len(str(cc)) - 2)
            return f"+{cc}{'x' * hidden}{''.join(digits[-2:])}"
    return "x" * max(0, len(digits) - 2) + "".join(digits[-2:])


def mask_numbers_in(text: str | None) -> str | None:
    """`text` with every phone number in it masked (explanations, traces, pjsip lines)."""
    if not text:
        return text

    def one(match: re.Match) -> str:
        found = match.group()
        if sum(c.isdigit() for c in found) < 7 or _IPV4.fullmatch(found):
            return found
        compact = ("+" if found.startswith("+") else "") + "".join(c for c in found if c.isdigit())
        return mask_number(compact)

    return _NUMBER_IN_TEXT.sub(one, text)
