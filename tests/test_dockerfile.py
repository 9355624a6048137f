"""docker/Dockerfile, read without Docker (there is none on the build machine).

The builder stage must build the project as scripts/setup.sh does: every
package setuptools finds, setup.py and csrc/ (the C extension), the files
build_pjsua2.sh reads, setup.sh's Debian packages. A package added to
pyproject.toml and forgotten here would build a wheel without it, and the
image would fail only when that import runs. tests/integration/
test_wheel_install.py then builds and installs the wheel from these COPY lines.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"


@dataclass(frozen=True)
class Instruction:
    stage: str  # the stage's name (FROM … AS name)
    keyword: str  # COPY, RUN, ENV, …
    args: str  # the rest, continuation lines joined


def instructions(path: Path | None = None) -> list[Instruction]:
    """The Dockerfile's instructions, with `\\` continuations joined and comments dropped."""
    path = path or DOCKERFILE
    out: list[Instruction] = []
    stage = ""
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment line inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
        out.append(Instruction(stage, keyword, args.strip()))
    assert not pending, f"{path}: a continuation line at the end"
    return out


def copies(stage: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each build-context COPY in `stage` (no --from)."""
    out = []
    for ins in instructions():
        if ins.stage != stage or ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


def copied_paths(stage: str) -> dict[str, str]:
    """Each source path the stage copies from the context -> where it lands,
    relative to the stage's WORKDIR (/src in the builder)."""
    out = {}
    for sources, dest in copies(stage):
        for src in sources:
            src_norm = posixpath.normpath(src)
            if dest.endswith("/") and not src.endswith("/"):  # a file into a directory
                out[src_norm] = posixpath.normpath(posixpath.join(dest, posixpath.basename(src_norm)))
            else:  # a file to a file, or a directory's contents into a directory
                out[src_norm] = posixpath.normpath(dest)
    return out


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def ignored(relpath: str, patterns: list[str] | None = None) -> bool:
    """Whether the build context leaves out `relpath` (or one of its parents), for
    the patterns this repository's .dockerignore uses: plain paths, `*` and `**/`."""
    patterns = dockerignore_patterns() if patterns is None else patterns
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        for prefix in prefixes:
            if pattern.startswith("**/"):
                if fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:]):
                    return True
            elif fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/"):
                return True
    return False


def project_packages() -> set[str]:
    """The top-level packages setuptools puts in the wheel (pyproject's packages.find)."""
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    found = find_packages(where=str(ROOT), include=include)
    return {name.split(".", 1)[0] for name in found}


def builder_run(needle: str) -> str:
    runs = [
        ins.args for ins in instructions() if ins.stage == "builder" and ins.keyword == "RUN" and needle in ins.args
    ]
    assert len(runs) == 1, f"one builder RUN with {needle!r}, found {len(runs)}"
    return runs[0]


# --------------------------------------------------------------------------- tests


def test_the_builder_copies_every_package_setup_py_and_csrc():
    packages = project_packages()
    assert {"gateway", "sip", "policy", "store", "call", "ops", "kamailio_plugin"} <= packages, packages
    copied = copied_paths("builder")
    needed = packages | {"pyproject.toml", "setup.py", "README.md", "csrc"}
    missing = sorted(p for p in needed if copied.get(p) != p)
    assert not missing, f"docker/Dockerfile's builder does not COPY (to the same path): {missing}"
    for path in needed:
        assert (ROOT / path).exists() and not ignored(path), path
    # The wheel step runs after the sources are in place.
    order = [ins for ins in instructions() if ins.stage == "builder" and ins.keyword in ("COPY", "RUN")]
    wheel_step = next(i for i, ins in enumerate(order) if "pip wheel" in ins.args)
    last_copy = max(i for i, ins in enumerate(order) if ins.keyword == "COPY")
    assert last_copy < wheel_step


def test_the_builder_copies_what_build_pjsua2_reads():
    script = (ROOT / "scripts" / "build_pjsua2.sh").read_text()
    read = set(re.findall(r"\$here/([\w.-]+)", script))
    assert {"config_site.h", "pjproject.lock"} <= read, read
    copied = copied_paths("builder")
    assert "scripts/build_pjsua2.sh" in copied
    missing = sorted(f for f in read if copied.get(f"scripts/{f}") != f"scripts/{f}")
    assert not missing, f"build_pjsua2.sh reads scripts/{missing} but the builder does not COPY them"
    # …and they come before the pjsua2 build, which must not depend on the project's code.
    order = [ins for ins in instructions() if ins.stage == "builder" and ins.keyword in ("COPY", "RUN")]
    build = next(i for i, ins in enumerate(order) if "build_pjsua2.sh /opt/build-venv" in ins.args)
    assert all("scripts/" in ins.args for ins in order[:build] if ins.keyword == "COPY")


def test_the_builder_builds_the_c_extension_as_setup_sh_does():
    """pjsua2 installed in the build venv, PJSUA2_BUILD_DIR holding the build's
    include/ and cflags (copied out of the cache mount in the same RUN), and no
    build isolation, so that setup.py sees both."""
    env = " ".join(ins.args for ins in instructions() if ins.stage == "builder" and ins.keyword == "ENV")
    build_dir = re.search(r"PJSUA2_BUILD_DIR=(\S+)", env)
    assert build_dir, "the builder sets PJSUA2_BUILD_DIR"
    pjsua2 = builder_run("build_pjsua2.sh")
    assert "--mount=type=cache,target=/root/.cache/dialout-gateway" in pjsua2
    assert re.search(
        r'cp -a "\$\(dirname "\$wheel"\)/include" "\$\(dirname "\$wheel"\)/cflags" '
        r'"\$PJSUA2_BUILD_DIR/"',
        pjsua2,
    ), pjsua2
    assert re.search(r'/opt/build-venv/bin/pip install .*--no-deps "\$wheel"', pjsua2), pjsua2
    wheel = builder_run("pip wheel")
    assert wheel.startswith("/opt/build-venv/bin/pip wheel") and "--no-build-isolation" in wheel
    assert "--no-deps" in wheel and "-w /wheels ." in wheel
    venv = builder_run("python3 -m venv /opt/build-venv")
    assert '"setuptools>=68"' in venv  # what scripts/setup.sh installs before the project
    assert '"setuptools>=68"' in (ROOT / "scripts" / "setup.sh").read_text()


def test_the_builder_installs_setup_sh_packages():
    """scripts/setup.sh's package list (its runtime one, less SIPp) is in the builder's apt-get."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    listed = re.search(r"^packages=\(([^)]*)\)", setup, re.M).group(1).split()
    apt = builder_run("apt-get install")
    installed = set(apt.split())
    missing = sorted(set(listed) - installed - {"sip-tester"})
    assert not missing, f"scripts/setup.sh installs {missing}, docker/Dockerfile's builder does not"


def test_the_images_install_both_wheels_and_check_the_extension():
    """The runtime images install the builder's two wheels into their venv and
    run the CLI at build time; the gateway image also imports the C extension,
    so a wrong rpath fails the build, not the first call."""
    for stage, venv_bin in (("gateway", "/opt/dialout/bin/"), ("kamailio-plugin", "/opt/dialout-gateway/.venv/bin/")):
        runs = [
            ins.args
            for ins in instructions()
            if ins.stage == stage and ins.keyword == "RUN" and "from=builder,source=/wheels" in ins.args
        ]
        assert len(runs) == 1, stage
        assert f"{venv_bin}pip install" in runs[0] and "/wheels/*.whl" in runs[0], runs[0]
        assert "dialout-gw --version" in runs[0], stage
    gateway = next(ins.args for ins in instructions() if ins.stage == "gateway" and "from=builder" in ins.args)
    assert '/opt/dialout/bin/python -c "import gateway._sipcore"' in gateway


def test_the_kamailio_plugin_image_matches_its_loader_and_cfg():
    """The venv is where examples/kamailio/dialout.py looks by default, made with
    bookworm's python3 (3.11, what app_python3 embeds); the cfg and the loader
    are copied as shipped, and the entrypoint names the loader."""
    stage = [ins for ins in instructions() if ins.stage == "kamailio-plugin"]
    assert stage, "docker/Dockerfile has a kamailio-plugin stage"
    release = re.search(r"^ARG DEBIAN_RELEASE=(\w+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert release == "bookworm"  # python3 is 3.11 there; the venv path below says so
    assert f"FROM {stage[0].args}" == "FROM debian:${DEBIAN_RELEASE}-slim AS kamailio-plugin"
    apt = next(ins.args for ins in stage if "apt-get install" in ins.args).split()
    assert {"kamailio", "kamailio-python3-modules", "python3", "python3-venv"} <= set(apt)
    env = " ".join(ins.args for ins in stage if ins.keyword == "ENV")
    loader = (ROOT / "examples" / "kamailio" / "dialout.py").read_text()
    default_site = re.search(r'"DIALOUT_SITE_PACKAGES", "([^"]+)"', loader).group(1)
    default_config = re.search(r'"DIALOUT_CONFIG", "([^"]+)"', loader).group(1)
    assert f"DIALOUT_SITE_PACKAGES={default_site}" in env and f"DIALOUT_CONFIG={default_config}" in env
    venv = next(ins.args for ins in stage if "python3 -m venv" in ins.args)
    assert default_site.startswith(venv.split("python3 -m venv ", 1)[1].split()[0] + "/lib/python3.11/")
    copied = copied_paths("kamailio-plugin")
    assert copied == {
        "examples/kamailio/kamailio.cfg": "/etc/kamailio/dialout/kamailio.cfg",
        "examples/kamailio/dialout.py": "/etc/kamailio/dialout/dialout.py",
    }, copied
    assert not any(ignored(p) for p in copied)
    entrypoint = next(ins.args for ins in stage if ins.keyword == "ENTRYPOINT")
    import json

    argv = json.loads(entrypoint)
    assert argv[argv.index("-f") + 1] == "/etc/kamailio/dialout/kamailio.cfg"
    assert 'DIALOUT_SCRIPT="/etc/kamailio/dialout/dialout.py"' in argv


def test_the_context_leaves_out_the_in_place_extension_and_the_venv():
    assert ignored("gateway/_sipcore.cpython-311-x86_64-linux-gnu.so")
    assert ignored(".venv/bin/python") and ignored("gateway/__pycache__/cli.cpython-311.pyc")
    assert ignored("dialout_gateway.egg-info/PKG-INFO") and ignored("build/lib/gateway/cli.py")
    assert not ignored("gateway/cli.py") and not ignored("csrc/sipcore.c")
    migrations = sorted((ROOT / "store" / "migrations").rglob("*.sql"))
    assert migrations and not any(ignored(str(p.relative_to(ROOT))) for p in migrations)
    assert not ignored("examples/kamailio/dialout.py")
