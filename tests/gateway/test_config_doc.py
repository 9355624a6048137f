"""docs/config.md is generated from the schema (scripts/gen_config_doc.py) and must be current."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_doc", REPO / "scripts" / "gen_config_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_config_md_is_current():
    gen = _generator()
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == gen.render(), (
        "docs/config.md is not current: run .venv/bin/python scripts/gen_config_doc.py and commit it"
    )


def test_every_key_of_the_schema_is_documented():
    from gateway.config_types import _split
    from gateway.schema import ConfigFile, Section, toml_fields

    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    seen = set()

    def walk(model):
        if model in seen:
            return
        seen.add(model)
        for name, info in toml_fields(model).items():
            assert info.description, f"{model.__name__}.{name} has no meaning (description)"
            bare, _ = _split(info.annotation)
            inner = getattr(bare, "__args__", (None,))[0] if getattr(bare, "__origin__", None) is list else bare
            inner, _ = _split(inner) if inner is not None else (None, [])
            if isinstance(inner, type) and issubclass(inner, Section):
                walk(inner)
            else:
                assert f"| `{name}` |" in text, name

    walk(ConfigFile)
