"""The vocabulary of the config schema (gateway.schema): value types and error text.

Each domain type (a region, a timezone, a SIP URI, a store URL …) is an
`Annotated` alias carrying an `Expect` (what it must be, in words) and the
validator that checks it; `key()` declares a section's key and `Section` is a
strict TOML table. `first_error` turns pydantic's first error into our
words, and `describe` gives the same text for docs/config.md, so that an
error message and the documentation cannot disagree.

Split from gateway/schema.py so that the sections read as a list of keys;
over 400 lines because each of some twenty value types is its validator
and its wording, side by side.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

import annotated_types
import phonenumbers
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from gateway.config_error import ConfigValueError
from policy.config import (
    MAX_CREDIT_RATE,
    MIN_CREDIT_RATE,
    PolicyConfigError,
    parse_dialout_policy,
)
from policy.numbers import NumberType
from policy.routing import ANY_DESTINATION

_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


# --- errors ------------------------------------------------------------------------------

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Expect:
    """What a value must be, in words: the error messages and docs/config.md say it."""

    text: str


def fail(expected: str | None = None, *, field: tuple[str | int, ...] = (), got: Any = _MISSING) -> NoReturn:
    """Refuse a value from inside a validator. `field` extends the key path (relative to
    the model or value being validated); `expected` overrides the type's own `Expect`."""
    ctx: dict[str, Any] = {"field": field}
    if expected is not None:
        ctx["expected"] = expected
    if got is not _MISSING:
        ctx["got"] = got
    raise PydanticCustomError("config", "invalid value", ctx)


def first_error(exc: ValidationError, model: type[BaseModel]) -> ConfigValueError:
    """The first of pydantic's errors, in our words: the key path and what was expected."""
    err = exc.errors(include_url=False)[0]
    ctx = (err.get("ctx") or {}) if err["type"] == "config" else {}  # pydantic's own ctx is its wording
    loc = tuple(part for part in err["loc"] if part != "[key]")
    is_key = "[key]" in err["loc"]
    if err["type"] == "config":
        loc += tuple(ctx.get("field", ()))
    key = key_path(loc)
    if err["type"] == "missing":
        return ConfigValueError(key, f"{describe_at(model, loc)} (required)")
    if err["type"] == "extra_forbidden":
        parent, _ = _split(_resolve(model, loc[:-1]))
        known = sorted(toml_fields(parent)) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return ConfigValueError(key, "one of the known keys: " + ", ".join(known))
    expected = ctx.get("expected") or describe_at(model, loc, dict_key=is_key)
    if "got" in ctx:
        return ConfigValueError(key, expected, ctx["got"])
    if ctx.get("field"):  # a check across keys that has no single value to quote
        return ConfigValueError(key, expected)
    return ConfigValueError(key, expected, loc[-1] if is_key and loc else err.get("input"))


def key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- describing a type: one text for errors and docs ------------------------------------------


def _split(annotation: Any) -> tuple[Any, list[Any]]:
    """(bare type, metadata) of a possibly Annotated (and Optional) type."""
    meta: list[Any] = []
    while True:
        if get_origin(annotation) is Annotated:
            base, *extra = get_args(annotation)
            for item in extra:
                if isinstance(item, FieldInfo):
                    meta.extend(item.metadata)
                else:
                    meta.append(item)
            annotation = base
            continue
        args = get_args(annotation)
        if _is_union(annotation) and type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
            continue
        return annotation, meta


def _is_union(annotation: Any) -> bool:
    import types

    return get_origin(annotation) in (Union, types.UnionType)


def _resolve(model: Any, loc: tuple[Any, ...], *, dict_key: bool = False) -> Any:
    """The annotation (possibly Annotated) of the value at `loc` under `model`."""
    current: Any = model
    for i, part in enumerate(loc):
        bare, _ = _split(current)
        if isinstance(bare, type) and issubclass(bare, BaseModel):
            info = toml_fields(bare).get(part) if isinstance(part, str) else None
            if info is None:
                return None
            current = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        elif get_origin(bare) in (list, tuple):
            current = get_args(bare)[0]
        elif get_origin(bare) is dict:
            last = i == len(loc) - 1
            current = get_args(bare)[0 if (dict_key and last) else 1]
        else:
            return None
    return current


def toml_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by their TOML key (the alias where a Python name would clash)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def describe_at(model: type[BaseModel], loc: tuple[Any, ...], *, dict_key: bool = False) -> str:
    annotation = _resolve(model, loc, dict_key=dict_key)
    return describe(annotation) if annotation is not None else "a known key"


def describe(annotation: Any) -> str:
    """What a value of this type must be, in words."""
    bare, meta = _split(annotation)
    for item in meta:
        if isinstance(item, Expect):
            return item.text
    bounds = _bounds(meta)
    if bare is bool:
        return "true or false"
    if bare is int:
        return "an integer" + bounds
    if bare is float:
        return "a finite number" + bounds
    if bare is str:
        return "a string"
    if get_origin(bare) is Literal:
        words = [f'"{v}"' for v in get_args(bare)]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return "a table"
    if get_origin(bare) in (list, tuple):
        return "an array"
    if get_origin(bare) is dict:
        return "a table"
    return "a valid value"


def _bounds(meta: list[Any]) -> str:
    parts = []
    for item in meta:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                parts.append(f"{op} {show_number(value)}")
    return (" " + " and ".join(parts)) if parts else ""


def show_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# --- the value types ----------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        fail()
    return value.strip()


Text = Annotated[str, Expect("a non-empty string"), BeforeValidator(_text)]


def _region(value: Any) -> str:
    if not isinstance(value, str) or value.strip().upper() not in _REGIONS:
        fail()
    return value.strip().upper()


REGION_TEXT = "an ISO 3166 region code known to phonenumbers (e.g. FR, US)"
Region = Annotated[str, Expect(REGION_TEXT), BeforeValidator(_region)]
Regions = Annotated[list[Region], Expect("a list of ISO region codes")]


def _timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str) or not value.strip():
        fail()
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        fail()
    return value.strip()


Timezone = Annotated[str, Expect("an IANA timezone name such as Europe/Paris or UTC"), BeforeValidator(_timezone)]


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        fail("a date YYYY-MM-DD (no time: dates are whole local days)")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    fail()


Day = Annotated[date, Expect("a date YYYY-MM-DD"), BeforeValidator(_day)]


def _policy_name(value: Any) -> str:
    if not isinstance(value, str):
        fail()
    try:
        parse_dialout_policy(value)
    except PolicyConfigError:
        fail()
    return value.strip()


PolicyName = Annotated[
    str,
    Expect("one of any, domestic, zone_a, disabled, or a tag:DialoutCPC… policy name"),
    BeforeValidator(_policy_name),
]

_TYPE_NAMES = tuple(t.value for t in NumberType)


def _number_type(value: Any) -> str:
    if not isinstance(value, str) or value not in _TYPE_NAMES:
        fail()
    return value


NumberTypeName = Annotated[str, Expect(f"one of {', '.join(_TYPE_NAMES)}"), BeforeValidator(_number_type)]
NumberTypes = Annotated[list[NumberTypeName], Expect("a list of number types")]

RATE_TEXT = (
    f"a price per minute: 0 (free) or a finite number >= {show_number(MIN_CREDIT_RATE)} "
    f"and <= {show_number(MAX_CREDIT_RATE)}"
)


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        fail()
    if value != 0 and not MIN_CREDIT_RATE <= value <= MAX_CREDIT_RATE:
        fail()
    return float(value) if value else 0.0  # -0.0 is free too: never show a charge of -0.0


Rate = Annotated[float, Expect(RATE_TEXT), BeforeValidator(_rate)]


def _e164(value: Any) -> str:
    if not isinstance(value, str) or not value.strip().startswith("+"):
        fail()
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        fail()
    if not phonenumbers.is_valid_number(number):
        fail()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


E164 = Annotated[
    str, Expect('an E.164 number that phonenumbers says is valid, e.g. "+33142685300"'), BeforeValidator(_e164)
]


def _uri(schemes: tuple[str, ...]) -> BeforeValidator:
    def check(value: Any) -> str:
        if (
            not isinstance(value, str)
            or not value.strip().lower().startswith(schemes)
            or any(c.isspace() or c in '<>"' for c in value.strip())
        ):
            fail()
        rest = value.strip().split(":", 1)[1]
        if not rest or rest.startswith(("@", ";")):
            fail()
        return value.strip()

    return BeforeValidator(check)


SipUri = Annotated[str, Expect('a SIP URI such as "sip:trunk.example.net:5060"'), _uri(("sip:", "sips:"))]
CallerIdUri = Annotated[
    str, Expect('a SIP or tel URI such as "sip:+18005550100@gw.example.net"'), _uri(("sip:", "sips:", "tel:"))
]


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
        fail()
    return value


HttpUrl = Annotated[str, Expect("an http:// or https:// URL"), BeforeValidator(_http_url)]


def _store_url(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith(("sqlite:///", "postgresql://", "postgres://"))
        or value == "sqlite:///"
    ):
        fail()
    return value


StoreUrl = Annotated[
    str,
    Expect("sqlite:///PATH or postgresql://USER@HOST:PORT/DB (sqlite:////PATH for an absolute path)"),
    BeforeValidator(_store_url),
]


def _ip(value: Any) -> str:
    if not isinstance(value, str):
        fail()
    try:
        ipaddress.ip_address(value)
    except (TypeError, ValueError):
        fail()
    return value


IpAddress = Annotated[str, Expect('an IP address (not a host name), e.g. "127.0.0.1"'), BeforeValidator(_ip)]


def _cidr(value: Any) -> str:
    if not isinstance(value, str):
        fail()
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        fail()
    return value


Cidr = Annotated[str, Expect("a CIDR such as 10.0.0.0/24"), BeforeValidator(_cidr)]


def parse_nameserver(value: str) -> tuple[str, int]:
    """(ip, port) of "ip", "ip:port" or "[v6]:port"; ValueError otherwise."""
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(value)
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, text = value.partition(":")
        port = int(text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(value)
    return host, port


def _nameserver(value: Any) -> str:
    if not isinstance(value, str):
        fail()
    if value != "system":
        try:
            parse_nameserver(value)
        except (TypeError, ValueError, AttributeError):
            fail()
    return value


Nameserver = Annotated[
    str,
    Expect('"system", or an IP address with an optional port: "10.0.0.2", "127.0.0.1:5353", "[::1]:53"'),
    BeforeValidator(_nameserver),
]


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in ".-" for c in value):
        fail()
    return value


HostName = Annotated[str, Expect("a host name (letters, digits, dots, dashes)"), BeforeValidator(_host)]


def _one_line(value: Any) -> str:
    if not isinstance(value, str) or any(c in value for c in "\r\n") or len(value) > 128:
        fail()
    return value


OneLine = Annotated[str, Expect("one line of at most 128 characters, or empty"), BeforeValidator(_one_line)]


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in " :\t\r\n"):
        fail()
    return value


HeaderName = Annotated[str, Expect("a SIP header name such as X-Dialout-Organizer"), BeforeValidator(_header_name)]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _trunk_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        fail()
    return value


TrunkName = Annotated[
    str,
    Expect("a name of 1-64 letters, digits, '.', '_' or '-' (it appears in logs and metrics)"),
    BeforeValidator(_trunk_name),
]

_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not _ENV.fullmatch(value):
        fail()
    return value


EnvName = Annotated[str, Expect("an environment variable name such as TRUNK_PASSWORD"), BeforeValidator(_env_name)]


def _secret(value: Any) -> str:
    if not isinstance(value, str) or not value:
        fail()
    return value


Secret = Annotated[str, Expect("a non-empty string"), BeforeValidator(_secret)]

_PREFIX = re.compile(r"\+[0-9]{1,15}")
DESTINATION_TEXT = (
    'an ISO region code known to phonenumbers (e.g. "US"), a "+digits" prefix (e.g. "+1876") or "*" (every destination)'
)


def _destination(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text == ANY_DESTINATION or _PREFIX.fullmatch(text):
            return text
        if text.upper() in _REGIONS:
            return text.upper()
    fail()


Destination = Annotated[str, Expect(DESTINATION_TEXT), BeforeValidator(_destination)]


def _promotion_regions(value: Any) -> str | list[str]:
    if value == "zone_a":
        return "zone_a"
    if not isinstance(value, list):
        fail()
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or item.strip().upper() not in _REGIONS:
            fail(REGION_TEXT, field=(i,), got=item)
        out.append(item.strip().upper())
    return out


PromotionRegions = Annotated[
    str | list[str], Expect('a list of ISO region codes or "zone_a"'), BeforeValidator(_promotion_regions)
]


def key(default: Any = ..., doc: str = "", *, shown: str | None = None, **constraints: Any) -> Any:
    """A key of a section: its default (`...` = required), what it means, and its bounds.
    `shown` is how docs/config.md states a default that is not a plain value."""
    extra: JsonDict | None = {"shown": shown} if shown is not None else None
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


class Section(BaseModel):
    """A TOML table: strict types, no unknown keys, finite numbers only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
