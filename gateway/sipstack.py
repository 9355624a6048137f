"""The SIP stack: pjsua2's endpoint and transports, driven by the gateway's engine.

pjsua2 owns the pjsip endpoint (`libCreate` → `libInit` → transports →
`libStart` … `libDestroy`) and pjsip's log; calls go through the gateway's
own engine, `gateway._sipcore` (csrc/), which registers its modules into that
endpoint. One thread drives everything (`threadCnt=0`, `mainThreadOnly`):
`SipStack.run()` polls the engine, which runs pjsip with the GIL released
and then hands each SIP event to Python. Other threads (the ledger writer,
signal handlers, the metrics server) hand work over with `call_soon`, which
wakes the poll at once.

Timers are kept in Python (a heap checked after every poll), so a timer
callback is a plain Python callable with its own context.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import queue
import sys
import time
from collections.abc import Callable

import pjsua2 as pj

from gateway import _sipcore
from gateway.logs import get_logger
from gateway.settings import Listener

# pjsip's own log levels (0 fatal .. 6 trace) mapped onto ours.
_PJ_LEVEL_NAMES = {0: "error", 1: "error", 2: "warning", 3: "info", 4: "debug", 5: "debug", 6: "debug"}


@contextlib.contextmanager
def _c_stdout_silenced():
    """pjlib logs to C stdout before our log writer is installed (libCreate)
    and after it is gone (libDestroy); stdout carries JSON lines only."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        _sipcore.flush_stdio()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class PjsipLogWriter(pj.LogWriter):
    """Routes pjsip's log through structlog, as `event="pjsip"` lines."""

    def __init__(self):
        super().__init__()
        self._log = get_logger(component="pjsip")

    def write(self, entry):
        try:
            level = _PJ_LEVEL_NAMES.get(entry.level, "debug")
            getattr(self._log, level)("pjsip", message=entry.msg.strip(), pj_level=entry.level)
        except Exception:  # noqa: BLE001 - a log line must never raise into pjsip
            pass


class Timer:
    """A cancellable one-shot timer handle."""

    __slots__ = ("callback", "cancelled", "when")

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

    def next_due(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Timer]:
        """The timers due by `now` and not cancelled, in due order."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            timer = heapq.heappop(self._heap)[2]
            if not timer.cancelled:
                due.append(timer)
        return due


_TRANSPORT_TYPES = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}
_TRANSPORT_TYPES_V6 = {"udp": pj.PJSIP_TRANSPORT_UDP6, "tcp": pj.PJSIP_TRANSPORT_TCP6, "tls": pj.PJSIP_TRANSPORT_TLS6}


class SipStack:
    """Owns the one pjsua2 `Endpoint`, the gateway's SIP engine and the loop that drives them."""

    def __init__(self, *, pjsip_log_level: int = 1):
        self.log = get_logger(component="sipstack")
        self.endpoint = pj.Endpoint()
        with _c_stdout_silenced():
            self.endpoint.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 4  # pjsua's own calls are unused: the engine drives dialogs
        cfg.uaConfig.userAgent = ""
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.hasIoqueue = False
        cfg.medConfig.noVad = True
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        self._log_writer = PjsipLogWriter()
        cfg.logConfig.writer = self._log_writer
        cfg.logConfig.level = pjsip_log_level
        cfg.logConfig.consoleLevel = pjsip_log_level
        cfg.logConfig.decor = 0
        self.endpoint.libInit(cfg)
        self.transport_ids: list[int] = []
        self._timers = TimerHeap()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.running = False
        self.started = False

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

    def start(self, on_event: Callable[..., None]) -> None:
        """Start pjsua and the engine; `on_event` receives every SIP engine event."""
        self.endpoint.libStart()
        # No sound device: no conference clock ticks.
        self.endpoint.audDevManager().setNoDev()
        _sipcore.init(on_event)
        self.started = True

    # --- scheduling -------------------------------------------------------------

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the loop thread after `delay_s` seconds."""
        return self._timers.push(time.monotonic() + delay_s, callback)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Thread-safe: queue `callback` for the loop thread and wake it."""
        self._jobs.put(callback)
        _sipcore.wakeup()

    def call_soon_lazy(self, callback: Callable[[], None]) -> None:
        """Thread-safe: queue `callback` for the loop's next turn, without waking
        it (for work nobody waits for: at most one poll interval later)."""
        self._jobs.put(callback)

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

    def _guard(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # one bad job must not stop the loop serving other calls
            self.log.exception("loop_job_failed")

    def poll(self, max_wait_ms: int = 10) -> None:
        due = self._timers.next_due()
        wait = max_wait_ms
        if due is not None:
            wait = max(0, min(wait, int((due - time.monotonic()) * 1000) + 1))
        if not self._jobs.empty():
            wait = 0
        _sipcore.poll(wait)
        self._run_due()

    def run(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Poll until `should_stop()` says so."""
        self.running = True
        while self.running and not (should_stop and should_stop()):
            self.poll(10)

    def stats(self) -> dict:
        return _sipcore.stats() if self.started else {}

    def shutdown(self) -> None:
        try:
            for _ in range(20 if self.started else 0):
                self.poll(5)
        finally:
            with _c_stdout_silenced():
                self.endpoint.libDestroy()
