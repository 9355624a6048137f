"""The pjsua2 endpoint: lifecycle, transports, the single event loop, timers.

pjsua2 is driven from one thread: `threadCnt=0`, `mainThreadOnly=True`, and
`SipStack.run()` polls `libHandleEvents`. Every callback runs on that thread.
Other threads (signal handlers, the metrics server) hand work over with
`SipStack.call_soon`, which the loop drains between polls.

Timers are kept in Python (a heap checked after every poll) rather than in
pjlib, so a timer callback is a plain Python callable with its own context.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import os
import queue
import sys
import time
from typing import Callable

import pjsua2 as pj

from gateway.logs import get_logger
from gateway.privacy import mask_numbers_in
from gateway.settings import Listener

# pjsip's own log levels (0 fatal .. 6 trace) mapped onto ours.
_PJ_LEVEL_NAMES = {0: "error", 1: "error", 2: "warning", 3: "info", 4: "debug", 5: "debug", 6: "debug"}


@contextlib.contextmanager
def _c_stdout_silenced():
    """pjlib logs to C stdout before our log writer is installed (libCreate)
    and after it is gone (libDestroy); stdout carries JSON lines only."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class PjsipLogWriter(pj.LogWriter):
    """Routes pjsip's log through structlog, as `event="pjsip"` lines."""

    def __init__(self, mask_numbers: bool = False):
        super().__init__()
        self._log = get_logger(component="pjsip")
        self._mask = mask_numbers

    def write(self, entry):
        level = _PJ_LEVEL_NAMES.get(entry.level, "debug")
        message = entry.msg.strip()
        if self._mask:  # pjsip's higher levels print whole SIP messages
            message = mask_numbers_in(message)
        getattr(self._log, level)("pjsip", message=message, pj_level=entry.level)


class Timer:
    """A cancellable one-shot timer handle."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None  # release the call it refers to now, not when it would have fired


class TimerHeap:
    """One-shot timers by due time. A finished call cancels timers due hours
    later (its duration cut); left in the heap they would pile up at the call
    rate, so the heap is compacted once most of it is cancelled."""

    COMPACT_EVERY = 1024  # pushes between checks

    def __init__(self):
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        seq = next(self._seq)
        heapq.heappush(self._heap, (when, seq, timer))
        if seq % self.COMPACT_EVERY == self.COMPACT_EVERY - 1:
            live = [entry for entry in self._heap if not entry[2].cancelled]
            if len(live) * 2 < len(self._heap):
                heapq.heapify(live)
                self._heap = live
        return timer

    def pop_due(self, now: float) -> list[Timer]:
        """The timers due by `now` and not cancelled, in due order."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            timer = heapq.heappop(self._heap)[2]
            if not timer.cancelled:
                due.append(timer)
        return due


_TRANSPORT_TYPES = {
    "udp": pj.PJSIP_TRANSPORT_UDP,
    "tcp": pj.PJSIP_TRANSPORT_TCP,
    "tls": pj.PJSIP_TRANSPORT_TLS,
}
_TRANSPORT_TYPES_V6 = {
    "udp": pj.PJSIP_TRANSPORT_UDP6,
    "tcp": pj.PJSIP_TRANSPORT_TCP6,
    "tls": pj.PJSIP_TRANSPORT_TLS6,
}


class SipStack:
    """Owns the one pjsua2 `Endpoint` and the loop that drives it."""

    def __init__(self, *, max_calls: int = 4000, pjsip_log_level: int = 1, user_agent: str = "dialout-gw",
                 mask_numbers: bool = False):
        self.log = get_logger(component="sipstack")
        self.endpoint = pj.Endpoint()
        with _c_stdout_silenced():
            self.endpoint.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = max_calls
        cfg.uaConfig.userAgent = user_agent
        # Debian's repack strips libresample; G.711 at 8 kHz then needs no resampling.
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.hasIoqueue = False
        cfg.medConfig.noVad = True
        cfg.medConfig.maxMediaPorts = max_calls * 2 + 2
        self._log_writer = PjsipLogWriter(mask_numbers)
        cfg.logConfig.writer = self._log_writer
        cfg.logConfig.level = pjsip_log_level
        cfg.logConfig.consoleLevel = pjsip_log_level
        cfg.logConfig.decor = 0
        self.endpoint.libInit(cfg)
        self.transport_ids: list[int] = []
        self._timers = TimerHeap()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._after_poll: list[Callable[[], None]] = []
        self.running = False

    def listen(self, listener: Listener) -> int:
        cfg = pj.TransportConfig()
        cfg.port = listener.port
        cfg.boundAddress = listener.address
        if listener.transport == "tls":
            cfg.tlsConfig.certFile = listener.cert_file or ""
            cfg.tlsConfig.privKeyFile = listener.key_file or ""
        types = _TRANSPORT_TYPES_V6 if ":" in listener.address else _TRANSPORT_TYPES
        tid = self.endpoint.transportCreate(types[listener.transport], cfg)
        self.transport_ids.append(tid)
        return tid

    def start(self) -> None:
        self.endpoint.libStart()
        from gateway.pjsip_fallback import install_or_warn  # answers requests pjsua leaves unanswered
        install_or_warn()  # never raises: on failure it logs a warning and the gateway runs without it
        # No sound device: no conference clock ticks, so held calls cost nothing.
        self.endpoint.audDevManager().setNoDev()

    # --- scheduling -------------------------------------------------------------

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the loop thread after `delay_s` seconds."""
        return self._timers.push(time.monotonic() + delay_s, callback)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Thread-safe: queue `callback` for the loop thread."""
        self._jobs.put(callback)

    def after_poll(self, callback: Callable[[], None]) -> None:
        """Run `callback` once, after the current pjsip callback has returned.

        Dropping the last reference to a `pj.Call` inside its own callback is
        unsafe, so registries release legs here.
        """
        self._after_poll.append(callback)

    def _run_due(self) -> None:
        while not self._jobs.empty():  # checked first: most polls have no job, and raising Empty costs
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._guard(job)
        now = time.monotonic()
        for timer in self._timers.pop_due(now):
            if not timer.cancelled:  # an earlier timer of this batch may have cancelled it
                self._guard(timer.callback)
        if self._after_poll:
            pending, self._after_poll = self._after_poll, []
            for job in pending:
                self._guard(job)

    def _guard(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # one bad job must not stop the loop serving other calls
            self.log.exception("loop_job_failed")

    def poll(self, timeout_ms: int = 10) -> None:
        self.endpoint.libHandleEvents(timeout_ms)
        self._run_due()

    def run(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Poll until `stop()` is called or `should_stop()` says so."""
        self.running = True
        while self.running and not (should_stop and should_stop()):
            self.poll(10)

    def stop(self) -> None:
        self.running = False

    def shutdown(self) -> None:
        try:
            self.endpoint.hangupAllCalls()
            for _ in range(20):
                self.poll(5)
        finally:
            with _c_stdout_silenced():
                self.endpoint.libDestroy()
