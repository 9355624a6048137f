"""Load the gateway's one TOML config file.

The policy part (`[policy]`, `[[tenants]]`, `[[organizers]]`) is parsed and
validated here into frozen objects. The other sections are kept as plain
tables in `raw_sections` for the parts of the gateway that own them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep `dialout-gw --help` free of phonenumbers
    from policy.model import PolicySettings

POLICY_SECTIONS = ("policy", "tenants", "organizers")
RAW_SECTIONS = ("gateway", "trunk", "sip", "store", "logging", "metrics")


class ConfigError(Exception):
    """A config file that cannot be used: names the file, the key and what was expected."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    policy: PolicySettings  # directory + catalogue, what `policy.decide` takes
    raw_sections: dict[str, dict[str, Any]]

    @property
    def directory(self) -> dict[str, Any]:
        """Tenants and organisers, keyed by casefolded id."""
        return {"tenants": self.policy.tenants, "organizers": self.policy.organizers}

    @property
    def catalogue(self):  # -> policy.model.Catalogue
        return self.policy.catalogue


def _merge_imported(data: dict[str, Any], imported: tuple[list[dict], list[dict]]) -> dict[str, Any]:
    """Add directory rows imported into the ledger (`dialout-gw directory import`)
    after the file's own; an id the file already defines keeps the file's row."""
    merged = dict(data)
    for key, rows in zip(("tenants", "organizers"), imported):
        own = list(data.get(key, []))
        ids = {str(row.get("id", "")).strip().casefold() for row in own if isinstance(row, dict)}
        merged[key] = own + [row for row in rows if str(row.get("id", "")).strip().casefold() not in ids]
    return merged


def load_config(path: str | Path, imported: tuple[list[dict], list[dict]] | None = None) -> GatewayConfig:
    """Read, parse and validate `path`. Raises ConfigError with a one-line message.

    `imported` is (tenants, organizers) from the ledger's directory tables; they
    are validated by the same rules as the file's own rows.
    """
    from policy.config import PolicyConfigError, parse_policy_sections

    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None

    known = POLICY_SECTIONS + RAW_SECTIONS
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: {key}: unknown top-level key; expected one of {', '.join(known)}")
    raw: dict[str, dict[str, Any]] = {}
    for key in RAW_SECTIONS:
        if key in data:
            if not isinstance(data[key], dict):
                raise ConfigError(f"{path}: {key}: expected a table [{key}], got {data[key]!r}")
            raw[key] = data[key]
    if imported and any(imported):
        data = _merge_imported(data, imported)
    try:
        settings = parse_policy_sections(data)
    except PolicyConfigError as exc:
        where = " (the file's rows, then those imported into the ledger)" if imported and any(imported) else ""
        raise ConfigError(f"{path}: {exc}{where}") from None
    return GatewayConfig(path=path, policy=settings, raw_sections=raw)
