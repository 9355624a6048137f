"""The plugin's place in the layers (house-style.md): it is a shell, like
gateway/, but a thin one. It uses the functional core (policy, sip) and the
store as they are, and from gateway/ only the pjsua2-free config, settings
and logging modules, so that Kamailio never loads pjsua2 or the gateway's
SIP engine. Only kemi.py touches Kamailio's KSR."""

from __future__ import annotations

from tests.test_layering import REPO, _sources, find_cycle, module_graph, module_imports

ALLOWED_FROM_GATEWAY = {"gateway.config", "gateway.settings", "gateway.logs"}


def test_the_plugin_has_sources():
    assert {p.name for p in _sources("kamailio_plugin")} >= {"core.py", "kemi.py", "settings.py"}


def test_the_plugin_imports_no_pjsua2_and_only_the_gateways_config_and_logging():
    offenders = []
    for path in _sources("kamailio_plugin"):
        for name in module_imports(path):
            top = name.split(".", 1)[0]
            if top in ("pjsua2", "pjsua", "call"):
                offenders.append(f"{path.name}: {name}")
            if (
                top == "gateway"
                and name != "gateway"
                and not any(name == m or name.startswith(m + ".") for m in ALLOWED_FROM_GATEWAY)
            ):
                offenders.append(f"{path.name}: {name}")
    assert offenders == [], offenders


def test_only_the_kemi_glue_imports_ksr():
    users = sorted(p.name for p in _sources("kamailio_plugin") if "KSR" in module_imports(p))
    assert users == ["kemi.py"]


def test_no_project_package_imports_the_plugin():
    for package in ("policy", "sip", "store", "call", "ops", "gateway"):
        for path in _sources(package):
            assert not any(n.split(".", 1)[0] == "kamailio_plugin" for n in module_imports(path)), path


def test_the_plugins_modules_import_each_other_without_a_cycle():
    assert find_cycle(module_graph("kamailio_plugin")) is None
    assert (REPO / "kamailio_plugin" / "__init__.py").exists()
