"""Shared fixtures: a throw-away PostgreSQL server and a fresh store per test.

`postgres_url` starts scripts/pg_test_server.sh once per session (or uses
$DIALOUT_TEST_PG_URL) and stops it at the end. When the server cannot start,
the tests that need it FAIL: CI must prove that the PostgreSQL backend works.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_SCRIPT = ROOT / "scripts" / "pg_test_server.sh"


@pytest.fixture(scope="session")
def postgres_url():
    override = os.environ.get("DIALOUT_TEST_PG_URL")
    if override:
        yield override
        return
    pg_dir = tempfile.mkdtemp(prefix="dialout-pg-")
    os.chmod(pg_dir, 0o755)  # the server runs as `postgres` when the tests run as root
    env = dict(os.environ, DIALOUT_PG_DIR=os.path.join(pg_dir, "srv"))
    try:
        proc = subprocess.run([str(PG_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot start the test PostgreSQL server: {exc}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            "cannot start the test PostgreSQL server (scripts/pg_test_server.sh start):\n" + proc.stderr[-4000:],
            pytrace=False,
        )
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(PG_SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        try:
            os.rmdir(pg_dir)
        except OSError:
            pass


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_schema_url(postgres_url):
    """A URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _with_search_path(postgres_url, schema)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def store(store_url):
    """A migrated store on a fresh database, once per backend."""
    from store import open_store

    s = open_store(store_url, instance_id="gw-test", chunk_s=300)
    s.migrate()
    yield s
    s.close()


class OwnPgServer:
    """A PostgreSQL server of one test's own, which the test may freeze
    (SIGSTOP on the postmaster and every backend) and thaw."""

    def __init__(self, url: str, data: Path):
        self.url = url
        self.data = data
        self._frozen: list[int] = []

    def freeze(self) -> int:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *_children(postmaster)]:
            os.kill(pid, signal.SIGSTOP)
            self._frozen.append(pid)
        return len(self._frozen)

    def unfreeze(self) -> None:
        while self._frozen:
            try:
                os.kill(self._frozen.pop(), signal.SIGCONT)
            except ProcessLookupError:
                pass


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


@pytest.fixture
def own_pg_server():
    """A throw-away PostgreSQL server for this test alone (it is about to be frozen)."""
    work = tempfile.mkdtemp(prefix="dialout-pg-frozen-")
    os.chmod(work, 0o755)
    env = dict(os.environ, DIALOUT_PG_DIR=os.path.join(work, "srv"))
    proc = subprocess.run([str(PG_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail("cannot start a PostgreSQL server:\n" + proc.stderr[-3000:], pytrace=False)
    server = OwnPgServer(proc.stdout.strip().splitlines()[-1], Path(env["DIALOUT_PG_DIR"]) / "data")
    try:
        yield server
    finally:
        server.unfreeze()
        subprocess.run([str(PG_SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
