"""The `[store]` section of the gateway config, validated.

    [store]
    url = "sqlite:///var/ledger.db"   # relative SQLite paths resolve against the current directory
    heartbeat_s = 30                  # how often the gateway records that answered calls are up
    chunk_s = 300                     # talk seconds reserved per chunk
    instance_id = "gw-a"              # default: the host name; must be unique per running gateway
    credits_floor = 5.0               # credits_low alert when the balance left falls to this (default 0)
    alert_webhook = "https://ops.example/hooks/dialout"   # optional: alerts are POSTed here too
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from store.types import StoreError

DEFAULT_URL = "sqlite:///var/ledger.db"
KEYS = ("url", "heartbeat_s", "chunk_s", "instance_id", "credits_floor", "alert_webhook", "timeout_s", "linger_ms")


class StoreSettingsError(ValueError):
    """A bad [store] section: the message names the key and what was expected."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = DEFAULT_URL
    heartbeat_s: int = 30
    chunk_s: int = 300
    instance_id: str = ""
    credits_floor: float = 0.0
    alert_webhook: str | None = None
    timeout_s: float = 2.0     # a reservation not made by then: 503 + Retry-After, never a bridge timeout
    linger_ms: float = 1.0     # how long a ledger write waits for others to share its commit


def parse_store_section(section: dict[str, Any] | None, where: str = "store") -> StoreSettings:
    section = dict(section or {})
    for key in section:
        if key not in KEYS:
            raise StoreSettingsError(f"{where}.{key}: unknown key; expected one of {', '.join(KEYS)}")

    def positive_int(key: str, default: int) -> int:
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StoreSettingsError(f"{where}.{key}: expected a positive whole number of seconds, got {value!r}")
        return value

    url = section.get("url", DEFAULT_URL)
    if not isinstance(url, str) or not url.startswith(("sqlite:///", "postgresql://", "postgres://")) \
            or url == "sqlite:///":
        raise StoreSettingsError(f"{where}.url: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB, got {url!r}")
    instance_id = section.get("instance_id") or socket.gethostname()
    if not isinstance(instance_id, str):
        raise StoreSettingsError(f"{where}.instance_id: expected a string, got {instance_id!r}")
    floor = section.get("credits_floor", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or floor < 0:
        raise StoreSettingsError(f"{where}.credits_floor: expected a number >= 0, got {floor!r}")
    hook = section.get("alert_webhook")
    if hook is not None and (not isinstance(hook, str) or not hook.startswith(("http://", "https://"))):
        raise StoreSettingsError(f"{where}.alert_webhook: expected an http:// or https:// URL, got {hook!r}")
    timeout = section.get("timeout_s", 2.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.05 <= timeout <= 30:
        raise StoreSettingsError(f"{where}.timeout_s: expected seconds between 0.05 and 30, got {timeout!r}")
    linger = section.get("linger_ms", 1.0)
    if isinstance(linger, bool) or not isinstance(linger, (int, float)) or not 0 <= linger <= 50:
        raise StoreSettingsError(f"{where}.linger_ms: expected milliseconds between 0 and 50, got {linger!r}")
    return StoreSettings(url=url, heartbeat_s=positive_int("heartbeat_s", 30), chunk_s=positive_int("chunk_s", 300),
                         instance_id=instance_id, credits_floor=float(floor), alert_webhook=hook,
                         timeout_s=float(timeout), linger_ms=float(linger))


def open_from_settings(settings: StoreSettings, *, log=None):
    """open_store() with the settings of a [store] section."""
    from store.factory import open_store

    return open_store(settings.url, instance_id=settings.instance_id, chunk_s=settings.chunk_s, log=log,
                      credits_floor=settings.credits_floor, alert_webhook=settings.alert_webhook)


__all__ = ["StoreSettings", "StoreSettingsError", "StoreError", "parse_store_section", "open_from_settings"]
