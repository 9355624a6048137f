"""The plugin's settings: the gateway's own TOML file, read by the gateway's own parsers.

One file serves both deployments, so a tenant, an organiser, a catalogue or
a ledger URL is written once. The plugin uses:

- the policy sections (`[policy]`, `[[tenants]]`, `[[organizers]]`), plus the
  directory imported into the ledger (`dialout-gw directory import`);
- `gateway.trusted_sources`, `gateway.untrusted` and `gateway.host` (rule 1,
  and the warn-agent of `Warning:`);
- the first trunk's `uri` (where relayed INVITEs go) and `answer_timeout_s`:
  `[trunk]`, or the first of `[[trunks]]` (choosing among several carriers
  is the job of Kamailio's `dispatcher` or `lcr` module there);
- `sip.headers` (the names of the bridge's `X-Dialout-*` headers);
- `[store]` (the ledger) and `[logging]` (level and number masking).

The gateway-only keys (`gateway.listen`, session timers, admission limits,
`trunk.caller_id`, `[metrics]`) are accepted and not used: Kamailio listens,
and its own modules (`pike`, `ratelimit`, `uac`) do those jobs. The file is
still validated by the one schema, so what it requires (a trunk's caller ID)
must be there, and the same file serves `dialout-gw run` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, config_from_data, read_toml
from gateway.settings import RuntimeSettings, SettingsError, runtime_settings

__all__ = ["ConfigError", "PluginSettings", "load_settings"]

# Where to listen is Kamailio's business (`listen=`, `-l`), so the plugin does
# not require `[gateway] listen`; the gateway's parser does, so that a file
# without it still goes through the very same validation, a placeholder
# stands in for it. It is never bound.
_UNUSED_LISTEN = [{"transport": "udp", "address": "127.0.0.1", "port": 5060}]


@dataclass(frozen=True, slots=True)
class PluginSettings:
    path: Path
    config: GatewayConfig  # the policy: directory + catalogue
    runtime: RuntimeSettings  # trunk, trusted sources, header names, store, logging

    @property
    def policy(self):  # -> policy.PolicySettings
        return self.config.policy

    @property
    def trunk_host(self) -> str:
        """host[:port][;params] of `trunk.uri`: the host part of every relayed Request-URI."""
        return self.runtime.trunk.uri.split(":", 1)[1]


def load_settings(path: str | Path, imported: tuple[list[dict], list[dict]] | None = None) -> PluginSettings:
    """Read and validate the gateway config at `path` for the plugin.

    Raises ConfigError with one line naming the file, the key and what was
    expected, exactly as `dialout-gw run --check` would.
    """
    path = Path(path)
    data = read_toml(path)
    gateway = data.get("gateway")
    if isinstance(gateway, dict) and "listen" not in gateway:
        data["gateway"] = {**gateway, "listen": _UNUSED_LISTEN}
    config = config_from_data(path, data, imported)
    try:
        runtime = runtime_settings(config.sections)
    except SettingsError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
    return PluginSettings(path=config.path, config=config, runtime=runtime)
