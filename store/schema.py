"""Schema migrations: store/migrations/NNN_name[.dialect].sql, applied in order.

`migrate()` is idempotent and serialised across processes (an advisory lock
on PostgreSQL, BEGIN IMMEDIATE on SQLite); `schema_version` is table
`schema_version`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from store.core import StoreCore
from store.types import StoreError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(sqlite|postgresql))?\.sql$")


def load_migrations(dialect: str) -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) from store/migrations/NNN_name[.dialect].sql, in order.

    A dialect-specific file (NNN_name.sqlite.sql) wins over the shared one.
    """
    chosen: dict[int, tuple[str, Path, bool]] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            continue
        version, name, only = int(m.group(1)), m.group(2), m.group(3)
        if only and only != dialect:
            continue
        if version in chosen and not only:
            continue
        chosen[version] = (name, path, bool(only))
    out = []
    for version in sorted(chosen):
        name, path, _ = chosen[version]
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        statements = [s.strip() for s in text.split(";") if s.strip()]
        out.append((version, name, statements))
    return out


_CURRENT = "SELECT COALESCE(MAX(version), 0) FROM schema_version"


class SchemaMixin(StoreCore):
    def migrate(self) -> int:
        """Apply pending migrations; idempotent. Returns the schema version."""
        migrations = load_migrations(self.dialect)
        latest = migrations[-1][0] if migrations else 0

        def fn() -> int:
            self._lock_migrations()
            self._x(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = self._scalar(_CURRENT)
            if current > latest:
                raise StoreError(
                    f"database schema version {current} is newer than this gateway "
                    f"knows ({latest}); upgrade dialout-gateway"
                )
            now = datetime.now(UTC).timestamp()
            for version, name, statements in migrations:
                if version <= current:
                    continue
                for statement in statements:
                    self._x(statement)
                self._x("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)", (version, name, now))
                self.log.info("store_migrated", dialect=self.dialect, version=version, name=name)
            return latest

        return self._run(fn)

    def schema_version(self) -> int:
        """The applied schema version; 0 for an empty database."""

        def fn() -> int:
            if not self._table_exists("schema_version"):
                return 0
            version: int = self._scalar(_CURRENT)
            return version

        return self._run(fn, write=False)
