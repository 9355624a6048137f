"""structlog set-up: the one place that decides how the gateway writes logs.

JSON lines on stdout by default (what operators ship to their log pipeline),
the console renderer when stdout is a terminal, and pjsip's own log routed
through the same pipeline (see `gateway.sipstack.PjsipLogWriter`).
"""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "console")


def configure_logging(level: str = "info", fmt: str = "auto", stream=None) -> None:
    """Configure structlog for the whole process.

    `fmt="auto"` picks the console renderer on a TTY and JSON otherwise.
    Callbacks share one thread, so per-call context is bound on a logger
    (`log.bind(call_id=...)`), never in process-wide contextvars.
    """
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    processors = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors.append(structlog.processors.dict_tracebacks)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get_logger(**bound):
    return structlog.get_logger("dialout-gw").bind(**bound)
