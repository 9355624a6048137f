"""The imported directory: tenants and organisers from `dialout-gw directory import`.

Tables `tenants` and `organizers` keep each row as JSON with the same keys
as the TOML `[[tenants]]` / `[[organizers]]` tables; the policy layer
validates it when the gateway loads the directory.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

from store.core import StoreCore


class DataRow(NamedTuple):
    data: str  # JSON


class DirectoryMixin(StoreCore):
    def import_directory(self, tenants: list[dict[str, Any]], organizers: list[dict[str, Any]]) -> tuple[int, int]:
        """Upsert tenants and organisers (dicts with the TOML keys). Returns the counts."""
        now = datetime.now(UTC).timestamp()
        trows = [(str(t["id"]), json.dumps(t, sort_keys=True), now) for t in tenants]
        orows = [(str(o["id"]), str(o["tenant"]), json.dumps(o, sort_keys=True), now) for o in organizers]

        def fn() -> tuple[int, int]:
            if trows:
                self._xmany(
                    "INSERT INTO tenants (id, data, updated_at) VALUES (?, ?, ?) ON CONFLICT (id)"
                    " DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                    trows,
                )
            if orows:
                self._xmany(
                    "INSERT INTO organizers (id, tenant, data, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, data = excluded.data,"
                    " updated_at = excluded.updated_at",
                    orows,
                )
            return len(trows), len(orows)

        return self._run(fn)

    def directory_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """All imported (tenants, organizers), as dicts with the TOML keys, ordered by id."""

        def fn() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            tenants = [json.loads(r.data) for r in self._all(DataRow, "SELECT data FROM tenants ORDER BY id")]
            organizers = [json.loads(r.data) for r in self._all(DataRow, "SELECT data FROM organizers ORDER BY id")]
            return tenants, organizers

        return self._run(fn, write=False)
