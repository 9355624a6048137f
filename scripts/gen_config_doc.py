#!/usr/bin/env python3
"""Write docs/config.md from the config schema (gateway/schema.py).

    .venv/bin/python scripts/gen_config_doc.py          # rewrite docs/config.md
    .venv/bin/python scripts/gen_config_doc.py --check  # exit 1 if docs/config.md is not current

Every key of every section: its type and range (the same words the error
messages use), its default and its meaning. tests/gateway/test_config_doc.py
fails when the committed file differs from what this script writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, get_args, get_origin

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from gateway.config_types import _split, describe, show_number  # noqa: E402
from gateway.schema import ConfigFile, Section, toml_fields  # noqa: E402

DOC = REPO / "docs" / "config.md"

INTRO = """\
# Configuration reference

<!-- Generated from gateway/schema.py by scripts/gen_config_doc.py: edit those, not this file.
     tests/gateway/test_config_doc.py fails when this file is not current. -->

The gateway reads one TOML file ([examples/gateway.toml](../examples/gateway.toml)
is a complete, commented example). Every section and key below is declared
once, in `gateway/schema.py`, and validated when the file is read:

- unknown keys are errors, so a typo never silently means "the default";
- types are strict: no `"5"` for 5, no `true` for 1, no `2.0` for an integer;
- numbers must be finite (TOML can spell `nan` and `inf`; a `nan` limit
  would never trigger) and inside the range given here;
- an error is one line that names the file, the key path and what was
  expected, and `dialout-gw` exits 2:
  `gateway.toml: trunks[1].priority: expected an integer >= 0 and <= 1000, got -3`.

Key paths count array entries from 0, in file order. `dialout-gw run`
also needs `[gateway]` and a trunk (`[trunk]` or `[[trunks]]`), and reads
the trunks' `password_env` variables; the other commands (`explain`,
`usage`, `db`, `directory`) read the same file without them. What the
policy keys mean in depth is in [policy.md](policy.md), trunks and caller
IDs in [routing.md](routing.md), the ledger in [ledger.md](ledger.md).
"""


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return show_number(value) if isinstance(value, int) or not float(value).is_integer() else f"{value:.1f}"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _default(info) -> str:
    extra = info.json_schema_extra or {}
    if "shown" in extra:
        return extra["shown"]
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None:
        return "none"
    return f"`{_toml(info.default)}`"


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(section model, is an array of tables) for a field's annotation, else (None, False)."""
    bare, _ = _split(annotation)
    if isinstance(bare, type) and issubclass(bare, Section):
        return bare, False
    if get_origin(bare) is list:
        item, _ = _split(get_args(bare)[0])
        if isinstance(item, type) and issubclass(item, Section):
            return item, True
    return None, False


def _title(path: str, array: bool) -> str:
    if "[]" in path:  # a table inside each entry of an array of tables
        return f"`{path}`"
    return f"`[[{path}]]`" if array else f"`[{path}]`"


def _section(path: str, model: type[BaseModel], array: bool, out: list[str]) -> None:
    out += ["", f"## {_title(path, array)}", ""]
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    doc = re.sub(r"^`[^`]*`: ", "", doc)  # the heading names the table already
    if doc:
        out += [doc, ""]
    out += ["| key | type and range | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, info in toml_fields(model).items():
        sub, sub_array = _model_of(info.annotation)
        child = f"{path}[].{name}" if array else f"{path}.{name}"
        if sub is not None and not sub_array:
            nested.append((child, sub, False))
            continue
        if sub is not None:
            nested.append((child, sub, True))
        annotation = info.annotation
        kind = describe(annotation if not info.metadata else _with_meta(annotation, info.metadata))
        out.append(f"| `{name}` | {_escape(kind)} | {_escape(_default(info))} | {_escape(info.description or '')} |")
    for sub_path, sub, sub_array in nested:
        _section(sub_path, sub, sub_array, out)


def _with_meta(annotation: Any, metadata: list) -> Any:
    from typing import Annotated

    return Annotated[(annotation, *metadata)]


def render() -> str:
    out = [INTRO.rstrip("\n")]
    for name, info in toml_fields(ConfigFile).items():
        model, array = _model_of(info.annotation)
        assert model is not None, name
        _section(name, model, array, out)
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC.relative_to(REPO)} is not current: run scripts/gen_config_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
