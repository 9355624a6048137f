"""Fixtures for tests/policy (helpers live in policy_testlib.py)."""

from __future__ import annotations

import pytest
from policy_testlib import make_settings

from policy import PolicySettings


@pytest.fixture(scope="session")
def settings() -> PolicySettings:
    return make_settings()
