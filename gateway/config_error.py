"""The one error the config schema raises (gateway/schema.py), in a module of
its own so that the schema and the loader (gateway/config.py) both import it
without importing each other."""

from __future__ import annotations

from typing import Any

_MISSING = object()


class ConfigValueError(ValueError):
    """A bad or missing value in the config. `key` is its path (`trunks[1].priority`).

    `str()` is one line: `<key>: expected <expected>, got <value>` (no file name:
    `load_config` adds it). Raised by the schema for every section.
    """

    def __init__(self, key: str, expected: str, got: Any = _MISSING) -> None:
        self.key = key
        self.expected = expected
        self.got = None if got is _MISSING else got
        message = f"{key}: expected {expected}" if key else f"expected {expected}"
        if got is not _MISSING:
            message += f", got {_show_value(key, got)}"
        super().__init__(message)


def _show_value(key: str, value: Any) -> str:
    if key.rsplit(".", 1)[-1] == "password":
        return "(hidden)"
    if isinstance(value, dict) and "password" in value:
        value = {**value, "password": "(hidden)"}
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"
