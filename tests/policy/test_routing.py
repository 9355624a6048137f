"""Trunk choice (policy/routing.py): table-driven, no SIP."""

from __future__ import annotations

from collections import Counter

import pytest

from policy import Reason, Tenant, Trunk, caller_id_for, check_trunks, route


def trunk(name: str, *destinations: str, priority: int = 0, weight: int = 1, **kw) -> Trunk:
    return Trunk(
        name=name, uri=f"sip:{name}.example:5060", destinations=destinations, priority=priority, weight=weight, **kw
    )


US_NYC, CA_TORONTO, JM, PR = "+12122001234", "+14165550123", "+18762091234", "+17875550100"
FR_PARIS, DE_BERLIN, GB_LONDON, GB_MOBILE = "+33142685300", "+4930901820", "+442079460000", "+447400123456"

NA = trunk("na", "US", "CA", priority=1)
NA_BACKUP = trunk("na-backup", "US", "CA", priority=2)
JAMAICA = trunk("jamaica", "+1876", priority=5)
WORLD = trunk("world", "*", priority=9)
EU_A = trunk("eu-a", "FR", "DE", "GB", priority=1)
EU_B = trunk("eu-b", "FR", "DE", "GB", priority=1)
EU_BACKUP = trunk("eu-backup", "FR", "DE", "GB", priority=2)
LONDON = trunk("london", "+4420", priority=7)
UK = trunk("uk", "+44", priority=8)
NANP = trunk("nanp", "+1", priority=9)

CASES = [
    # (id, e164, region, trunks, down, turn, expected names in order)
    ("region match, then priority", US_NYC, "US", [NA_BACKUP, NA], (), 0, ["na", "na-backup"]),
    ("CA is in the US/CA trunk", CA_TORONTO, "CA", [NA, NA_BACKUP], (), 0, ["na", "na-backup"]),
    ("JM is +1 but not US/CA", JM, "JM", [NA, NA_BACKUP], (), 0, []),
    ("PR is +1 but not US/CA", PR, "PR", [NA, NA_BACKUP, WORLD], (), 0, ["world"]),
    ("a +1876 prefix takes JM", JM, "JM", [NA, JAMAICA, WORLD], (), 0, ["jamaica", "world"]),
    ("prefix ranks ahead of region, whatever the priority", US_NYC, "US", [NA, NANP], (), 0, ["nanp", "na"]),
    ("longer prefix first", GB_LONDON, "GB", [UK, LONDON], (), 0, ["london", "uk"]),
    ("then the shorter prefix, then regions", GB_LONDON, "GB", [EU_A, UK, LONDON], (), 0, ["london", "uk", "eu-a"]),
    ("a prefix that does not match is no match", GB_MOBILE, "GB", [LONDON, EU_BACKUP], (), 0, ["eu-backup"]),
    ("catch-all ranks after regions", US_NYC, "US", [trunk("any", "*"), NA], (), 0, ["na", "any"]),
    ("non-geographic numbers: prefixes and * only", "+80012345678", "001", [NA, WORLD], (), 0, ["world"]),
    ("no region given", US_NYC, None, [NA, NANP], (), 0, ["nanp"]),
    ("no route", FR_PARIS, "FR", [NA, NA_BACKUP, JAMAICA], (), 0, []),
    ("no trunks at all", FR_PARIS, "FR", [], (), 0, []),
    ("equal priority, turn 0", FR_PARIS, "FR", [EU_A, EU_B, EU_BACKUP], (), 0, ["eu-a", "eu-b", "eu-backup"]),
    ("equal priority, turn 1", FR_PARIS, "FR", [EU_A, EU_B, EU_BACKUP], (), 1, ["eu-b", "eu-a", "eu-backup"]),
    ("equal priority, turn 2", FR_PARIS, "FR", [EU_A, EU_B, EU_BACKUP], (), 2, ["eu-a", "eu-b", "eu-backup"]),
    ("down trunk goes last", US_NYC, "US", [NA, NA_BACKUP], ("na",), 0, ["na-backup", "na"]),
    (
        "down trunks keep their order at the end",
        FR_PARIS,
        "FR",
        [EU_A, EU_B, EU_BACKUP],
        ("eu-a", "eu-b"),
        0,
        ["eu-backup", "eu-a", "eu-b"],
    ),
    (
        "all down: still all of them, in order",
        US_NYC,
        "US",
        [NA, NA_BACKUP],
        ("na", "na-backup"),
        0,
        ["na", "na-backup"],
    ),
    ("down names that do not match change nothing", US_NYC, "US", [NA], ("eu-a",), 0, ["na"]),
]


@pytest.mark.parametrize(
    ("e164", "region", "trunks", "down", "turn", "expected"), [pytest.param(*case[1:], id=case[0]) for case in CASES]
)
def test_route(e164, region, trunks, down, turn, expected):
    assert [t.name for t in route(e164, region, trunks, down=frozenset(down), turn=turn)] == expected


def test_three_equal_trunks_rotate():
    a, b, c = trunk("a", "FR"), trunk("b", "FR"), trunk("c", "FR")
    firsts = [route(FR_PARIS, "FR", [a, b, c], turn=n)[0].name for n in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert [t.name for t in route(FR_PARIS, "FR", [a, b, c], turn=2)] == ["c", "a", "b"]


@pytest.mark.parametrize(("weights", "calls"), [((2, 1), 300), ((3, 1, 1), 500), ((1, 1), 10), ((5, 2), 70)])
def test_weights_share_calls_exactly_and_interleave(weights, calls):
    trunks = [trunk(f"t{i}", "FR", weight=w) for i, w in enumerate(weights)]
    firsts = [route(FR_PARIS, "FR", trunks, turn=n)[0].name for n in range(calls)]
    shares = Counter(firsts)
    assert [shares[f"t{i}"] for i in range(len(weights))] == [calls * w // sum(weights) for w in weights]
    # smooth: the heaviest trunk never takes more than its weight's worth in a row
    longest = max(len(run) for run in "".join(f[-1] for f in firsts).replace("1", " ").replace("2", " ").split())
    assert longest <= max(1, weights[0] // max(1, sum(weights) - weights[0]) + 1)


def test_weights_only_matter_within_equal_priority():
    heavy, light = trunk("heavy", "FR", priority=2, weight=100), trunk("light", "FR", priority=1, weight=1)
    assert {route(FR_PARIS, "FR", [heavy, light], turn=n)[0].name for n in range(50)} == {"light"}


def test_every_call_gets_every_matching_trunk_as_fallback():
    trunks = [EU_A, EU_B, EU_BACKUP, UK, LONDON, WORLD, NA]
    for turn in range(5):
        names = [t.name for t in route(GB_LONDON, "GB", trunks, turn=turn)]
        assert sorted(names) == sorted(["eu-a", "eu-b", "eu-backup", "uk", "london", "world"])
        assert names[:2] == ["london", "uk"] and names[-2:] == ["eu-backup", "world"]


def test_route_is_pure():
    args = (FR_PARIS, "FR", (EU_A, EU_B, EU_BACKUP))
    assert route(*args, turn=7) == route(*args, turn=7)


def test_no_route_is_a_404():
    assert Reason.NO_ROUTE.status == 404 and route(FR_PARIS, "FR", [NA]) == ()


def test_trunk_derives_regions_and_prefixes():
    t = trunk("x", "US", "+1876", "+1", "*")
    assert t.regions == {"US"} and t.prefixes == ("+1876", "+1") and t.any_destination
    assert "secret" not in repr(trunk("y", "US", username="u", password="secret"))


# --- caller ID ----------------------------------------------------------------------------

DEFAULT = "sip:+18005550100@gw.example"


@pytest.mark.parametrize(
    ("tenant_cid", "trunk_cid", "expected"),
    [
        (None, None, DEFAULT),
        (None, "sip:+442079460001@carrier.example;user=phone", "sip:+442079460001@carrier.example;user=phone"),
        ("+33142685300", None, "sip:+33142685300@gw.example"),
        ("+33142685300", "sip:+442079460001@carrier.example;user=phone", "sip:+33142685300@carrier.example;user=phone"),
        ("+33142685300", "tel:+442079460001", "tel:+33142685300"),
        ("+33142685300", "sips:gw.example", "sips:+33142685300@gw.example"),
    ],
)
def test_caller_id_precedence(tenant_cid, trunk_cid, expected):
    tenant = Tenant(id="t", caller_id=tenant_cid)
    assert caller_id_for(tenant, trunk("t", "*", caller_id=trunk_cid), DEFAULT) == expected


def test_caller_id_without_tenant_or_trunk():
    assert caller_id_for(None, None, DEFAULT) == DEFAULT
    assert caller_id_for(Tenant(id="t", caller_id="+33142685300"), None, DEFAULT) == "sip:+33142685300@gw.example"


# --- check_trunks -------------------------------------------------------------------------


def test_a_clean_set_has_no_findings():
    assert check_trunks([NA, NA_BACKUP, JAMAICA, EU_A, EU_B, EU_BACKUP, LONDON, WORLD]) == []
    # with UK's +44, GB on the EU trunks only ever backs it up: worth a warning
    assert len(check_trunks([EU_A, UK])) == 1


@pytest.mark.parametrize(
    ("trunks", "fragment"),
    [
        ([trunk("a", "US"), trunk("A", "CA")], "error: trunks[1].name: 'A' is also the name of trunks[0]"),
        ([trunk("a", "US", "XX")], "error: trunks[0].destinations[1]: 'XX' is not an ISO region code"),
        ([trunk("a", "+1-876")], "error: trunks[0].destinations[0]: '+1-876' is not a \"+digits\" prefix"),
        ([trunk("a", "+1234567890123456")], "error: trunks[0].destinations[0]"),
        (
            [trunk("a", "US", username="u", password_env="A_PASSWORD")],
            "error: trunks[0].password_env: the environment variable A_PASSWORD is not set (trunk a)",
        ),
        ([trunk("a", "+999")], "warning: trunks[0].destinations[0]: no E.164 number starts with +999"),
        ([trunk("a", "+0")], "warning: trunks[0].destinations[0]: no E.164 number starts with +0"),
        (
            [trunk("a", "+3"), trunk("b", *(f"+3{d}" for d in range(10)))],
            "warning: trunks[0].destinations[0]: +3 is shadowed",
        ),
        (
            [trunk("a", "US", priority=0), trunk("b", "+1", priority=5)],
            "warning: trunks[0].destinations[0]: US never puts a first: every US number matches +1 of b",
        ),
    ],
)
def test_check_trunks_findings(trunks, fragment):
    findings = check_trunks(trunks)
    assert any(f.startswith(fragment) for f in findings), findings


def test_check_trunks_keys_and_levels():
    t = Trunk(name="a", uri="sip:a", destinations=("US",), username="u", password_env="X", key="trunk")
    (finding,) = check_trunks([t])
    assert finding.startswith("error: trunk.password_env: ")
    resolved = Trunk(name="a", uri="sip:a", destinations=("US",), username="u", password_env="X", password="s")
    assert check_trunks([resolved]) == []
    # a partly covered prefix is not shadowed: +33 numbers outside +331 still go to a first
    assert check_trunks([trunk("a", "+33"), trunk("b", "+331")]) == []
