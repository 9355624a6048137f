"""structlog set-up: the one place that decides how the gateway writes logs.

JSON lines on stdout by default (what operators ship to their log pipeline),
the console renderer when stdout is a terminal, and pjsip's own log routed
through the same pipeline (see `gateway.sipstack.PjsipLogWriter`).

Every line on stdout is one JSON object, from start-up to shutdown: an
exception that nothing caught (in the main thread, in another thread, or
"ignored" in a destructor), a Python warning and a record of the stdlib
`logging` module (psycopg's, say) each become one event of the same
pipeline instead of text on stdout or stderr (`install_error_hooks`).

Privacy is applied here, once, to every line, so that no caller has to:

- `redact_passwords` (always on) hides the password of any
  `scheme://user:password@host` URL in any string field;
- `NumberMasker` (`logging.mask_numbers`) masks phone numbers in the fields
  that can carry them (`NUMBER_FIELDS`, `TEXT_FIELDS`, plus
  `logging.mask_fields`), lists and dicts under them included.

Both are idempotent, so a value that its caller masked already comes out
the same.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from sip.privacy import mask_number, mask_numbers_in, redact_url

FORMATS = ("auto", "json", "console")

# Fields whose whole value is one phone number.
NUMBER_FIELDS = frozenset(("dialled", "destination"))
# Free-text fields that can quote a number: the canonical line's explanation
# and decision trace, pjsip's own lines (whole SIP messages at high levels),
# a REFER target, a call_cut detail, error texts and structured tracebacks.
TEXT_FIELDS = frozenset(("explanation", "trace", "message", "target", "detail", "error", "exception"))


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    """`fn` applied to every string in `value` (a string, or lists, tuples and dicts of them)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


class NumberMasker:
    """structlog processor: phone numbers masked in the fields that can carry them.

    `NUMBER_FIELDS` hold one number each (`mask_number`: `112` -> `x12`);
    `TEXT_FIELDS` and `extra_fields` are free text, in which runs of 7 digits
    or more are masked (`mask_numbers_in`).
    """

    __slots__ = ("number_fields", "text_fields")

    def __init__(self, extra_fields: Iterable[str] = ()):
        self.number_fields = tuple(NUMBER_FIELDS)
        self.text_fields = tuple((TEXT_FIELDS | frozenset(extra_fields)) - NUMBER_FIELDS)

    def __call__(self, _logger, _method: str, event_dict: dict) -> dict:
        for key in self.number_fields:
            value = event_dict.get(key)
            if value:
                event_dict[key] = _walk(value, mask_number)
        for key in self.text_fields:
            value = event_dict.get(key)
            if value:
                event_dict[key] = _walk(value, mask_numbers_in)
        return event_dict


def _has_credentials(value: Any) -> bool:
    """Whether `value` holds a string that may contain `scheme://user:password@`."""
    if isinstance(value, str):
        return "://" in value and "@" in value
    if isinstance(value, (list, tuple)):
        return any(_has_credentials(v) for v in value)
    if isinstance(value, dict):
        return any(_has_credentials(v) for v in value.values())
    return False


def redact_passwords(_logger, _method: str, event_dict: dict) -> dict:
    """structlog processor: `scheme://user:secret@host` -> `scheme://user:***@host` in every field."""
    found = None
    for key, value in event_dict.items():
        # Runs on every line: strings, the common case, are tested inline.
        if type(value) is str:
            if "://" not in value or "@" not in value:
                continue
        elif not isinstance(value, (list, tuple, dict)) or not _has_credentials(value):
            continue
        found = found or []
        found.append(key)
    if found:
        for key in found:
            event_dict[key] = _walk(event_dict[key], redact_url)
    return event_dict


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream=None,
    *,
    mask_numbers: bool = False,
    mask_fields: Iterable[str] = (),
    error_hooks: bool = True,
) -> None:
    """Configure structlog for the whole process.

    `fmt="auto"` picks the console renderer on a TTY and JSON otherwise.
    `mask_numbers` installs the `NumberMasker` (with `mask_fields` as extra
    free-text fields); URL passwords are always redacted. `error_hooks`
    routes uncaught exceptions, warnings and stdlib `logging` records into
    the log (`install_error_hooks`); it may be called again to reconfigure.
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
    processors: list = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        # Frames without their local variables: those would put numbers,
        # URLs and whole objects in the log.
        processors.append(
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        )
    # After the traceback is structured, so that its texts are covered too.
    processors.append(redact_passwords)
    if mask_numbers:
        processors.append(NumberMasker(mask_fields))
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    if error_hooks:
        install_error_hooks(level)


def get_logger(**bound):
    return structlog.get_logger("dialout-gw").bind(**bound)


# --- what would otherwise be printed ------------------------------------------------------------


def install_error_hooks(level: str = "info") -> None:
    """Turn what Python would print into log events, through the configured pipeline:

    - `sys.excepthook` (the main thread dies), `threading.excepthook` (a
      thread dies) and `sys.unraisablehook` (an exception in `__del__`, a
      callback or a finaliser, which Python ignores): one `unhandled_exception`
      event with the traceback as data (`where` = main, thread or unraisable);
    - `warnings.showwarning`: one `python_warning` event;
    - the stdlib `logging` root logger: one `library_log` event per record.

    If logging itself fails, the original hook prints as Python would.
    """
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable
    warnings.showwarning = _warning
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(logging.getLevelName(level.upper()))


_PRINT_WARNING = warnings.showwarning  # Python's own, for when logging fails


def _python_log():
    # A fresh logger each time: the hooks outlive any reconfiguration.
    return structlog.get_logger("dialout-gw").bind(component="python")


def _uncaught(exc_type, exc_value, exc_tb) -> None:
    try:
        _python_log().critical(
            "unhandled_exception",
            where="main",
            thread=threading.current_thread().name,
            exc_info=(exc_type, exc_value, exc_tb),
        )
    except Exception:
        sys.__excepthook__(exc_type, exc_value, exc_tb)


def _uncaught_in_thread(args) -> None:
    if args.exc_type is SystemExit:  # as threading's own hook: a thread may exit this way
        return
    try:
        _python_log().error(
            "unhandled_exception",
            where="thread",
            thread=args.thread.name if args.thread is not None else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )
    except Exception:
        threading.__excepthook__(args)


def _unraisable(unraisable) -> None:
    try:
        try:
            # Only its repr: keeping the object could resurrect it while it is being finalised.
            obj = repr(unraisable.object) if unraisable.object is not None else None
        except Exception:
            obj = f"<{type(unraisable.object).__name__} object (repr failed)>"
        fields: dict[str, Any] = {
            "where": "unraisable",
            "context": unraisable.err_msg or "Exception ignored in",
            "object": obj,
            "thread": threading.current_thread().name,
        }
        if unraisable.exc_value is not None:
            fields["exc_info"] = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
        else:
            fields["exc_type"] = getattr(unraisable.exc_type, "__name__", str(unraisable.exc_type))
        _python_log().error("unhandled_exception", **fields)
    except Exception:
        sys.__unraisablehook__(unraisable)


def _warning(message, category, filename, lineno, file=None, line=None) -> None:
    try:
        _python_log().warning(
            "python_warning", category=category.__name__, message=str(message), filename=filename, lineno=lineno
        )
    except Exception:
        _PRINT_WARNING(message, category, filename, lineno, file, line)


class _ToStructlog(logging.Handler):
    """Records of the stdlib `logging` module (third-party libraries) as `library_log` events."""

    _METHODS = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "warning",
        logging.ERROR: "error",
        logging.CRITICAL: "critical",
    }

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = self._METHODS.get(record.levelno) or ("error" if record.levelno > logging.ERROR else "info")
            fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            getattr(_python_log(), method)("library_log", **fields)
        except Exception:
            self.handleError(record)
