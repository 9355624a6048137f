"""Run `dialout-gw` in-process with its stdout on a pseudo-terminal, as a person sees it."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios

from gateway.cli import main


def run_on_a_terminal(monkeypatch, argv: list[str], columns: int = 80) -> tuple[int, str]:
    """`main(argv)` with sys.stdout a tty `columns` wide; returns (exit code, what it showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    terminal = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    monkeypatch.setattr(sys, "stdout", terminal)
    try:
        code = main(argv)
        terminal.flush()
        chunks = []
        while select.select([master], [], [], 0.2)[0]:
            chunks.append(os.read(master, 65536))
    finally:
        terminal.close()
        os.close(master)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")
