"""Keep the functional core pure: ``policy/`` and ``sip/`` never import
pjsua2, nor anything from ``gateway`` or ``store`` (house-style.md); the
offline tools in ``ops/`` never import pjsua2 nor the live service
(``gateway``), so they run wherever the log file is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("policy", "sip")
FORBIDDEN = frozenset(("pjsua2", "pjsua", "gateway", "store"))
# Package -> the top-level modules it must not import.
LAYERS = {
    "policy": FORBIDDEN,
    "sip": FORBIDDEN,
    "ops": frozenset(("pjsua2", "pjsua", "gateway")),
}


def forbidden_imports(source: str, filename: str = "<src>", forbidden: frozenset[str] = FORBIDDEN) -> list[str]:
    """Every forbidden import in ``source``: ``import x``, ``from x import``,
    ``from .. x import`` (a sibling top-level package), and
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names = [node.module]
            elif node.level >= 2:
                # from ..gateway import x / from .. import gateway
                names = [node.module] if node.module else [alias.name for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names = [arg.value]
        for name in names:
            if name.split(".", 1)[0] in forbidden:
                found.append(f"{filename}:{node.lineno}: {name}")
    return found


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_package_has_sources(package):
    # so that the layering test below cannot pass vacuously
    assert len(_sources(package)) >= 5


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_packages_do_not_import_the_shell(package):
    offenders = []
    for path in _sources(package):
        offenders += forbidden_imports(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)),
                                       LAYERS[package])
    assert offenders == [], f"{package}/ imports what it must not:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source, bad",
    [
        ("import pjsua2 as pj", True),
        ("import os, pjsua2", True),
        ("from pjsua2 import Call", True),
        ("from gateway.relay import RelayedCall", True),
        ("import store.ledger", True),
        ("from .. import gateway", True),
        ("from ..store import ledger", True),
        ("import importlib\nimportlib.import_module('pjsua2')", True),
        ("__import__('gateway')", True),
        ("def f():\n    import pjsua2\n", True),
        ("from . import message", False),
        ("from .uri import parse_uri", False),
        ("import phonenumbers", False),
        ("import gatewayish", False),
        ("x = 'pjsua2'", False),
    ],
)
def test_checker_catches_forbidden_imports(source, bad):
    assert bool(forbidden_imports(source)) is bad


@pytest.mark.parametrize("source, bad", [
    ("from gateway.logs import get_logger", True),
    ("import pjsua2", True),
    ("from ops.logs import reading", False),
    ("import store", False),
])
def test_ops_checker_forbids_the_service_and_pjsua2(source, bad):
    assert bool(forbidden_imports(source, forbidden=LAYERS["ops"])) is bad
