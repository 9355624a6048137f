"""The names other systems see, and the purity of the policy package."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import policy
from policy import Bucket, NumberType, Reason

POLICY_DIR = Path(policy.__file__).parent

CONTRACT = {
    "allowed": 200,
    "untrusted_source": 403,
    "overloaded": 503,
    "organizer_missing": 403,
    "organizer_unknown": 403,
    "number_invalid": 484,
    "destination_blocked": 403,
    "no_audio_conferencing": 403,
    "dialout_disabled": 403,
    "not_domestic": 403,
    "outside_zone_a": 403,
    "limit_concurrency": 480,
    "limit_rate": 480,
    "fraud_suspected": 403,
    "fair_use_exceeded": 403,
    "no_entitlement": 403,
    "trunk_timeout": 408,
    "no_route": 404,
    "sdp_invalid": 488,
}
RELAY_ONLY = {"trunk_failure", "duration_exhausted"}


def test_reason_values_and_statuses_are_the_contract():
    assert {r.value for r in Reason} == set(CONTRACT) | RELAY_ONLY
    for value, status in CONTRACT.items():
        assert Reason(value).status == status
        assert Reason(value).sip_cause == status


def test_transient_reasons_are_exactly_the_retry_after_ones():
    assert {r.value for r in Reason if r.transient} == {"limit_concurrency", "limit_rate", "overloaded"}


def test_reason_header_is_rfc3326():
    assert Reason.NOT_DOMESTIC.reason_header == 'SIP;cause=403;text="not_domestic"'


def test_reasons_are_strings():
    assert f"{Reason.NO_ENTITLEMENT}" == "no_entitlement" and Reason.NO_ENTITLEMENT == "no_entitlement"


def test_bucket_names_and_order():
    assert [b.value for b in Bucket] == ["promotion", "usca_unlimited", "tenant_pool", "credits"]


def test_number_type_wraps_every_phonenumbers_type():
    import phonenumbers

    for name, value in vars(phonenumbers.PhoneNumberType).items():
        if name.isupper():
            assert NumberType.from_phonenumbers(value).value == name.lower()


def test_public_api_names():
    for name in (
        "decide",
        "CallRequest",
        "Snapshot",
        "Decision",
        "Reason",
        "Bucket",
        "NumberType",
        "normalize_destination",
        "PolicySettings",
    ):
        assert hasattr(policy, name)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.py")), ids=lambda p: p.name)
def test_policy_uses_only_stdlib_and_phonenumbers(path):
    allowed = set(sys.stdlib_module_names) | {"phonenumbers", "policy", "__future__"}
    assert _imports(path) <= allowed, _imports(path) - allowed


FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "open", "socket", "connect", "getenv"}


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.py")), ids=lambda p: p.name)
def test_policy_reads_no_clock_file_socket_or_environment(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            assert name not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {name}()"
        if isinstance(node, ast.Attribute):
            assert node.attr != "environ", f"{path.name}:{node.lineno} reads os.environ"
