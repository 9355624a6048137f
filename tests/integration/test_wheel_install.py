"""The images' install route, without Docker: the project's wheel built the way
docker/Dockerfile's builder builds it, then installed with the pjsua2 wheel
into a fresh venv, as the gateway and kamailio-plugin images do.

- the build context is what the builder COPYs (tests/test_dockerfile.py reads
  the COPY lines), with docker/Dockerfile.dockerignore applied;
- a build venv gets the pjsua2 wheel (scripts/build_pjsua2.sh prints the cached
  one), PJSUA2_BUILD_DIR gets that build's include/ and cflags, and
  `pip wheel --no-build-isolation --no-deps .` builds the wheel there;
- a second venv, of the same Python, gets the two wheels and nothing else of
  the project; its commands run outside the work tree. The build venv is then
  removed, as it is not in the images: gateway._sipcore must find _pjsua2
  through its "$ORIGIN/.." rpath.

The third-party dependencies (phonenumbers, pydantic, …, and pip and setuptools)
come from the venv running the tests: a directory of links to its site-packages
less pjsua2, the project's editable install and every .pth file, as a path entry
after each new venv's own site-packages. So `pip --no-index`, no network, and
neither the work tree nor the tests' pjsua2 can stand in for what was installed.

Needs what `make test` installs: the pjsua2 build cached by scripts/setup.sh,
a C compiler, and for the plugin check Debian's kamailio with app_python3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_dockerfile import copied_paths, ignored, project_packages

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASE_PYTHON = sys._base_executable  # the Python the tests' venv was made with
DEPS_SITE = sysconfig.get_paths()["purelib"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would put the work tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env.update(extra)
    return env


def run(cmd: list, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 300) -> str:
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def third_party(dest: Path) -> Path:
    """Links to the tests' site-packages, less pjsua2, this project and .pth files."""
    from importlib.metadata import distribution

    own = {"__pycache__"}
    for name in ("pjsua2", "dialout-gateway"):
        own |= {f.parts[0] for f in distribution(name).files or ()}
    dest.mkdir()
    for entry in Path(DEPS_SITE).iterdir():
        if entry.name not in own and entry.suffix != ".pth" and not entry.name.startswith("__editable__"):
            (dest / entry.name).symlink_to(entry)
    assert not list(dest.glob("*pjsua2*")) and not (dest / "gateway").exists()
    return dest


def make_venv(path: Path, deps: Path) -> SimpleNamespace:
    run([BASE_PYTHON, "-m", "venv", "--without-pip", path], cwd=path.parent)
    python = path / "bin" / "python"
    site = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path.parent).strip()
    )
    (site / "zz_test_dependencies.pth").write_text(f"{deps}\n")
    return SimpleNamespace(path=path, python=python, site=site)


def pip(venv: SimpleNamespace, *args, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run(
        [venv.python, "-m", "pip", args[0], "--no-index", "--no-cache-dir", "--disable-pip-version-check", *args[1:]],
        cwd=cwd,
        env=env,
    )


def copy_context(source: str, dest: Path) -> None:
    """COPY <source> <dest> from the build context (the repository, less .dockerignore)."""
    src = REPO / source
    if src.is_file():
        assert not ignored(source), source
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        return
    for path in sorted(src.rglob("*")):
        if path.is_file() and not ignored(path.relative_to(REPO).as_posix()):
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel-install")

    # The builder: WORKDIR /src, its COPY lines.
    src = tmp / "src"
    for source, dest in copied_paths("builder").items():
        assert not dest.startswith("/"), dest
        copy_context(source, src / dest)

    deps = third_party(tmp / "third-party")
    build = make_venv(tmp / "build-venv", deps)
    out = run([src / "scripts" / "build_pjsua2.sh", build.python], cwd=src, timeout_s=900)
    pjsua2_wheel = Path(out.strip().splitlines()[-1])
    build_dir = tmp / "pjsua2-build"  # out of the cache mount, in the same RUN
    shutil.copytree(pjsua2_wheel.parent / "include", build_dir / "include")
    shutil.copy2(pjsua2_wheel.parent / "cflags", build_dir / "cflags")
    wheels = tmp / "wheels"
    wheels.mkdir()
    shutil.copy2(pjsua2_wheel, wheels)
    pip(build, "install", "--no-deps", pjsua2_wheel, cwd=src)
    pip(
        build,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        wheels,
        ".",
        cwd=src,
        env=clean_env(PJSUA2_BUILD_DIR=str(build_dir)),
    )

    # The image: a fresh venv with the two wheels.
    runtime = make_venv(tmp / "runtime", deps)
    pip(runtime, "install", "--no-deps", *sorted(wheels.glob("*.whl")), cwd=tmp)
    outside = tmp / "elsewhere"
    outside.mkdir()
    return SimpleNamespace(tmp=tmp, build=build, runtime=runtime, wheels=wheels, outside=outside)


def project_wheel(wheels: Path) -> Path:
    (found,) = wheels.glob("dialout_gateway-*.whl")
    return found


def test_the_wheel_holds_every_package_the_migrations_and_the_extension(installed):
    names = zipfile.ZipFile(project_wheel(installed.wheels)).namelist()
    top = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info/" not in n}
    assert top == project_packages(), top
    assert [n for n in names if n.startswith("gateway/_sipcore.") and n.endswith(".so")], names
    migrations = {p.relative_to(REPO).as_posix() for p in (REPO / "store" / "migrations").rglob("*.sql")}
    assert migrations and migrations <= set(names), migrations - set(names)
    assert (
        "dialout-gw = gateway.cli:main"
        in zipfile.ZipFile(project_wheel(installed.wheels))
        .read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
        .decode()
    )


LOADED = """
import json, sys
import gateway._sipcore        # first: the dynamic loader resolves _pjsua2 through its rpath
import gateway, pjsua2
maps = open("/proc/self/maps").read().split()
print(json.dumps({"gateway": gateway.__file__, "pjsua2": pjsua2.__file__, "path": sys.path,
                  "pjsua2_libs": sorted({w for w in maps if "_pjsua2" in w})}))
"""


def test_the_installed_wheel_runs_from_its_own_venv(installed):
    runtime, outside = installed.runtime, installed.outside
    site = str(runtime.site)

    # The build venv still exists (as when one builds and installs on one machine):
    # the extension must still take the runtime venv's _pjsua2, the one pjsua2 uses.
    assert list(installed.build.site.glob("_pjsua2*.so"))
    seen = json.loads(run([runtime.python, "-c", LOADED], cwd=outside))
    assert seen["gateway"].startswith(site + "/") and seen["pjsua2"].startswith(site + "/"), seen
    assert len(seen["pjsua2_libs"]) == 1 and seen["pjsua2_libs"][0].startswith(site + "/"), seen
    assert not [p for p in seen["path"] if p and Path(p).resolve() == REPO], seen["path"]

    # The images have no build venv.
    shutil.rmtree(installed.build.path)
    run([runtime.python, "-c", "import gateway._sipcore"], cwd=outside)
    version = run([runtime.path / "bin" / "dialout-gw", "--version"], cwd=outside)
    assert version.startswith("dialout-gw ") and "\npjproject 2." in version, version
    # The config and the ledger (its migrations come from the wheel): exit 0.
    run(
        [runtime.path / "bin" / "dialout-gw", "run", "--config", REPO / "examples" / "gateway.toml", "--check"],
        cwd=outside,
    )


def test_kamailio_loads_the_plugin_from_the_installed_wheel(installed, tmp_path):
    """The kamailio-plugin image: examples/kamailio/ copied as the Dockerfile
    copies it, DIALOUT_SITE_PACKAGES the venv of the two wheels."""
    from tests.integration.sipp_runner import free_port
    from tests.integration.test_kamailio_plugin import KAMAILIO_CFG, LOADER, KamailioPlugin, plugin_config

    etc = tmp_path / "etc"
    for source, dest in copied_paths("kamailio-plugin").items():
        copy_context(source, etc / dest.lstrip("/"))
    cfg = etc / "etc/kamailio/dialout/kamailio.cfg"
    loader = etc / "etc/kamailio/dialout/dialout.py"
    trunk_port = free_port()
    k = KamailioPlugin(tmp_path / "kamailio", plugin_config(tmp_path, trunk_port), trunk_port=trunk_port)
    k.cmd = [str(cfg) if a == str(KAMAILIO_CFG) else a.replace(str(LOADER), str(loader)) for a in k.cmd]
    assert str(cfg) in k.cmd and f'DIALOUT_SCRIPT="{loader}"' in k.cmd
    k.env = clean_env(
        DIALOUT_SITE_PACKAGES=str(installed.runtime.site), DIALOUT_CONFIG=str(k.config_path), PYTHONHOME="/usr"
    )
    try:
        k.start()  # answers OPTIONS and logged kamailio_plugin_started (ledger migrated)
        (started,) = k.events("kamailio_plugin_started")
        assert started["schema_version"] >= 1, started
        assert "Traceback" not in k.log()
    finally:
        k.stop()
