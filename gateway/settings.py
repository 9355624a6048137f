"""Typed runtime settings: the `[gateway]`, `[trunk]`/`[[trunks]]`, `[sip]`,
`[store]`, `[logging]` and `[metrics]` sections of the config file.

Every key is declared, with its type, bounds and meaning, in the one config
schema (`gateway/schema.py`; docs/config.md is generated from it). This
module turns the validated sections into the frozen objects the gateway
reads, and resolves what depends on the machine: the host name defaults and
the trunks' `password_env` variables.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigValueError
from sip import HeaderNames
from store.settings import StoreSettings, store_settings

if TYPE_CHECKING:  # pydantic and phonenumbers load when settings are parsed, not when imported
    from gateway.schema import ConfigFile
    from policy.routing import Trunk

#: A bad value in a runtime section; `key` is the dotted path. (One error type for every section.)
SettingsError = ConfigValueError


class TrunkCheckError(ConfigValueError):
    """An error that `policy.routing.check_trunks` found (e.g. an unset `password_env`)."""

    def __init__(self, finding: str) -> None:
        key, _, text = finding.removeprefix("error: ").partition(": ")
        ValueError.__init__(self, f"{key}: {text}")
        self.key, self.expected, self.got = key, text, None


@dataclass(frozen=True, slots=True)
class Listener:
    transport: str  # "udp" | "tcp" | "tls"
    address: str
    port: int
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class TrunkSettings:
    """The first configured trunk, as the single-trunk relay reads it. Prefer
    `RuntimeSettings.trunks` with `policy.routing.route`; `caller_id` here is
    already the effective one (the trunk's, else `gateway.caller_id`)."""

    uri: str
    caller_id: str
    answer_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"
    format: str = "auto"
    pjsip_level: int = 1
    mask_numbers: bool = False
    # Extra free-text fields to mask numbers in, besides gateway.logs.TEXT_FIELDS.
    mask_fields: tuple[str, ...] = ()
    # Admission refusals are logged at most this often per source address.
    refusal_log_interval_s: float = 10.0


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: str = "127.0.0.1"
    port: int = 0  # 0 disables the HTTP endpoint


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    listeners: tuple[Listener, ...]
    trusted_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    trunk: TrunkSettings
    gateway_host: str = "dialout-gw"
    require_tls: bool = False
    untrusted: str = "drop"  # "drop" (nothing back) or "reject" (one stateless 403)
    server_header: str = ""  # Server/User-Agent value; none by default (no fingerprint)
    max_concurrent_calls: int = 3000
    max_calls_per_second: float = 500.0
    drain_timeout_s: float = 30.0
    session_expires_s: int = 1800
    min_se_s: int = 90
    headers: HeaderNames = field(default_factory=HeaderNames)
    t1_ms: int = 500  # RFC 3261 T1; Timer B/F/H (no answer, no ACK) are 64*T1
    store: StoreSettings = field(default_factory=StoreSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # Every trunk, in config order: `[[trunks]]`, or the `[trunk]` shorthand as one
    # trunk named "trunk" with destinations ("*",). Order them per call with
    # policy.routing.route(); choose the From with policy.routing.caller_id_for().
    trunks: tuple[Trunk, ...] = ()
    caller_id: str = ""  # the default caller ID: gateway.caller_id, else [trunk].caller_id
    # pjsip's DNS servers, "system" expanded from /etc/resolv.conf; empty: the
    # system resolver (getaddrinfo) in a worker thread.
    nameservers: tuple[tuple[str, int], ...] = ()


def parse_runtime_settings(
    sections: Mapping[str, Any], *, environ: Mapping[str, str] | None = None, strict: bool = True
) -> RuntimeSettings:
    """RuntimeSettings from the raw TOML tables; raises SettingsError (ConfigValueError).

    The tables are validated by the config schema first (`gateway.config.load_config`
    has done that already for a file: use `runtime_settings(config.sections)`)."""
    from gateway.schema import validate

    return runtime_settings(validate(dict(sections)), environ=environ, strict=strict)


def runtime_settings(
    spec: ConfigFile, *, environ: Mapping[str, str] | None = None, strict: bool = True
) -> RuntimeSettings:
    """RuntimeSettings from a validated file. `dialout-gw run` needs `[gateway]` and a trunk.

    `environ` (default: os.environ) gives the trunks' `password_env` secrets. With
    `strict`, the first error `check_trunks` finds (such as an unset variable) raises
    TrunkCheckError; without, the trunks are built anyway and `run --check` lists them all.
    """
    from policy.routing import check_trunks

    gw = spec.gateway
    if gw is None:
        raise SettingsError("gateway", "a [gateway] table with listen and trusted_sources")
    if spec.trunk is None and not spec.trunks:
        raise SettingsError("trunk", "a [trunk] table, or [[trunks]] entries (see docs/routing.md)")
    environ = os.environ if environ is None else environ
    trunks = _trunks(spec, environ)
    if strict:
        for finding in check_trunks(trunks):
            if finding.startswith("error: "):
                raise TrunkCheckError(finding)
    default_caller_id = gw.caller_id or (spec.trunk.caller_id if spec.trunk is not None else None) or ""
    first = trunks[0]
    lg, mt = spec.logging, spec.metrics
    return RuntimeSettings(
        listeners=tuple(Listener(li.transport, li.address, li.port, li.cert_file, li.key_file) for li in gw.listen),
        trusted_sources=tuple(ipaddress.ip_network(cidr, strict=False) for cidr in gw.trusted_sources),
        trunk=TrunkSettings(
            uri=first.uri, caller_id=first.caller_id or default_caller_id, answer_timeout_s=first.answer_timeout_s
        ),
        gateway_host=gw.host or socket.gethostname(),
        require_tls=gw.require_tls,
        untrusted=gw.untrusted,
        server_header=gw.server_header,
        max_concurrent_calls=gw.max_concurrent_calls,
        max_calls_per_second=float(gw.max_calls_per_second),
        drain_timeout_s=float(gw.drain_timeout_s),
        session_expires_s=gw.session_expires_s,
        min_se_s=gw.min_se_s,
        headers=HeaderNames(**spec.sip.headers.model_dump()),
        t1_ms=spec.sip.t1_ms,
        store=store_settings(spec.store),
        logging=LoggingSettings(
            level=lg.level,
            format=lg.format,
            pjsip_level=lg.pjsip_level,
            mask_numbers=lg.mask_numbers,
            mask_fields=tuple(lg.mask_fields),
            refusal_log_interval_s=float(lg.refusal_log_interval_s),
        ),
        metrics=MetricsSettings(address=mt.address, port=mt.port),
        trunks=trunks,
        caller_id=default_caller_id,
        nameservers=_nameservers(spec.sip.nameservers),
    )


def _nameservers(entries: list[str], resolv_conf: str = "/etc/resolv.conf") -> tuple[tuple[str, int], ...]:
    from gateway.schema import parse_nameserver

    out: list[tuple[str, int]] = []
    for entry in entries:
        if entry != "system":
            out.append(parse_nameserver(entry))
            continue
        try:
            lines = Path(resolv_conf).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    out.append(parse_nameserver(words[1].split("%", 1)[0]))
                except ValueError:
                    pass
    return tuple(dict.fromkeys(out))[:4]  # pjsip takes at most 4, first ones first


def _trunks(spec: ConfigFile, environ: Mapping[str, str]) -> tuple[Trunk, ...]:
    from policy.routing import ANY_DESTINATION, Trunk

    if spec.trunk is not None:
        entries = [("trunk", spec.trunk, (ANY_DESTINATION,), 0, 1)]
    else:
        entries = [(f"trunks[{i}]", t, tuple(t.destinations), t.priority, t.weight) for i, t in enumerate(spec.trunks)]
    out = []
    for where, t, destinations, priority, weight in entries:
        password = t.password
        if t.password_env is not None:
            password = environ.get(t.password_env) or None
        out.append(
            Trunk(
                name=t.name,
                uri=t.uri,
                destinations=destinations,
                priority=priority,
                weight=weight,
                username=t.username,
                password=password,
                password_env=t.password_env,
                setup_timeout_s=float(t.setup_timeout_s),
                answer_timeout_s=float(t.answer_timeout_s),
                transport=t.transport,
                caller_id=t.caller_id,
                p_asserted_identity=t.p_asserted_identity,
                register=t.register_,
                options_ping_s=float(t.options_ping_s),
                down_after=t.down_after,
                key=where,
            )
        )
    return tuple(out)
