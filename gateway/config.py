"""Load the gateway's one TOML config file.

The whole file is validated against the one config schema (`gateway/schema.py`,
pydantic: every section, every key; docs/config.md is generated from it). The
policy part (`[policy]`, `[[tenants]]`, `[[organizers]]`) is then built into
frozen objects here; `GatewayConfig.sections` keeps the validated file for
`gateway.settings.runtime_settings` (what `dialout-gw run` also needs), and
`raw_sections` the runtime tables as written.

Every error is one line that names the file, the key path and what was
expected: `gw.toml: trunks[1].priority: expected an integer >= 0 and <= 1000, got -3`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config_error import ConfigValueError

if TYPE_CHECKING:  # keep `dialout-gw --help` free of phonenumbers and pydantic
    from gateway.schema import ConfigFile
    from policy.model import PolicySettings
    from store.settings import StoreSettings

RAW_SECTIONS = ("gateway", "trunk", "trunks", "sip", "store", "logging", "metrics")


class ConfigError(Exception):
    """A config file that cannot be used: names the file, the key and what was expected."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    policy: PolicySettings  # directory + catalogue, what `policy.decide` takes
    raw_sections: dict[str, Any]  # the runtime sections as written (RAW_SECTIONS)
    sections: ConfigFile | None = None  # the whole file, validated (gateway.schema.ConfigFile)

    @property
    def directory(self) -> dict[str, Any]:
        """Tenants and organisers, keyed by casefolded id."""
        return {"tenants": self.policy.tenants, "organizers": self.policy.organizers}

    @property
    def catalogue(self):  # -> policy.model.Catalogue
        return self.policy.catalogue

    @property
    def store(self) -> StoreSettings:
        """The `[store]` section (defaults when absent)."""
        from store.settings import store_settings

        return store_settings(self.sections.store)


def _merge_imported(data: dict[str, Any], imported: tuple[list[dict], list[dict]]) -> dict[str, Any]:
    """Add directory rows imported into the ledger (`dialout-gw directory import`)
    after the file's own; an id the file already defines keeps the file's row."""
    merged = dict(data)
    for key, rows in zip(("tenants", "organizers"), imported):
        own = data.get(key, [])
        if not isinstance(own, list):
            continue  # the schema says what is wrong with it
        ids = {str(row.get("id", "")).strip().casefold() for row in own if isinstance(row, dict)}
        merged[key] = own + [row for row in rows if str(row.get("id", "")).strip().casefold() not in ids]
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file as a dict; raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def load_config(path: str | Path, imported: tuple[list[dict], list[dict]] | None = None) -> GatewayConfig:
    """Read, parse and validate `path`. Raises ConfigError with a one-line message.

    `imported` is (tenants, organizers) from the ledger's directory tables; they
    are validated by the same schema as the file's own rows, after them.
    """
    path = Path(path)
    return config_from_data(path, read_toml(path), imported)


def config_from_data(
    path: Path, data: dict[str, Any], imported: tuple[list[dict], list[dict]] | None = None
) -> GatewayConfig:
    """load_config() for TOML already read from `path` (the Kamailio plugin fills in
    a key the gateway requires and Kamailio does not use)."""
    from gateway.schema import validate
    from policy.config import build_policy_settings

    raw = {key: data[key] for key in RAW_SECTIONS if key in data}
    if imported and any(imported):
        data = _merge_imported(data, imported)
    try:
        sections = validate(data)
    except ConfigValueError as exc:
        where = ""
        if imported and any(imported) and exc.key.split("[", 1)[0] in ("tenants", "organizers"):
            where = " (the file's rows, then those imported into the ledger)"
        raise ConfigError(f"{path}: {exc}{where}") from None
    return GatewayConfig(path=path, policy=build_policy_settings(sections), raw_sections=raw, sections=sections)


def parse_policy_sections(data: dict[str, Any]) -> PolicySettings:
    """`PolicySettings` from a TOML-shaped dict (other sections are validated too, and
    then ignored). Raises ConfigValueError naming the key path."""
    from gateway.schema import validate
    from policy.config import build_policy_settings

    return build_policy_settings(validate(data))
