"""Typed runtime settings: the `[gateway]`, `[trunk]`, `[sip]`, `[store]`,
`[logging]` and `[metrics]` sections of the config file.

The policy sections (`[policy]`, `[[tenants]]`, `[[organizers]]`) are parsed
by `policy.config`; this module parses the rest into frozen objects and names
the key and the expected value in every error.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from sip import HeaderNames
from store.settings import StoreSettings, parse_store_section

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Listener:
    transport: str  # "udp" | "tcp" | "tls"
    address: str
    port: int
    cert_file: str | None = None
    key_file: str | None = None


class SettingsError(ValueError):
    """A bad value in a runtime section; `key` is the dotted path."""

    def __init__(self, key: str, expected: str, got=_MISSING):
        self.key = key
        self.expected = expected
        detail = "is missing" if got is _MISSING else f"is {got!r}"
        super().__init__(f"{key} {detail}; expected {expected}")


@dataclass(frozen=True, slots=True)
class TrunkSettings:
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
    untrusted: str = "drop"            # "drop" (nothing back) or "reject" (one stateless 403)
    server_header: str = ""            # Server/User-Agent value; none by default (no fingerprint)
    max_concurrent_calls: int = 3000
    max_calls_per_second: float = 500.0
    drain_timeout_s: float = 30.0
    session_expires_s: int = 1800
    min_se_s: int = 90
    headers: HeaderNames = field(default_factory=HeaderNames)
    t1_ms: int = 500                   # RFC 3261 T1; Timer B/F/H (no answer, no ACK) are 64*T1
    store: StoreSettings = field(default_factory=StoreSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


def _get(table: dict, section: str, key: str, kind, expected: str, default=_MISSING):
    value = table.get(key, default)
    if value is _MISSING:
        raise SettingsError(f"{section}.{key}", expected)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingsError(f"{section}.{key}", expected, value)
    return value


def _positive(value, key: str, expected: str):
    if value <= 0:
        raise SettingsError(key, expected, value)
    return value


def _check_keys(table: dict, section: str, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SettingsError(f"{section}.{unknown[0]}", f"one of: {', '.join(sorted(allowed))}", "an unknown key")


def _listeners(raw) -> tuple[Listener, ...]:
    if not isinstance(raw, list) or not raw:
        raise SettingsError("gateway.listen", "a non-empty array of {transport, address, port} tables", raw)
    out = []
    for i, item in enumerate(raw):
        key = f"gateway.listen[{i}]"
        if not isinstance(item, dict):
            raise SettingsError(key, "a table {transport, address, port}", item)
        _check_keys(item, key, {"transport", "address", "port", "cert_file", "key_file"})
        transport = _get(item, key, "transport", str, '"udp", "tcp" or "tls"')
        if transport not in ("udp", "tcp", "tls"):
            raise SettingsError(f"{key}.transport", '"udp", "tcp" or "tls"', transport)
        address = _get(item, key, "address", str, "an IP address to bind, e.g. \"127.0.0.1\"")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SettingsError(f"{key}.address", "an IP address (not a host name)", address) from None
        port = _get(item, key, "port", int, "a port number 1-65535")
        if not 0 < port < 65536:
            raise SettingsError(f"{key}.port", "a port number 1-65535", port)
        cert = item.get("cert_file")
        keyf = item.get("key_file")
        if transport == "tls" and not (cert and keyf):
            raise SettingsError(f"{key}.cert_file", "cert_file and key_file for a tls listener")
        out.append(Listener(transport, address, port, cert, keyf))
    return tuple(out)


def _networks(raw):
    if not isinstance(raw, list) or not raw:
        raise SettingsError("gateway.trusted_sources", 'a non-empty array of CIDRs, e.g. ["10.0.0.0/24"]', raw)
    nets = []
    for i, cidr in enumerate(raw):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except (TypeError, ValueError):
            raise SettingsError(f"gateway.trusted_sources[{i}]", "a CIDR such as 10.0.0.0/24", cidr) from None
    return tuple(nets)


def parse_runtime_settings(sections: dict[str, dict]) -> RuntimeSettings:
    """Build RuntimeSettings from the raw TOML tables; raises SettingsError."""
    gw = sections.get("gateway")
    if not isinstance(gw, dict):
        raise SettingsError("gateway", "a [gateway] table with listen and trusted_sources")
    _check_keys(gw, "gateway", {
        "listen", "trusted_sources", "host", "require_tls", "untrusted", "server_header", "max_concurrent_calls",
        "max_calls_per_second", "drain_timeout_s", "session_expires_s", "min_se_s",
    })
    untrusted = _get(gw, "gateway", "untrusted", str, '"drop" or "reject"', "drop")
    if untrusted not in ("drop", "reject"):
        raise SettingsError("gateway.untrusted", '"drop" or "reject"', untrusted)
    server_header = _get(gw, "gateway", "server_header", str, "a Server/User-Agent value, or empty", "")
    if any(c in server_header for c in "\r\n") or len(server_header) > 128:
        raise SettingsError("gateway.server_header", "one line of at most 128 characters", server_header)
    trunk_raw = sections.get("trunk")
    if not isinstance(trunk_raw, dict):
        raise SettingsError("trunk", "a [trunk] table with uri and caller_id")
    _check_keys(trunk_raw, "trunk", {"uri", "caller_id", "answer_timeout_s"})
    trunk_uri = _get(trunk_raw, "trunk", "uri", str, 'a SIP URI such as "sip:trunk.example.net:5060"')
    if not trunk_uri.startswith(("sip:", "sips:")):
        raise SettingsError("trunk.uri", 'a SIP URI such as "sip:trunk.example.net:5060"', trunk_uri)
    caller_id = _get(trunk_raw, "trunk", "caller_id", str, 'a SIP URI such as "sip:+18005550100@gw.example.net"')
    if not caller_id.startswith(("sip:", "sips:", "tel:")):
        raise SettingsError("trunk.caller_id", 'a SIP or tel URI', caller_id)
    trunk = TrunkSettings(
        uri=trunk_uri,
        caller_id=caller_id,
        answer_timeout_s=_positive(
            _get(trunk_raw, "trunk", "answer_timeout_s", float, "seconds > 0", 60.0),
            "trunk.answer_timeout_s", "seconds > 0"),
    )

    sip_raw = sections.get("sip", {})
    headers = HeaderNames()
    if sip_raw:
        _check_keys(sip_raw, "sip", {"headers", "t1_ms"})
        names = sip_raw.get("headers", {})
        if not isinstance(names, dict):
            raise SettingsError("sip.headers", "a table of header names", names)
        allowed = set(HeaderNames.__dataclass_fields__)
        _check_keys(names, "sip.headers", allowed)
        for k, v in names.items():
            if not isinstance(v, str) or not v or any(c in v for c in " :\t\r\n"):
                raise SettingsError(f"sip.headers.{k}", "a SIP header name such as X-Dialout-Organizer", v)
        headers = HeaderNames(**names)

    t1_ms = _get(sip_raw or {}, "sip", "t1_ms", int, "milliseconds 50-5000", 500)
    if not 50 <= t1_ms <= 5000:
        raise SettingsError("sip.t1_ms", "milliseconds 50-5000", t1_ms)

    store = parse_store_section(sections.get("store"))  # raises StoreSettingsError

    lg = sections.get("logging", {})
    _check_keys(lg, "logging", {"level", "format", "pjsip_level", "mask_numbers", "mask_fields",
                                "refusal_log_interval_s"})
    level = _get(lg, "logging", "level", str, '"debug", "info", "warning" or "error"', "info")
    if level not in ("debug", "info", "warning", "error"):
        raise SettingsError("logging.level", '"debug", "info", "warning" or "error"', level)
    fmt = _get(lg, "logging", "format", str, '"auto", "json" or "console"', "auto")
    if fmt not in ("auto", "json", "console"):
        raise SettingsError("logging.format", '"auto", "json" or "console"', fmt)
    pj_level = _get(lg, "logging", "pjsip_level", int, "an integer 0-6", 1)
    if not 0 <= pj_level <= 6:
        raise SettingsError("logging.pjsip_level", "an integer 0-6", pj_level)
    mask_fields = _get(lg, "logging", "mask_fields", list, 'an array of log field names such as ["reason_text"]', [])
    for i, name in enumerate(mask_fields):
        if not isinstance(name, str) or not name:
            raise SettingsError(f"logging.mask_fields[{i}]", "a log field name", name)
    logging_settings = LoggingSettings(
        level=level, format=fmt, pjsip_level=pj_level,
        mask_numbers=_get(lg, "logging", "mask_numbers", bool, "true or false", False),
        mask_fields=tuple(mask_fields),
        refusal_log_interval_s=_get(lg, "logging", "refusal_log_interval_s", float, "seconds", 10.0),
    )

    mt = sections.get("metrics", {})
    _check_keys(mt, "metrics", {"address", "port"})
    metrics = MetricsSettings(
        address=_get(mt, "metrics", "address", str, "an IP address", "127.0.0.1"),
        port=_get(mt, "metrics", "port", int, "a port number (0 disables)", 0),
    )

    host = _get(gw, "gateway", "host", str, "a host name for Warning headers", socket.gethostname())
    if not host or not all(c.isalnum() or c in ".-" for c in host):
        raise SettingsError("gateway.host", "a host name (letters, digits, dots, dashes)", host)

    return RuntimeSettings(
        listeners=_listeners(gw.get("listen")),
        trusted_sources=_networks(gw.get("trusted_sources")),
        trunk=trunk,
        gateway_host=host,
        require_tls=_get(gw, "gateway", "require_tls", bool, "true or false", False),
        untrusted=untrusted,
        server_header=server_header,
        max_concurrent_calls=_positive(
            _get(gw, "gateway", "max_concurrent_calls", int, "an integer > 0", 3000),
            "gateway.max_concurrent_calls", "an integer > 0"),
        max_calls_per_second=_positive(
            _get(gw, "gateway", "max_calls_per_second", float, "a number > 0", 500.0),
            "gateway.max_calls_per_second", "a number > 0"),
        drain_timeout_s=_get(gw, "gateway", "drain_timeout_s", float, "seconds >= 0", 30.0),
        session_expires_s=_get(gw, "gateway", "session_expires_s", int, "seconds >= 90", 1800),
        min_se_s=_get(gw, "gateway", "min_se_s", int, "seconds >= 90", 90),
        headers=headers,
        t1_ms=t1_ms,
        store=store,
        logging=logging_settings,
        metrics=metrics,
    )
