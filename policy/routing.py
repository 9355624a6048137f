"""Trunk choice: which trunks may carry a call, in the order to try them.

Pure: the standard library and phonenumbers only, no I/O, no clock. The
caller passes what changes (which trunks are down, a turn counter it
increments per call); the same arguments always give the same answer.

    route(e164, region, trunks, down=frozenset(), turn=0) -> tuple[Trunk, ...]

Ranking (docs/routing.md):

1. How the trunk matches the destination: by `+prefix` (the longest of its
   prefixes that the number starts with; longer ranks first), then by ISO
   region, then by `"*"` (any destination). A prefix match always ranks
   ahead of a region match, whatever the priorities.
2. Within the same kind and prefix length: `priority`, lower first.
3. Trunks that tie on all of that share the calls: `turn` picks the first by
   a smooth weighted round robin over their `weight`s (with equal weights,
   plain rotation); the others follow in ring order, as fallbacks.
4. Trunks in `down` are not skipped but moved to the end, in the same order:
   a health check can be wrong, and a down trunk is a better last resort than
   refusing the call. So an empty result means that no trunk serves the
   destination at all: `Reason.NO_ROUTE` (404), a configuration matter.

`caller_id_for` picks the From of the trunk leg, `check_trunks` lists what
`dialout-gw run --check` reports about a set of trunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import phonenumbers

#: `destinations` entry that matches every number (the `[trunk]` shorthand uses it).
ANY_DESTINATION = "*"
#: E.164 numbers have at most 15 digits, so a longer prefix matches nothing.
MAX_E164_DIGITS = 15

_PREFIX = re.compile(r"\+[0-9]{1,15}")
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
_COUNTRY_CODES = tuple(str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

# Match kinds, best first.
_BY_PREFIX, _BY_REGION, _BY_ANY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Trunk:
    """One carrier trunk, as configured (`[[trunks]]`, or the `[trunk]` shorthand).

    `destinations` are as written: ISO regions (`"US"`), `"+digits"` prefixes
    and/or `"*"`. `regions` and `prefixes` (longest first) are derived from it.
    `password` is the resolved secret (from `password` or the environment
    variable `password_env`); None with `password_env` set means the variable
    was not set when the config was read. `key` says where the trunk was
    configured (`trunks[1]`, `trunk`), for messages.
    """

    name: str
    uri: str
    destinations: tuple[str, ...] = (ANY_DESTINATION,)
    priority: int = 0
    weight: int = 1
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    setup_timeout_s: float = 5.0  # no provisional by then: try the next trunk (0 = off)
    answer_timeout_s: float = 60.0  # no final answer by then: CANCEL, 408 trunk_timeout
    transport: str | None = None  # "udp", "tcp", "tls"; None = from the URI
    caller_id: str | None = None  # the trunk's default caller ID (a SIP or tel URI)
    p_asserted_identity: bool = False  # send P-Asserted-Identity with the caller ID
    register: bool = False  # keep a registration with the carrier
    options_ping_s: float = 0.0  # OPTIONS health ping interval; 0 = off
    down_after: int = 3  # failed pings or consecutive 503s that mark it down
    key: str = ""
    regions: frozenset[str] = field(init=False, compare=False, repr=False)
    prefixes: tuple[str, ...] = field(init=False, compare=False, repr=False)
    any_destination: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        dests = tuple(self.destinations)
        object.__setattr__(self, "destinations", dests)
        object.__setattr__(
            self, "regions", frozenset(d for d in dests if not d.startswith("+") and d != ANY_DESTINATION)
        )
        object.__setattr__(
            self, "prefixes", tuple(sorted({d for d in dests if d.startswith("+")}, key=len, reverse=True))
        )
        object.__setattr__(self, "any_destination", ANY_DESTINATION in dests)

    def match(self, e164: str, region: str | None) -> tuple[int, int] | None:
        """(kind, -prefix length) if this trunk serves the number, else None; smaller ranks first."""
        for prefix in self.prefixes:  # longest first
            if e164.startswith(prefix):
                return (_BY_PREFIX, -len(prefix))
        if region and region in self.regions:
            return (_BY_REGION, 0)
        if self.any_destination:
            return (_BY_ANY, 0)
        return None


def route(
    e164: str,
    region: str | None,
    trunks: Sequence[Trunk],
    *,
    down: frozenset[str] = frozenset(),
    turn: int = 0,
) -> tuple[Trunk, ...]:
    """The trunks that serve `e164` (in `region`, from phonenumbers), in the order to try.

    Empty: no trunk serves the destination (`no_route`). See the module docstring.
    """
    groups: dict[tuple[int, int, int], list[Trunk]] = {}
    for trunk in trunks:
        how = trunk.match(e164, region)
        if how is not None:
            groups.setdefault((*how, trunk.priority), []).append(trunk)
    ordered: list[Trunk] = []
    for rank in sorted(groups):
        ordered.extend(_share(groups[rank], turn))
    if down:
        ordered = [t for t in ordered if t.name not in down] + [t for t in ordered if t.name in down]
    return tuple(ordered)


def _share(group: list[Trunk], turn: int) -> list[Trunk]:
    """Trunks of equal rank: the one whose turn it is first, then the others in ring order."""
    if len(group) == 1:
        return group
    schedule = _schedule(tuple(t.weight for t in group))
    first = schedule[turn % len(schedule)]
    return group[first:] + group[:first]


@lru_cache(maxsize=256)
def _schedule(weights: tuple[int, ...]) -> tuple[int, ...]:
    """Smooth weighted round robin (as nginx's): indexes, sum(weights) long, each
    index `weight` times, spread out. Equal weights: 0, 1, 2, … (plain rotation)."""
    weights = tuple(max(1, w) for w in weights)
    total = sum(weights)
    current = [0] * len(weights)
    out = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[best] -= total
        out.append(best)
    return tuple(out)


def caller_id_for(tenant: Any, trunk: Trunk | None, default: str) -> str:
    """The caller ID (a SIP or tel URI, the From of the trunk leg) for a call.

    Precedence: the tenant's `caller_id` (an E.164 number), then the trunk's
    `caller_id`, then `default` (the gateway's). The tenant's number is put in
    the user part of the trunk's (else the default's) caller-ID URI, so it
    keeps the host and parameters the carrier expects: tenant `+33142685300`,
    trunk `sip:+18005550100@gw.example;user=phone` →
    `sip:+33142685300@gw.example;user=phone`. `tenant` may be None.
    """
    template = (trunk.caller_id if trunk is not None else None) or default
    number = getattr(tenant, "caller_id", None) if tenant is not None else None
    if not number:
        return template
    return with_user(template, number)


def with_user(uri: str, user: str) -> str:
    """`uri` with its user part replaced by `user` (a `tel:` URI becomes `tel:<user>`)."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        params = rest.find(";")
        return f"tel:{user}{rest[params:] if params >= 0 else ''}"
    host = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}:{user}@{host}"


def check_trunks(trunks: Sequence[Trunk]) -> list[str]:
    """What `dialout-gw run --check` reports, one line each:
    `error: <key path>: <what is wrong>` or `warning: <key path>: <what is odd>`.

    Errors: a duplicate name, an unknown region, a malformed prefix, a
    `password_env` variable that was not set. Warnings: a prefix no E.164
    number can start with, a prefix that is shadowed (every number it covers
    matches a longer prefix of other trunks, which rank first), and a region
    entry that never decides because another trunk's prefix covers the whole
    region (a prefix match ranks ahead of a region match).
    """
    findings: list[str] = []
    seen: dict[str, str] = {}
    for i, t in enumerate(trunks):
        where = _where(i, t)
        folded = t.name.casefold()
        if folded in seen:
            findings.append(
                f"error: {where}.name: {t.name!r} is also the name of {seen[folded]}; trunk names must be unique"
            )
        else:
            seen[folded] = where
        for j, dest in enumerate(t.destinations):
            at = f"{where}.destinations[{j}]"
            if dest == ANY_DESTINATION:
                continue
            if dest.startswith("+"):
                if not _PREFIX.fullmatch(dest):
                    findings.append(
                        f'error: {at}: {dest!r} is not a "+digits" prefix of at most 15 digits (trunk {t.name})'
                    )
                elif not _can_start_a_number(dest):
                    findings.append(
                        f"warning: {at}: no E.164 number starts with {dest}, so no call can match it (trunk {t.name})"
                    )
            elif dest not in _REGIONS:
                findings.append(
                    f"error: {at}: {dest!r} is not an ISO region code known to phonenumbers (trunk {t.name})"
                )
        if t.password_env and t.password is None:
            findings.append(
                f"error: {where}.password_env: the environment variable {t.password_env} is not set (trunk {t.name})"
            )
    findings += _shadowed(trunks)
    return findings


def _where(i: int, t: Trunk) -> str:
    return t.key or f"trunks[{i}]"


def _can_start_a_number(prefix: str) -> bool:
    digits = prefix[1:]
    return any(cc.startswith(digits) or digits.startswith(cc) for cc in _COUNTRY_CODES)


def _shadowed(trunks: Sequence[Trunk]) -> list[str]:
    findings = []
    for i, t in enumerate(trunks):
        others = [p for k, o in enumerate(trunks) if k != i for p in o.prefixes]
        for j, dest in enumerate(t.destinations):
            at = f"{_where(i, t)}.destinations[{j}]"
            if dest.startswith("+") and _PREFIX.fullmatch(dest):
                longer = {p for p in others if len(p) > len(dest) and p.startswith(dest)}
                if longer and _covered(dest[1:], {p[1:] for p in longer}):
                    findings.append(
                        f"warning: {at}: {dest} is shadowed: every number it covers matches a longer prefix "
                        f"of another trunk ({', '.join(sorted(longer))}), which ranks first (trunk {t.name})"
                    )
            elif dest in _REGIONS:
                code = phonenumbers.country_code_for_region(dest)
                covering = sorted(
                    {
                        (o.name, p)
                        for k, o in enumerate(trunks)
                        if k != i
                        for p in o.prefixes
                        if str(code).startswith(p[1:])
                    }
                )
                if covering:
                    by = ", ".join(f"{p} of {name}" for name, p in covering)
                    findings.append(
                        f"warning: {at}: {dest} never puts {t.name} first: every {dest} number matches {by}, "
                        f"and a prefix match ranks ahead of a region match; {t.name} is only a fallback there"
                    )
    return findings


def _covered(digits: str, longer: Iterable[str]) -> bool:
    """Every continuation of `digits` (up to 15 digits in all) starts with one of `longer`."""
    longer = set(longer)
    if digits in longer:
        return True
    if len(digits) >= MAX_E164_DIGITS or not any(p.startswith(digits) and p != digits for p in longer):
        return False
    return all(_covered(digits + d, [p for p in longer if p.startswith(digits + d)]) for d in "0123456789")
