"""`open_store(url)`: the backend that a store URL names."""

from __future__ import annotations

import socket

from store.base import Store, StoreOptions
from store.core import Logger
from store.types import StoreError


def open_store(
    url: str,
    *,
    instance_id: str | None = None,
    chunk_s: int = 300,
    log: Logger | None = None,
    credits_floor: float = 0.0,
    alert_webhook: str | None = None,
) -> Store:
    """Open the store named by `url`.

    - ``sqlite:///relative/path.db`` (relative to the current directory),
      ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``; the parent
      directory is created.
    - ``postgresql://user[:password]@host:port/dbname[?options]`` (psycopg conninfo URL).

    Raises StoreError for a bad URL or a database that cannot be reached.
    The schema is not touched: call `migrate()` (the gateway does at startup).
    """
    common: StoreOptions = {
        "instance_id": instance_id or socket.gethostname(),
        "chunk_s": chunk_s,
        "log": log,
        "credits_floor": credits_floor,
        "alert_webhook": alert_webhook,
    }
    if not isinstance(url, str) or not url:
        raise StoreError("store url is empty; expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise StoreError(
                f"bad SQLite store url {url!r}; expected sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        from store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :], **common)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise StoreError(f"PostgreSQL store needs psycopg 3: {exc}") from None
        return PostgresStore(url, **common)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StoreError(
        f"unsupported store url scheme {scheme!r}; expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )
