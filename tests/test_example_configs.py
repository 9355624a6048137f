"""The configs users copy keep the toll-fraud defaults of examples/gateway.toml.

docker/gateway.toml and docker/kamailio-plugin.toml are what the compose demo
runs, and what an operator trying the project is likely to start from. They
once drifted to `number_validation = "possible"` without "unknown" among the
blocked types: an unassigned number in a premium range would have been dialled.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gateway.toml"
SAFETY_KEYS = ("number_validation", "blocked_number_types", "default_dialout_policy", "max_call_length_s")


@pytest.mark.parametrize("path", ["docker/gateway.toml", "docker/kamailio-plugin.toml"])
def test_a_shipped_config_is_no_looser_than_the_example(path: str) -> None:
    example = tomllib.loads(EXAMPLE.read_text())["policy"]
    shipped = tomllib.loads((ROOT / path).read_text())["policy"]
    assert example["number_validation"] == "valid" and "unknown" in example["blocked_number_types"]
    for key in SAFETY_KEYS:
        assert shipped.get(key) == example.get(key), f"{path}: [policy].{key} differs from examples/gateway.toml"
    assert shipped.get("guards", {}) == example.get("guards", {}), f"{path}: [policy.guards] differs"
