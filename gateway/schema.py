"""The config file's schema: every section and key, declared once (pydantic v2).

`validate(data)` checks the whole TOML document (the dict `tomllib` made)
against `ConfigFile` and returns the validated models, or raises
`ConfigValueError` for the first problem, naming the key path and what was
expected: `trunks[1].priority: expected an integer >= 0, got -3`.

The models are strict (no `"5"` for 5, no `true` for 1, no `2.0` for an
integer), refuse unknown keys, and refuse `nan` and `inf` everywhere. What a
key must be is said once, in its type: the numeric bounds (`Field(ge=…)`) or
an `Expect` marker for the domain types (regions, timezones, URIs …),
which gateway/config_types.py defines with the error wording. The
same text is used for the error messages and for docs/config.md, which
scripts/gen_config_doc.py writes from these models (a test keeps it current).

The models are an intermediate form: `policy.config.build_policy_settings`,
`gateway.settings.runtime_settings` and `store.settings.store_settings` turn
them into the frozen objects the rest of the code reads. What needs the
machine (host name defaults, `password_env`) is resolved there, not here, so
that `dialout-gw explain` can read a file written for another machine.

(Over 400 lines on purpose: it is the one list of every section and key.)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from gateway.config_types import (
    E164,
    CallerIdUri,
    Cidr,
    Day,
    Destination,
    EnvName,
    Expect,
    HeaderName,
    HostName,
    HttpUrl,
    IpAddress,
    Nameserver,
    NumberTypes,
    OneLine,
    PolicyName,
    PromotionRegions,
    Rate,
    Region,
    Regions,
    Secret,
    Section,
    SipUri,
    StoreUrl,
    Text,
    Timezone,
    TrunkName,
    describe,
    fail,
    first_error,
    key,
    parse_nameserver,
    show_number,
    toml_fields,
)
from policy.config import (
    MAX_CALL_LENGTH_S,
    MAX_CREDITS_BALANCE,
    MAX_GUARD_LIMIT,
    MAX_LICENCES,
    MAX_MINUTES,
    MAX_RETRY_AFTER_S,
)
from policy.model import Catalogue, Guards
from sip import HeaderNames

# The defaults that docs/config.md shows come from the policy's own objects.
_HEADERS = HeaderNames()
_CATALOGUE = Catalogue()
_GUARDS = Guards()

__all__ = [
    "SECTIONS",
    "ConfigFile",
    "Section",
    "describe",
    "parse_nameserver",
    "show_number",
    "toml_fields",
    "validate",
]


# --- [gateway] ---------------------------------------------------------------------------


class Listener(Section):
    """One entry of `gateway.listen`."""

    transport: Literal["udp", "tcp", "tls"] = key(doc="the SIP transport")
    address: IpAddress = key(doc="the address to bind")
    port: int = key(doc="the port to bind", ge=1, le=65535)
    cert_file: Text | None = key(None, "PEM certificate chain (tls only)", shown="none")
    key_file: Text | None = key(None, "PEM private key (tls only)", shown="none")

    @model_validator(mode="after")
    def _tls_files(self) -> Listener:
        if self.transport == "tls" and not (self.cert_file and self.key_file):
            fail("cert_file and key_file for a tls listener", field=("cert_file",))
        return self


class GatewaySection(Section):
    """`[gateway]`: where the bridge's INVITEs arrive, and who may send them."""

    listen: Annotated[
        list[Listener], Expect("a non-empty array of {transport, address, port} tables"), Field(min_length=1)
    ] = key(
        doc='where to listen: `{transport = "udp"|"tcp"|"tls", address, port}`; tls also needs `cert_file`, `key_file`'
    )
    trusted_sources: Annotated[
        list[Cidr], Expect('a non-empty array of CIDRs, e.g. ["10.0.0.0/24"]'), Field(min_length=1)
    ] = key(doc="CIDRs of the bridges; any other source gets `403 untrusted_source` before any lookup")
    host: HostName | None = key(
        None, 'the warn-agent in `Warning: 399 <host> "…"` and our Contact', shown="the host name"
    )
    require_tls: bool = key(False, "refuse INVITEs that did not arrive over TLS")
    untrusted: Literal["drop", "reject"] = key(
        "drop", "what an untrusted source gets: nothing (`drop`) or one stateless `403` (`reject`)"
    )
    server_header: OneLine = key(
        "",
        "Server/User-Agent header value; empty sends none (no fingerprint); never in the `403` to an untrusted source",
    )
    max_concurrent_calls: int = key(3000, "above it: `503 overloaded` with `Retry-After`", ge=1, le=1_000_000)
    max_calls_per_second: float = key(
        500.0, "token bucket; above it: `503 overloaded` with `Retry-After`", gt=0, le=100_000
    )
    drain_timeout_s: float = key(30.0, "how long SIGTERM waits for calls in progress", ge=0, le=86_400)
    session_expires_s: int = key(
        1800, "RFC 4028 session interval on both legs (a dead leg is cleared)", ge=90, le=86_400
    )
    min_se_s: int = key(90, "RFC 4028 Min-SE: shorter session intervals are refused with 422", ge=90, le=86_400)
    caller_id: CallerIdUri | None = key(
        None,
        "the default caller ID (From of the trunk leg) when neither the tenant nor the trunk sets one; "
        "required with `[[trunks]]` entries that have no `caller_id`",
        shown="none",
    )

    @model_validator(mode="after")
    def _timers(self) -> GatewaySection:
        if self.min_se_s > self.session_expires_s:
            fail(f"seconds <= session_expires_s ({self.session_expires_s})", field=("min_se_s",), got=self.min_se_s)
        return self


# --- [trunk] and [[trunks]] ------------------------------------------------------------------


class TrunkBase(Section):
    name: TrunkName = key(doc="unique; appears in logs and metrics")
    uri: SipUri = key(
        doc="where the trunk legs go: `sip:+<E164>@<host:port>;user=phone`; "
        "`;transport=` chooses the transport as usual"
    )
    username: Text | None = key(None, "digest user name, when the carrier challenges", shown="none")
    password: Secret | None = key(None, "digest password (prefer `password_env`)", shown="none")
    password_env: EnvName | None = key(
        None,
        "the environment variable holding the digest password, read at start-up; `run --check` reports it when unset",
        shown="none",
    )
    setup_timeout_s: float = key(
        5.0, "no provisional response by then: try the next matching trunk; 0 = off", ge=0, le=300
    )
    answer_timeout_s: float = key(
        60.0, "no final answer by then: CANCEL, `408 trunk_timeout` to the bridge", gt=0, le=3600
    )
    transport: Literal["udp", "tcp", "tls"] | None = key(None, "the transport toward the trunk", shown="from the URI")
    caller_id: CallerIdUri | None = key(
        None, "the trunk's caller ID (From), unless the tenant sets one", shown="`gateway.caller_id`"
    )
    p_asserted_identity: bool = key(False, "send `P-Asserted-Identity` with the caller ID")
    # `register` is also a method of every pydantic model (ABCMeta's): the TOML key is an alias.
    register_: bool = key(False, "keep a registration with the carrier", alias="register")
    options_ping_s: float = key(0.0, "OPTIONS health ping interval; 0 = off", ge=0, le=3600)
    down_after: int = key(3, "failed pings, or consecutive 503s, that mark the trunk down", ge=1, le=100)

    @model_validator(mode="after")
    def _credentials(self) -> TrunkBase:
        if self.password is not None and self.password_env is not None:
            fail("either password or password_env, not both", field=("password_env",), got=self.password_env)
        if (self.password is not None or self.password_env is not None) and self.username is None:
            fail("a user name for the digest password", field=("username",))
        if self.transport is not None:
            m = re.search(r";transport=([A-Za-z]+)", self.uri)
            if m and m.group(1).lower() != self.transport:
                fail(
                    f'"{m.group(1).lower()}", as the uri says (;transport={m.group(1)})',
                    field=("transport",),
                    got=self.transport,
                )
        return self


class TrunkShorthand(TrunkBase):
    """`[trunk]`: one trunk that takes every destination (`destinations = ["*"]`)."""

    name: TrunkName = key("trunk", "the trunk's name in logs and metrics (the relay has always logged it as `trunk`)")
    setup_timeout_s: float = key(
        0.0,
        "no provisional response by then: give up on the trunk; 0 = off (one trunk has nothing to fail over to)",
        ge=0,
        le=300,
    )


class TrunkEntry(TrunkBase):
    """`[[trunks]]`: a trunk for some destinations; see docs/routing.md."""

    destinations: Annotated[
        list[Destination], Expect('a non-empty list of ISO regions, "+digits" prefixes or "*"'), Field(min_length=1)
    ] = key(
        doc='ISO regions (`"US"`, from phonenumbers) and/or `"+prefix"` strings, or `"*"` for every destination; '
        "the longest matching prefix ranks first, then region matches, then `*`"
    )
    priority: int = key(0, "lower is tried first among trunks that match alike", ge=0, le=1000)
    weight: int = key(1, "share of calls among trunks of equal priority", ge=1, le=100)


# --- [sip], [store], [logging], [metrics] ---------------------------------------------------


class SipHeaders(Section):
    """`[sip.headers]`: names of the bridge's headers."""

    organizer: HeaderName = key(_HEADERS.organizer, "the organiser's id (required in every INVITE)")
    tenant: HeaderName = key(_HEADERS.tenant, "the tenant (optional)")
    meeting: HeaderName = key(_HEADERS.meeting, "the meeting (logged)")
    initiator: HeaderName = key(_HEADERS.initiator, "who started the call (logged)")
    location: HeaderName = key(_HEADERS.location, "the initiator's physical country (logged, never decides)")


class SipSection(Section):
    """`[sip]`: SIP details."""

    headers: SipHeaders = key(SipHeaders(), "names of the bridge's headers", shown="see `[sip.headers]`")
    t1_ms: int = key(500, "RFC 3261 T1; Timer B/F/H (no answer, no ACK) are 64×T1", ge=50, le=5000)
    nameservers: Annotated[
        list[Nameserver],
        Expect('an array of at most 4 nameservers: "system", or IP addresses with an optional port ("127.0.0.1:5353")'),
    ] = key(
        ["system"],
        "DNS servers for trunk host names (RFC 3263: SRV, then A/AAAA), queried without blocking; "
        '`"system"` is those of /etc/resolv.conf; `[]`: the system resolver (A/AAAA and /etc/hosts only, no SRV), '
        "in a worker thread. A name these servers cannot resolve is tried with the system resolver too",
        shown='["system"]',
        max_length=4,
    )


class StoreSection(Section):
    """`[store]`: the ledger; see docs/ledger.md."""

    url: StoreUrl = key("sqlite:///var/ledger.db", "the ledger database")
    heartbeat_s: int = key(30, "how often the gateway records that answered calls are up", ge=1, le=3600)
    chunk_s: int = key(300, "talk seconds reserved per chunk", ge=1, le=86_400)
    instance_id: Annotated[str, Expect("a string, unique per running gateway")] = key(
        "", "this gateway's id in the ledger; two gateways must not share one", shown="the host name"
    )
    credits_floor: float = key(
        0.0, "`credits_low` alert when the balance left falls to this", ge=0, le=MAX_CREDITS_BALANCE
    )
    alert_webhook: HttpUrl | None = key(None, "alerts are POSTed here too", shown="none")
    timeout_s: float = key(
        2.0, "a reservation not made by then: `503` + `Retry-After`, never a bridge timeout", ge=0.05, le=30
    )
    linger_ms: float = key(1.0, "how long a ledger write waits for others to share its commit", ge=0, le=50)


class LoggingSection(Section):
    """`[logging]`: the JSON log on stdout."""

    level: Literal["debug", "info", "warning", "error"] = key("info", "the lowest level written")
    format: Literal["auto", "json", "console"] = key("auto", "`auto`: json unless stdout is a terminal")
    pjsip_level: int = key(1, "pjsip's own log, routed through the same JSON log", ge=0, le=6)
    mask_numbers: bool = key(False, "keep only the country code and last two digits of numbers in logs")
    mask_fields: Annotated[list[Text], Expect('an array of log field names such as ["reason_text"]')] = key(
        [], "more free-text log fields to mask numbers in"
    )
    refusal_log_interval_s: float = key(
        10.0, "admission refusals are logged at most this often per source and reason", ge=0, le=86_400
    )


class MetricsSection(Section):
    """`[metrics]`: HTTP `/metrics` and `/healthz`."""

    address: IpAddress = key("127.0.0.1", "the address to bind")
    port: int = key(0, "the port; 0 disables the endpoint", ge=0, le=65535)


# --- [policy] -----------------------------------------------------------------------------


class PromotionRow(Section):
    """`[[policy.promotions]]`: a complimentary window."""

    name: Text = key(doc="unique name, shown in traces")
    start: Day | None = key(None, "first free day, tenant-local, inclusive", shown="none (open)")
    end: Day = key(doc="last free day, tenant-local, inclusive")
    regions: PromotionRegions = key("zone_a", "destinations covered")
    monthly_cap_minutes_per_user: Annotated[float, Field(gt=0, le=MAX_MINUTES)] | None = key(
        None, "pooled cap: × the tenant's subscription licences, per tenant-local month", shown="none (unlimited)"
    )
    enabled: bool = key(True, "off switch")

    @model_validator(mode="after")
    def _order(self) -> PromotionRow:
        if self.start is not None and self.start > self.end:
            fail(f"a date on or before end ({self.end})", field=("start",), got=self.start)
        return self


class UscaAddon(Section):
    """`[policy.usca_addon]`: the US/Canada unlimited add-on."""

    regions: Regions = key(sorted(_CATALOGUE.usca_regions), "where the add-on pays")
    fair_use_minutes_per_month: float = key(
        float(_CATALOGUE.addon_fair_use_minutes_per_month),
        "per organiser; at or over it, `403 fair_use_exceeded`",
        gt=0,
        le=MAX_MINUTES,
    )


class Pool(Section):
    """`[policy.pool]`: the tenant's pooled minutes."""

    minutes_per_subscription: float = key(
        float(_CATALOGUE.pool_minutes_per_subscription),
        "pool minutes per subscription licence per month; 0 = no pool",
        ge=0,
        le=MAX_MINUTES,
    )
    excluded_number_types: NumberTypes = key(
        sorted(t.value for t in _CATALOGUE.pool_excluded_types), "types the pool and promotions never pay"
    )


class Credits(Section):
    """`[policy.credits]`: Communications Credits."""

    currency: Text = key(_CATALOGUE.credits_currency, "label only")
    default_rate_per_minute: Rate = key(_CATALOGUE.default_credit_rate, "price per minute where `rates` has no entry")
    rates: Annotated[dict[Region, Rate], Expect("a table of REGION = price per minute")] = key(
        {}, "price per minute by destination region; 0 = free"
    )


class GuardsSection(Section):
    """`[policy.guards]`: fair-use and fraud guards."""

    max_concurrent_per_organizer: int = key(
        _GUARDS.max_concurrent_per_organizer, "calls in progress per organiser", ge=1, le=MAX_GUARD_LIMIT
    )
    max_concurrent_per_tenant: int = key(
        _GUARDS.max_concurrent_per_tenant, "calls in progress per tenant", ge=1, le=MAX_GUARD_LIMIT
    )
    max_calls_per_minute_per_organizer: int = key(
        _GUARDS.max_calls_per_minute_per_organizer, "call attempts per minute per organiser", ge=1, le=MAX_GUARD_LIMIT
    )
    max_distinct_destinations_per_day: int = key(
        _GUARDS.max_distinct_destinations_per_day,
        "distinct numbers per organiser per tenant-local day",
        ge=1,
        le=MAX_GUARD_LIMIT,
    )
    high_risk_regions: Regions = key([], "destinations refused as `fraud_suspected`")
    retry_after_concurrency_s: int = key(
        _GUARDS.retry_after_concurrency_s, "`Retry-After` for `limit_concurrency`", ge=1, le=MAX_RETRY_AFTER_S
    )
    retry_after_rate_s: int = key(
        _GUARDS.retry_after_rate_s, "`Retry-After` for `limit_rate`", ge=1, le=MAX_RETRY_AFTER_S
    )


class PolicySection(Section):
    """`[policy]`: the catalogue; see docs/policy.md."""

    default_timezone: Timezone = key("UTC", "timezone of tenants that name none")
    default_dialout_policy: PolicyName = key("disabled", "policy of organisers that name none (deny by default)")
    zone_a: Regions | None = key(
        None, "Zone A: the `zone_a` policy, the pool, and promotions' default regions", shown="the 44 seed countries"
    )
    number_validation: Literal["possible", "valid"] = key(
        "valid", "`valid`: inside a range phonenumbers' metadata assigns; `possible`: the length fits"
    )
    blocked_number_types: NumberTypes | None = key(
        None,
        "`403 destination_blocked`; `emergency` and `short_code` are always blocked; a list replaces the default",
        shown="unknown, premium_rate, shared_cost, uan, personal_number, pager, satellite, voicemail",
    )
    billing_increment: Literal["minute", "second"] = key("minute", "per started minute, or per second")
    max_call_length_s: int = key(
        _CATALOGUE.max_call_length_s, "caps every call, unlimited buckets included", ge=1, le=MAX_CALL_LENGTH_S
    )
    domestic_equivalence: Annotated[list[Regions], Expect('a list of region lists, e.g. [["US", "PR"]]')] = key(
        [], "groups that count as one region for `domestic`"
    )
    promotions: Annotated[list[PromotionRow], Expect("an array of tables [[policy.promotions]]")] | None = key(
        None,
        "complimentary windows; if given, they replace the defaults",
        shown="the seed's window (on) and the 2019 extension (off)",
    )
    usca_addon: UscaAddon = key(UscaAddon(), "the US/Canada add-on", shown="see below")
    pool: Pool = key(Pool(), "the tenant pool", shown="see below")
    credits: Credits = key(Credits(), "Communications Credits", shown="see below")
    guards: GuardsSection = key(GuardsSection(), "fair-use and fraud guards", shown="see below")

    @model_validator(mode="after")
    def _promotion_names(self) -> PolicySection:
        seen: set[str] = set()
        for i, promo in enumerate(self.promotions or ()):
            if promo.name in seen:
                fail("a name not used by another promotion", field=("promotions", i, "name"), got=promo.name)
            seen.add(promo.name)
        return self


# --- [[tenants]] and [[organizers]] -----------------------------------------------------------


class TenantCredits(Section):
    """A tenant's Communications Credits: `credits = { enabled = true, balance = 120.0 }`."""

    enabled: bool = key(False, "Communications Credits on for the tenant")
    balance: float = key(0.0, "balance used when the ledger has no other", ge=0, le=MAX_CREDITS_BALANCE)


class TenantRow(Section):
    """`[[tenants]]`: one tenant."""

    id: Text = key(doc="unique (case-insensitive); `X-Dialout-Tenant` is matched against it")
    name: Text | None = key(None, "label only", shown='""')
    timezone: Timezone | None = key(
        None, "periods, promotion dates and days are reckoned in it", shown="`policy.default_timezone`"
    )
    subscription_licences: int = key(
        0, "Audio Conferencing subscriptions: the pool size and promotion caps", ge=0, le=MAX_LICENCES
    )
    pay_per_minute_licences: int = key(0, "informational: adds nothing to the pool", ge=0, le=MAX_LICENCES)
    credits: TenantCredits = key(TenantCredits(), "`{enabled, balance}`", shown="`{enabled = false, balance = 0.0}`")
    caller_id: E164 | None = key(
        None,
        "the caller ID of this tenant's calls; it replaces the user part of the "
        "trunk's caller-ID URI (see docs/routing.md)",
        shown="the trunk's, then `gateway.caller_id`",
    )


class OrganizerRow(Section):
    """`[[organizers]]`: one meeting organiser."""

    id: Text = key(doc="unique, case-insensitive (e.g. a UPN); `X-Dialout-Organizer`")
    tenant: Text = key(doc="a `[[tenants]]` id")
    usage_location: Region = key(doc="where the licence is assigned: parses national numbers, defines `domestic`")
    audio_conferencing: Annotated[
        Literal["subscription", "pay_per_minute", "none"], Expect("subscription, pay_per_minute or none")
    ] = key("none", "the organiser's Audio Conferencing licence")
    usca_addon: bool = key(False, "US/Canada unlimited dial-out add-on")
    credits_licence: bool = key(False, "Communications Credits licence")
    dialout_policy: PolicyName | None = key(
        None, "`any`, `domestic`, `zone_a`, `disabled`, or a Microsoft name", shown="`policy.default_dialout_policy`"
    )


# --- the file -------------------------------------------------------------------------------


class ConfigFile(Section):
    """The whole file. Every section is optional here; `dialout-gw run` also needs
    `[gateway]` and a trunk (`gateway.settings.runtime_settings` says so)."""

    gateway: GatewaySection | None = key(None, "listeners, trusted sources, capacity", shown="required by `run`")
    trunk: TrunkShorthand | None = key(None, "one trunk for every destination", shown="none")
    trunks: Annotated[list[TrunkEntry], Expect("an array of tables [[trunks]]")] = key(
        [], "trunks chosen by destination", shown="none"
    )
    sip: SipSection = key(SipSection(), "SIP details", shown="see below")
    store: StoreSection = key(StoreSection(), "the ledger", shown="see below")
    logging: LoggingSection = key(LoggingSection(), "the log", shown="see below")
    metrics: MetricsSection = key(MetricsSection(), "`/metrics` and `/healthz`", shown="see below")
    policy: PolicySection = key(PolicySection(), "the catalogue", shown="see below")
    tenants: Annotated[list[TenantRow], Expect("an array of tables [[tenants]]")] = key([], "the tenants")
    organizers: Annotated[list[OrganizerRow], Expect("an array of tables [[organizers]]")] = key([], "the organisers")

    @model_validator(mode="after")
    def _across_sections(self) -> ConfigFile:
        tenants: dict[str, str] = {}
        for i, t in enumerate(self.tenants):
            if t.id.casefold() in tenants:
                fail("an id not used by another tenant", field=("tenants", i, "id"), got=t.id)
            tenants[t.id.casefold()] = t.id
        organizers: set[str] = set()
        for i, o in enumerate(self.organizers):
            if o.id.casefold() in organizers:
                fail("an id not used by another organizer", field=("organizers", i, "id"), got=o.id)
            organizers.add(o.id.casefold())
            if o.tenant.casefold() not in tenants:
                known = ", ".join(tenants.values()) or "none defined"
                fail(f"the id of a [[tenants]] entry ({known})", field=("organizers", i, "tenant"), got=o.tenant)
        if self.trunk is not None and self.trunks:
            fail("either one [trunk] table or [[trunks]] entries, not both", field=("trunks",), got=len(self.trunks))
        names: dict[str, int] = {}
        for i, entry in enumerate(self.trunks):
            if entry.name.casefold() in names:
                fail(
                    f"a name not used by another trunk (trunks[{names[entry.name.casefold()]}])",
                    field=("trunks", i, "name"),
                    got=entry.name,
                )
            names[entry.name.casefold()] = i
            if entry.caller_id is None and (self.gateway is None or self.gateway.caller_id is None):
                fail("a caller ID URI here, or a default in gateway.caller_id", field=("trunks", i, "caller_id"))
        if (
            self.trunk is not None
            and self.trunk.caller_id is None
            and (self.gateway is None or self.gateway.caller_id is None)
        ):
            fail("a caller ID URI here, or a default in gateway.caller_id", field=("trunk", "caller_id"))
        return self


#: The top-level keys, in file order.
SECTIONS = tuple(toml_fields(ConfigFile))


def validate(data: Any) -> ConfigFile:
    """The whole file, validated; raises ConfigValueError (the first problem)."""
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc, ConfigFile) from None
