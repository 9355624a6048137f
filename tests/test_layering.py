"""Keep the layers apart (house-style.md), by static analysis of the imports:

- the functional core, ``policy/`` and ``sip/``, never imports pjsua2, nor
  anything from ``gateway`` or ``store``;
- the call lifecycle, ``call/``, is sans-I/O: no pjsua2, no ``gateway``, no
  ``store`` (``sip`` helpers only);
- the offline tools in ``ops/`` never import pjsua2 nor the live service
  (``gateway``), so they run wherever the log file is;
- ``store/`` never imports ``gateway`` or pjsua2 (the gateway adopts the
  store's API, not the other way round);
- the project's packages import each other without a cycle, and so do the
  modules inside ``store/``, ``policy/`` and ``sip/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("policy", "sip", "store", "call", "ops", "gateway")
PURE_PACKAGES = ("policy", "sip")
FORBIDDEN = frozenset(("pjsua2", "pjsua", "gateway", "store"))
FORBIDDEN_IN = {
    "policy": FORBIDDEN,
    "sip": FORBIDDEN,
    "call": FORBIDDEN | {"policy"},
    "store": frozenset(("pjsua2", "pjsua", "gateway")),
    "ops": frozenset(("pjsua2", "pjsua", "gateway")),
}


def _imported_names(node: ast.AST, package: str | None = None) -> list[str]:
    """The modules one AST node imports, as written or resolved.

    ``import x`` / ``from x import y`` give ``x``; ``importlib.import_module("x")``
    and ``__import__("x")`` with a literal give ``x``. Relative imports are
    resolved against `package` (the importing module's package, dotted) when
    it is given; without it, ``from .. x import`` gives ``x`` (a sibling
    top-level package) and ``from . import`` gives nothing.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            base = node.module or ""
            return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        if package is None:
            if node.level >= 2:  # from ..gateway import x / from .. import gateway
                return [node.module] if node.module else [alias.name for alias in node.names]
            return []
        parts = package.split(".")
        if node.level - 1 > len(parts):
            return []
        anchor = parts[: len(parts) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*"]
        return ([base] if base else []) + names
    if isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return [arg.value]
    return []


def forbidden_imports(source: str, filename: str = "<src>", forbidden: frozenset[str] = FORBIDDEN) -> list[str]:
    """Every import in ``source`` of a top-level package in `forbidden`, lazy ones included."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names = _imported_names(node)
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = names[:1]  # `from gateway import x`: report the module once
        for name in names:
            if name.split(".", 1)[0] in forbidden:
                found.append(f"{filename}:{node.lineno}: {name}")
    return found


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``: they never run."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def module_imports(path: Path) -> set[str]:
    """The modules that the module at `path` imports when it runs (lazy imports
    inside functions included, ``if TYPE_CHECKING:`` blocks not)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_only(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) not in skip:
            out.update(_imported_names(node, package))
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph, as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def package_graph() -> dict[str, set[str]]:
    """Which project package imports which other one."""
    graph: dict[str, set[str]] = {p: set() for p in PROJECT_PACKAGES}
    for package in PROJECT_PACKAGES:
        for path in _sources(package):
            for name in module_imports(path):
                top = name.split(".", 1)[0]
                if top in PROJECT_PACKAGES and top != package:
                    graph[package].add(top)
    return graph


def module_graph(package: str) -> dict[str, set[str]]:
    """Which module of `package` imports which other module of it. ``from
    store import x`` counts as an import of ``store.x`` when that is a module,
    else of ``store`` (the package's ``__init__``)."""
    modules = {_module_name(p): p for p in _sources(package)}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in module_imports(path):
            if name in modules and name != module:
                graph[module].add(name)
    # `from store import open_store` yields both "store" and "store.open_store";
    # only names that are modules were kept, so the package itself stays.
    return graph


# --------------------------------------------------------------------------- the checks


def test_packages_have_sources():
    # so that the layering tests below cannot pass vacuously
    assert len(_sources("sip")) >= 5
    assert len(_sources("store")) >= 10
    assert len(_sources("call")) >= 4
    assert len(_sources("ops")) >= 5


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IN))
def test_lower_layers_do_not_import_the_shell(package):
    offenders = []
    for path in _sources(package):
        offenders += forbidden_imports(
            path.read_text(encoding="utf-8"), str(path.relative_to(REPO)), FORBIDDEN_IN[package]
        )
    assert offenders == [], f"{package}/ imports a layer above it:\n" + "\n".join(offenders)


def test_project_packages_import_each_other_without_a_cycle():
    graph = package_graph()
    assert find_cycle(graph) is None, f"import cycle between packages: {' -> '.join(find_cycle(graph))}"
    # The direction the house style wants, so that this test is not vacuous either.
    assert {"store", "policy", "sip", "call"} <= graph["gateway"]
    assert graph["policy"] == graph["sip"] == graph["store"] == set()
    assert graph["call"] == {"sip"}


@pytest.mark.parametrize("package", ("store", "policy", "sip", "call", "ops", "gateway"))
def test_modules_import_each_other_without_a_cycle(package):
    graph = module_graph(package)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in {package}/: {' -> '.join(cycle)}"


def test_store_report_no_longer_imports_the_store_that_imports_it():
    graph = module_graph("store")
    assert "store.report" in graph["store.base"]
    assert "store.base" not in graph["store.report"]


# --------------------------------------------------------------------------- the checkers themselves


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


def test_relative_imports_resolve_against_the_package():
    tree = ast.parse("from .uri import parse_uri\nfrom .. import gateway\nfrom . import message")
    names = [n for node in tree.body for n in _imported_names(node, "sip")]
    assert names == ["sip.uri", "sip.uri.parse_uri", "gateway", "sip", "sip.message"]


@pytest.mark.parametrize(
    "graph, cyclic",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a"}}, True),
        ({"x": set(), "a": {"b"}, "b": {"a"}}, True),
    ],
)
def test_cycle_finder(graph, cyclic):
    cycle = find_cycle(graph)
    assert (cycle is not None) is cyclic
    if cycle:
        assert cycle[0] == cycle[-1] and all(b in graph[a] for a, b in zip(cycle, cycle[1:]))


@pytest.mark.parametrize(
    "source, bad",
    [
        ("from gateway.logs import get_logger", True),
        ("import pjsua2", True),
        ("from ops.logs import reading", False),
        ("import store", False),
    ],
)
def test_ops_checker_forbids_the_service_and_pjsua2(source, bad):
    assert bool(forbidden_imports(source, forbidden=FORBIDDEN_IN["ops"])) is bad
