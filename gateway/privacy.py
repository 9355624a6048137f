"""Number masking for logs and metrics (`logging.mask_numbers`).

Only the country calling code and the last two digits survive, so that a log
line still tells the country and lets an operator match a complaint, but is
no longer a phone number. Reject reasons stay readable.
"""

from __future__ import annotations

import functools

import phonenumbers


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
