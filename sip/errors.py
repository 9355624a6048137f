"""The one exception the pure SIP layer raises for bad input."""

from __future__ import annotations

__all__ = ["SipParseError"]


class SipParseError(ValueError):
    """A SIP message, header or URI that cannot be accepted.

    ``reason`` is a short, log-safe English phrase (it never echoes the
    offending bytes). ``status`` is the SIP status a UAS should answer with,
    in the spirit of h11's ``error_status_hint``: 400 by default, 505 for an
    unsupported SIP version, 416 for an unsupported URI scheme.
    """

    __slots__ = ("reason", "status")

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"
