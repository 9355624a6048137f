"""The suite reads nothing outside the repository: a fresh clone has no
sibling ``shared`` directory beside it. Test data lives under ``tests/data`` (the RFC 4475 corpus is
vendored there with its origin in its README)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A path that climbs out of the repository: the sibling shared directory, parents[N] / "..", etc.
OUTSIDE = re.compile(r"""\.\./shared|["']\.\.["']\s*/|parents\[\d+\]\s*/\s*["']\.\.["']|/work/shared""")


def tracked(*paths: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line]


def test_no_test_script_or_benchmark_reads_outside_the_repository():
    offenders = []
    for path in tracked("tests", "scripts", "bench", "Makefile"):
        if path.suffix in {".dat", ".xml", ".csv", ".json"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line) and path.name != "test_self_contained.py":
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "reads outside the repository:\n" + "\n".join(offenders)


def test_rfc4475_corpus_is_vendored_with_its_origin():
    corpus = ROOT / "tests" / "data" / "rfc4475"
    messages = {p.name for p in corpus.glob("*.dat")} - {"test.dat"}  # test.dat: an extra, not the RFC's
    assert len(messages) == 49
    assert "RFC 4475" in (corpus / "README.md").read_text()
