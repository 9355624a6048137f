"""`dialout-gw directory import`: load tenants and organisers into the store."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from gateway.cli import UserError

DESCRIPTION = """\
Load tenants and organisers from CSV or JSON files into the store, for
directories too big for the TOML file. Rows are upserted by id. The keys are
those of the TOML [[tenants]] and [[organizers]] tables:

  tenants:    id, name, timezone, subscription_licences, pay_per_minute_licences,
              credits = {enabled, balance}   (CSV: credits_enabled, credits_balance)
  organizers: id, tenant, usage_location, audio_conferencing, usca_addon,
              credits_licence, dialout_policy

JSON: {"tenants": [...], "organizers": [...]}. CSV: one kind per file with a
header row; a file whose header has a `tenant` column holds organisers,
otherwise tenants (or say so with --kind). Empty CSV cells are left out.
Rows are checked for required keys and types here; the policy checks the
values (timezones, regions, policy names) when it loads the directory.
"""

EPILOG = """\
examples:
  dialout-gw directory import --config examples/gateway.toml tenants.csv organizers.csv
  dialout-gw directory import --config examples/gateway.toml directory.json

exit codes: 0 imported, 1 the database cannot be written, 2 bad usage, bad config or a bad row (nothing imported).
"""

TENANT_KEYS = ("id", "name", "timezone", "subscription_licences", "pay_per_minute_licences", "credits")
TENANT_CSV_KEYS = (
    "id",
    "name",
    "timezone",
    "subscription_licences",
    "pay_per_minute_licences",
    "credits_enabled",
    "credits_balance",
)
ORGANIZER_KEYS = (
    "id",
    "tenant",
    "usage_location",
    "audio_conferencing",
    "usca_addon",
    "credits_licence",
    "dialout_policy",
)
BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "directory",
        help="import tenants and organisers from CSV or JSON",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="directory_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "import",
        help="upsert tenants and organisers from files",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config file")
    p.add_argument(
        "--kind", choices=("tenants", "organizers"), help="what the CSV files hold (default: from the header)"
    )
    p.add_argument("files", nargs="+", metavar="IMPORTFILE", help="a .csv or .json file")
    p.set_defaults(handler=handle)


class RowError(UserError):
    pass


def _fail(where: str, key: str | None, expected: str, got: Any = None, *, missing: bool = False) -> RowError:
    at = f"{where}: key {key!r}" if key else where
    if missing:
        return RowError(f"{at}: required, {expected}")
    return RowError(f"{at}: expected {expected}, got {got!r}")


def _check_str(row: dict, key: str, where: str, *, required: bool = False) -> None:
    if key not in row:
        if required:
            raise _fail(where, key, "a non-empty string", missing=True)
        return
    if not isinstance(row[key], str) or not row[key].strip():
        raise _fail(where, key, "a non-empty string", row[key])


def _check_int(row: dict, key: str, where: str) -> None:
    if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int) or row[key] < 0):
        raise _fail(where, key, "a whole number >= 0", row[key])


def _check_bool(row: dict, key: str, where: str) -> None:
    if key in row and not isinstance(row[key], bool):
        raise _fail(where, key, "true or false", row[key])


def validate_tenant(row: Any, where: str) -> dict:
    if not isinstance(row, dict):
        raise _fail(where, None, "an object", row)
    for key in row:
        if key not in TENANT_KEYS:
            raise _fail(where, key, f"one of the keys {', '.join(TENANT_KEYS)}", key)
    _check_str(row, "id", where, required=True)
    _check_str(row, "name", where)
    _check_str(row, "timezone", where)
    _check_int(row, "subscription_licences", where)
    _check_int(row, "pay_per_minute_licences", where)
    if "credits" in row:
        credits = row["credits"]
        if not isinstance(credits, dict) or set(credits) - {"enabled", "balance"}:
            raise _fail(where, "credits", "an object {enabled, balance}", credits)
        _check_bool(credits, "enabled", f"{where}: credits")
        balance = credits.get("balance", 0)
        if isinstance(balance, bool) or not isinstance(balance, (int, float)) or balance < 0:
            raise _fail(where, "credits.balance", "a number >= 0", balance)
    return row


def validate_organizer(row: Any, where: str) -> dict:
    if not isinstance(row, dict):
        raise _fail(where, None, "an object", row)
    for key in row:
        if key not in ORGANIZER_KEYS:
            raise _fail(where, key, f"one of the keys {', '.join(ORGANIZER_KEYS)}", key)
    _check_str(row, "id", where, required=True)
    _check_str(row, "tenant", where, required=True)
    for key in ("usage_location", "audio_conferencing", "dialout_policy"):
        _check_str(row, key, where)
    _check_bool(row, "usca_addon", where)
    _check_bool(row, "credits_licence", where)
    return row


def _csv_value(key: str, text: str, where: str) -> Any:
    if key in ("subscription_licences", "pay_per_minute_licences"):
        try:
            return int(text)
        except ValueError:
            raise _fail(where, key, "a whole number >= 0", text) from None
    if key in ("credits_enabled", "usca_addon", "credits_licence"):
        try:
            return BOOL_WORDS[text.strip().lower()]
        except KeyError:
            raise _fail(where, key, "true or false (yes/no, 1/0)", text) from None
    if key == "credits_balance":
        try:
            return float(text)
        except ValueError:
            raise _fail(where, key, "a number >= 0", text) from None
    return text.strip()


def read_csv(path: Path, kind: str | None) -> tuple[list[dict], list[dict]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise UserError(f"{path}: empty CSV file; expected a header row")
            kind = kind or ("organizers" if "tenant" in header else "tenants")
            allowed = ORGANIZER_KEYS if kind == "organizers" else TENANT_CSV_KEYS
            for column in header:
                if column not in allowed:
                    raise UserError(
                        f"{path}: header: unknown column {column!r} for {kind}; expected some of {', '.join(allowed)}"
                    )
            rows = []
            for raw in reader:
                where = f"{path} row {reader.line_num}"
                if None in raw:
                    raise RowError(f"{where}: more cells than header columns")
                row = {}
                for key, text in raw.items():
                    key = key.strip()
                    if text is None or text.strip() == "":
                        continue
                    row[key] = _csv_value(key, text, where)
                if kind == "tenants" and ("credits_enabled" in row or "credits_balance" in row):
                    credits = {"enabled": row.pop("credits_enabled", False)}
                    if "credits_balance" in row:
                        credits["balance"] = row.pop("credits_balance")
                    row["credits"] = credits
                rows.append((validate_organizer if kind == "organizers" else validate_tenant)(row, where))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable UTF-8 CSV file: {exc}") from None
    return (rows, []) if kind == "tenants" else ([], rows)


def read_json(path: Path) -> tuple[list[dict], list[dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"tenants", "organizers"}:
        raise UserError(f'{path}: expected an object {{"tenants": [...], "organizers": [...]}}')
    out = []
    for key, check in (("tenants", validate_tenant), ("organizers", validate_organizer)):
        rows = data.get(key, [])
        if not isinstance(rows, list):
            raise UserError(f"{path}: {key}: expected a list, got {type(rows).__name__}")
        out.append([check(row, f"{path} {key}[{i}]") for i, row in enumerate(rows)])
    return out[0], out[1]


def read_files(files: list[str], kind: str | None) -> tuple[list[dict], list[dict]]:
    tenants: list[dict] = []
    organizers: list[dict] = []
    for name in files:
        path = Path(name)
        suffix = path.suffix.lower()
        if suffix == ".json":
            t, o = read_json(path)
        elif suffix == ".csv":
            t, o = read_csv(path, kind)
        else:
            raise UserError(f"{path}: unknown file type; expected .csv or .json")
        tenants += t
        organizers += o
    for label, rows in (("tenant", tenants), ("organizer", organizers)):
        seen: set[str] = set()
        for row in rows:
            folded = row["id"].strip().casefold()
            if folded in seen:
                raise UserError(f"{label} {row['id']!r} appears twice in the import")
            seen.add(folded)
    return tenants, organizers


def handle(args: argparse.Namespace) -> int:
    from gateway.commands.db import run_with_store

    tenants, organizers = read_files(args.files, args.kind)  # validate everything before touching the store

    def fn(cfg, store) -> int:
        # The same semantic checks the gateway applies when it loads them.
        from gateway.cli import UserError
        from gateway.config import ConfigError, load_config

        try:
            load_config(args.config, imported=(tenants, organizers))
        except ConfigError as exc:
            raise UserError(f"the import would not load: {exc}") from None
        store.migrate()
        n_tenants, n_organizers = store.import_directory(tenants, organizers)
        print(f"imported {n_tenants} tenants and {n_organizers} organizers")
        return 0

    return run_with_store(args.config, "directory", fn)
