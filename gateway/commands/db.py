"""`dialout-gw db upgrade`: create or upgrade the ledger schema."""

from __future__ import annotations

import argparse

from gateway.cli import UserError

DESCRIPTION = """\
Apply the pending schema migrations to the store named by [store] url in the
config (SQLite file or PostgreSQL database) and print the schema version.
Idempotent and safe while gateways are running: migrations are serialised
(an advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite). The gateway also
runs them at startup. A relative sqlite:/// path is resolved against the
current directory.
"""

EPILOG = """\
examples:
  dialout-gw db upgrade --config examples/gateway.toml
  dialout-gw db version --config examples/gateway.toml

exit codes: 0 ok, 1 the database cannot be reached or upgraded, 2 bad usage or bad configuration.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="create or upgrade the ledger database schema",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, help_text in (
        ("upgrade", "apply pending migrations, print the schema version"),
        ("version", "print the schema version without changing anything"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config file")
        p.set_defaults(handler=handle)


class StoreUnavailable(Exception):
    pass


def open_configured_store(config_path: str):
    """(config, store) for a config file; operator mistakes become UserError."""
    from gateway.config import ConfigError, load_config
    from store import StoreError
    from store.settings import open_from_settings

    try:
        cfg = load_config(config_path)  # validates [store] with the rest of the file
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    settings = cfg.store
    try:
        store = open_from_settings(settings, log=_quiet_log())
    except StoreError as exc:
        raise StoreUnavailable(str(exc)) from None
    return cfg, store


class _QuietLog:
    """The CLI prints its own results; the store's log events would only clutter them."""

    def _drop(self, *args, **kwargs) -> None:
        return None

    debug = info = warning = error = _drop


def _quiet_log() -> _QuietLog:
    return _QuietLog()


def run_with_store(config_path: str, command: str, fn) -> int:
    """Open the configured store, run fn(cfg, store), report store failures as one line (exit 1)."""
    import sys

    from sip.privacy import redact_url
    from store import StoreError

    try:
        cfg, store = open_configured_store(config_path)
    except StoreUnavailable as exc:
        print(redact_url(f"dialout-gw {command}: {exc}"), file=sys.stderr)
        return 1
    try:
        return int(fn(cfg, store) or 0)
    except StoreError as exc:
        print(redact_url(f"dialout-gw {command}: {exc}"), file=sys.stderr)
        return 1
    finally:
        store.close()


def handle(args: argparse.Namespace) -> int:
    def fn(cfg, store) -> int:
        if args.db_command == "upgrade":
            before = store.schema_version()
            version = store.migrate()
            change = "up to date" if before == version else f"upgraded from {before}"
            print(f"schema version {version} ({store.dialect}, {change})")
        else:
            print(f"schema version {store.schema_version()} ({store.dialect})")
        return 0

    return run_with_store(args.config, "db", fn)
