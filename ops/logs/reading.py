"""Reading a log: a path, '-' (stdin) or a binary stream, plain or gzip.

Lines are handled as bytes in blocks of a few megabytes cut just after a
newline, so that the per-line work stays in C (`bytes.split`, substring
tests) until a line is worth parsing. A plain file can also be read as
byte ranges (`plain_file_size`, `iter_range_blocks`), so that worker
processes read their own part of the file instead of receiving it through a
pipe.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
# Size of a block; read at call time, so tests can make blocks tiny.
CHUNK_BYTES = 1 << 22


class LogInputError(ValueError):
    """Bad input from the operator: missing file, bad filter value, broken gzip."""


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to sniff the gzip magic)."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _open_file(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise LogInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LogInputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise LogInputError(f"{path}: {exc.strerror or exc}") from None


@contextmanager
def open_log(source: str | BinaryIO, stdin: BinaryIO | None = None) -> Iterator[BinaryIO]:
    """A binary stream of log text from a path, `-` (stdin) or an open binary file.

    Gzip is recognised by its magic bytes, whatever the file is called. A file
    opened here is closed on exit; stdin and a caller's stream are left open.
    """
    owned = None
    if isinstance(source, str) and source != "-":
        owned = raw = _open_file(source)
    elif isinstance(source, str):
        if stdin is None:
            import sys

            stdin = sys.stdin.buffer
        raw = stdin
    else:
        raw = source
    try:
        head = b""
        while len(head) < 2:
            more = raw.read(2 - len(head))
            if not more:
                break
            head += more
        stream: BinaryIO = io.BufferedReader(_Prefixed(head, raw), CHUNK_BYTES)
        if head == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        yield stream
    finally:
        if owned is not None:
            owned.close()


def source_name(source: str | BinaryIO) -> str:
    """How a source is named in messages."""
    if isinstance(source, str):
        return "<stdin>" if source == "-" else source
    return getattr(source, "name", "log")


def iter_blocks(stream: BinaryIO, name: str = "log", chunk: int | None = None) -> Iterator[bytes]:
    """The log in blocks of about `chunk` bytes (default `CHUNK_BYTES`), each cut
    just after a newline (except the last one if the log does not end with a newline)."""
    chunk = chunk or CHUNK_BYTES
    rest = b""
    while True:
        try:
            data = stream.read(chunk)
        except EOFError:
            raise LogInputError(f"{name}: gzip stream is truncated") from None
        except gzip.BadGzipFile as exc:
            raise LogInputError(f"{name}: not a valid gzip file ({exc})") from None
        except zlib.error as exc:
            raise LogInputError(f"{name}: corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise LogInputError(f"{name}: {exc.strerror or exc}") from None
        if not data:
            break
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest += data
            continue
        block = rest + data[:cut] if rest else data[:cut]
        rest = data[cut:]
        yield block
    if rest:
        yield rest


def split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def line_batches(stream: BinaryIO, name: str = "log", chunk: int | None = None) -> Iterator[list[bytes]]:
    """Lines (bytes, no newline) in batches of a few megabytes."""
    for block in iter_blocks(stream, name, chunk):
        yield split_lines(block)


# --- plain files by byte range ----------------------------------------------------------


def plain_file_size(path: str) -> int | None:
    """The size of `path` if it is a regular file that is not gzip, else None
    (stdin, pipes and gzip are read as one stream)."""
    f = _open_file(path)
    with f:
        try:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            if f.read(2) == GZIP_MAGIC:
                return None
            return os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise LogInputError(f"{path}: {exc.strerror or exc}") from None


def byte_ranges(size: int, parts: int) -> list[tuple[int, int]]:
    """`[0, size)` cut into `parts` ranges of about the same size."""
    parts = max(1, min(parts, size))
    step = -(-size // parts) if size else 0
    return [(start, min(start + step, size)) for start in range(0, size, step)] if size else []


def iter_range_blocks(path: str, start: int, end: int, chunk: int | None = None) -> Iterator[bytes]:
    """Blocks of the lines of a plain file that *begin* in `[start, end)`.

    The line that straddles `start` belongs to the range before, the one that
    straddles `end` to this one, so ranges that tile a file read every line
    exactly once (the last line may lack its newline).
    """
    chunk = chunk or CHUNK_BYTES
    try:
        with open(path, "rb", buffering=0) as f:
            pos = start
            if start > 0:
                # The first line of the range starts after the first newline at or after start - 1.
                f.seek(start - 1)
                pos = start - 1
                while True:
                    data = f.read(1 << 16)
                    if not data:
                        return
                    i = data.find(b"\n")
                    if i != -1:
                        pos += i + 1
                        break
                    pos += len(data)
                if pos >= end:
                    return
                f.seek(pos)
            rest = b""
            while True:
                data = f.read(chunk)
                if not data:
                    break
                at = pos
                pos += len(data)
                if pos >= end:
                    # The range ends with the first newline at or after end - 1.
                    i = data.find(b"\n", max(0, end - 1 - at))
                    if i != -1:
                        yield rest + data[: i + 1]
                        return
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest += data
                    continue
                yield rest + data[:cut] if rest else data[:cut]
                rest = data[cut:]
            if rest:
                yield rest
    except OSError as exc:
        raise LogInputError(f"{path}: {exc.strerror or exc}") from None
