"""Tests here configure logging for the whole process (structlog, Python's
exception and warning hooks, the stdlib root logger): put it all back."""

from __future__ import annotations

import logging
import sys
import threading
import warnings

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    saved = (
        sys.excepthook,
        threading.excepthook,
        sys.unraisablehook,
        warnings.showwarning,
        list(root.handlers),
        root.level,
    )
    yield
    sys.excepthook, threading.excepthook, sys.unraisablehook, warnings.showwarning, handlers, level = saved
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
