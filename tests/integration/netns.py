"""A private network namespace with nothing but loopback, for tests that send
the gateway input whose addresses nobody chose.

A fuzzed INVITE can name any host in its Via (``maddr``), Contact or
Record-Route, and the gateway would then answer, ACK or BYE there, or ask
DNS about it. Inside a fresh network namespace only ``lo`` exists, so every
such packet stays on this machine whatever the input says.

Linux keeps the network namespace per thread: one worker thread unshares
it, brings ``lo`` up, and runs what it is handed (:meth:`NetNamespace.call`).
Sockets it creates stay in the namespace and may then be used from any
thread; processes it starts (the gateway) inherit the namespace. Needs root
or unprivileged user namespaces; :func:`available` says whether it works here.
"""

from __future__ import annotations

import ctypes
import fcntl
import queue
import socket
import struct
import threading
from concurrent.futures import Future

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


class NamespaceUnavailable(RuntimeError):
    pass


def _bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


class NetNamespace:
    """One thread living in a new network namespace with only loopback up."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        ready: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="netns", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    def _run(self, ready: Future) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NamespaceUnavailable(f"unshare(CLONE_NEWNET) failed: errno {err}")
            _bring_up_loopback()
        except BaseException as exc:
            ready.set_exception(exc if isinstance(exc, NamespaceUnavailable) else NamespaceUnavailable(str(exc)))
            return
        ready.set_result(None)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, kwargs, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

    def call(self, fn, *args, **kwargs):
        """Run fn(*args, **kwargs) inside the namespace and return its result."""
        fut: Future = Future()
        self._jobs.put((fn, args, kwargs, fut))
        return fut.result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)


def available() -> str | None:
    """None when a namespace can be made here, else why not."""
    try:
        ns = NetNamespace()
    except NamespaceUnavailable as exc:
        return str(exc)
    ns.close()
    return None


class Here:
    """The current network namespace, with NetNamespace's interface: for
    inputs whose every address is known (hand-written regression tests)."""

    @staticmethod
    def call(fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def close(self) -> None:
        pass
