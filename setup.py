"""Build of the gateway's C extension, gateway._sipcore (csrc/).

It is compiled against the headers of the very pjproject build that made the
installed pjsua2 wheel (scripts/build_pjsua2.sh caches them beside the wheel;
scripts/setup.sh passes that directory as PJSUA2_BUILD_DIR) and linked to
pjsua2's own _pjsua2 shared object, so both use one pjsip instance and the
struct layouts come from the compiler. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import Extension, setup


def sipcore_extension() -> Extension:
    build_dir = os.environ.get("PJSUA2_BUILD_DIR")
    if not build_dir or not (Path(build_dir) / "include" / "pjsip.h").is_file():
        raise SystemExit(
            "setup.py: PJSUA2_BUILD_DIR must name the pjsua2 build of scripts/build_pjsua2.sh "
            "(run scripts/setup.sh, which sets it)"
        )
    spec = importlib.util.find_spec("_pjsua2")
    if spec is None or not spec.origin:
        raise SystemExit(
            "setup.py: the pjsua2 wheel must be installed first (run scripts/setup.sh; pip needs --no-build-isolation)"
        )
    lib = Path(spec.origin)
    defines = []
    for flag in (Path(build_dir) / "cflags").read_text().split():
        name, _, value = flag[2:].partition("=")
        defines.append((name, value or None))
    return Extension(
        "gateway._sipcore",
        sources=sorted(str(p) for p in Path("csrc").glob("*.c")),
        include_dirs=[str(Path(build_dir) / "include")],
        define_macros=defines,
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-fvisibility=hidden", "-Werror"],
        library_dirs=[str(lib.parent)],
        libraries=[f":{lib.name}"],
        # Where _pjsua2 is at run time. An installed wheel has gateway/_sipcore*.so
        # one level below site-packages, where pjsua2's wheel put _pjsua2: "$ORIGIN/.."
        # (docker/Dockerfile builds the wheel in one venv and installs it in another).
        # It comes first, so that an installed wheel never loads the build venv's
        # copy, a second pjsip, while that venv still exists. An in-place build
        # (scripts/setup.sh: gateway/ in the work tree) finds none there and takes
        # the build venv's, the second entry.
        runtime_library_dirs=["$ORIGIN/..", str(lib.parent)],
    )


setup(ext_modules=[sipcore_extension()])
