"""Every line on stdout is one JSON object: what Python would print (uncaught
exceptions in the main thread, in a thread and in a destructor, warnings,
stdlib `logging` records) goes through the configured structlog pipeline."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.logs import configure_logging

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import logging, sys, threading, warnings

    from gateway.logs import configure_logging, get_logger

    configure_logging("info", "json", mask_numbers=True)
    get_logger(component="test").info("started", store="postgresql://gw:s3cret@db/ledger")

    warnings.warn("calling +33142685300 the old way", UserWarning)
    logging.getLogger("psycopg").warning("server closed the connection to postgresql://gw:s3cret@db")

    class Finalised:
        def __del__(self):
            raise RuntimeError("cleanup failed for +33142685300")

    Finalised()                      # an unraisable exception: Python ignores it, and would print it

    def dies():
        raise KeyError("lost in a thread")

    worker = threading.Thread(target=dies, name="worker-1")
    worker.start()
    worker.join()

    def ends_quietly():
        sys.exit(3)                  # SystemExit in a thread is not an error

    quiet = threading.Thread(target=ends_quietly)
    quiet.start()
    quiet.join()

    raise ValueError("the main thread gives up")
""")


@pytest.fixture(scope="module")
def run():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    return proc


def events(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_every_stdout_line_is_one_json_object(run):
    lines = run.stdout.splitlines()
    assert lines, run.stderr
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_stderr_carries_no_traceback(run):
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    assert run.stderr == ""


def test_the_process_still_fails_when_the_main_thread_dies(run):
    assert run.returncode == 1


def test_one_event_per_uncaught_exception_with_a_structured_traceback(run):
    crashes = {e["where"]: e for e in events(run) if e["event"] == "unhandled_exception"}
    assert set(crashes) == {"main", "thread", "unraisable"}
    for where, exc_type, text in (
        ("main", "ValueError", "the main thread gives up"),
        ("thread", "KeyError", "lost in a thread"),
        ("unraisable", "RuntimeError", "cleanup failed for"),
    ):
        (exc,) = crashes[where]["exception"]
        assert exc["exc_type"] == exc_type and text in exc["exc_value"]
        assert exc["frames"] and all("filename" in f and "lineno" in f for f in exc["frames"])
    assert crashes["main"]["level"] == "critical"
    assert crashes["thread"]["thread"] == "worker-1" and crashes["thread"]["level"] == "error"
    assert "Finalised.__del__" in crashes["unraisable"]["object"]
    assert "Exception ignored" in crashes["unraisable"]["context"]


def test_warnings_and_library_logs_are_events(run):
    by_event = {e["event"]: e for e in events(run)}
    warning = by_event["python_warning"]
    assert warning["category"] == "UserWarning" and warning["level"] == "warning" and warning["lineno"]
    library = by_event["library_log"]
    assert library["logger"] == "psycopg" and library["level"] == "warning"
    assert "server closed the connection" in library["message"]


def test_masking_and_redaction_apply_to_these_events_too(run):
    text = run.stdout
    assert "s3cret" not in text and "142685300" not in text
    assert "+33xxxxxxx00" in text and "postgresql://gw:***@db" in text


def test_reconfiguring_keeps_one_bridge_for_stdlib_logging():
    # (tests/ops/conftest.py puts the process's hooks and handlers back)
    out = io.StringIO()
    configure_logging("info", "json", out)
    configure_logging("info", "json", out)
    assert sys.excepthook.__module__ == "gateway.logs"
    logging.getLogger("somelib").error("boom")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "library_log" and line["message"] == "boom"


def test_hooks_can_be_left_alone():
    before = (sys.excepthook, list(logging.getLogger().handlers))
    configure_logging("info", "json", io.StringIO(), error_hooks=False)
    assert (sys.excepthook, list(logging.getLogger().handlers)) == before
