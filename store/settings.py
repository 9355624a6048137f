"""The `[store]` section of the gateway config, as the ledger reads it.

    [store]
    url = "sqlite:///var/ledger.db"   # relative SQLite paths resolve against the current directory
    heartbeat_s = 30                  # how often the gateway records that answered calls are up
    chunk_s = 300                     # talk seconds reserved per chunk
    instance_id = "gw-a"              # default: the host name; must be unique per running gateway
    credits_floor = 5.0               # credits_low alert when the balance left falls to this (default 0)
    alert_webhook = "https://ops.example/hooks/dialout"   # optional: alerts are POSTed here too

The keys, their types and bounds are declared once, with every other
section's, in the config schema (`gateway.schema.StoreSection`; the table is
in docs/config.md). `store_settings` turns the validated section into the
frozen `StoreSettings`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from store.types import StoreError

if TYPE_CHECKING:  # annotations only: the settings need none of the store at run time
    from store.base import Store
    from store.core import Logger

DEFAULT_URL = "sqlite:///var/ledger.db"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = DEFAULT_URL
    heartbeat_s: int = 30
    chunk_s: int = 300
    instance_id: str = ""
    credits_floor: float = 0.0
    alert_webhook: str | None = None
    timeout_s: float = 2.0  # a reservation not made by then: 503 + Retry-After, never a bridge timeout
    linger_ms: float = 1.0  # how long a ledger write waits for others to share its commit


def store_settings(section: Any) -> StoreSettings:
    """StoreSettings from a validated `[store]` section (`gateway.schema.StoreSection`):
    an empty `instance_id` is this machine's host name."""
    return StoreSettings(
        url=section.url,
        heartbeat_s=section.heartbeat_s,
        chunk_s=section.chunk_s,
        instance_id=section.instance_id or socket.gethostname(),
        credits_floor=float(section.credits_floor),
        alert_webhook=section.alert_webhook,
        timeout_s=float(section.timeout_s),
        linger_ms=float(section.linger_ms),
    )


def open_from_settings(settings: StoreSettings, *, log: Logger | None = None) -> Store:
    """open_store() with the settings of a [store] section."""
    from store.factory import open_store

    return open_store(
        settings.url,
        instance_id=settings.instance_id,
        chunk_s=settings.chunk_s,
        log=log,
        credits_floor=settings.credits_floor,
        alert_webhook=settings.alert_webhook,
    )


__all__ = ["StoreError", "StoreSettings", "open_from_settings", "store_settings"]
