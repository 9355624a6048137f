"""Number masking for the call path: `sip.privacy`, under its old name.

The masking and redaction functions live in `sip.privacy` (pure, stdlib
only), and `gateway.logs` applies them to every log line as structlog
processors, so no caller needs to mask by hand. The call-path modules that
still mask their own fields import them from here until they are rewritten;
masking twice is harmless (a masked value stays as it is).
"""

from sip.privacy import mask_number, mask_numbers_in

__all__ = ["mask_number", "mask_numbers_in"]
