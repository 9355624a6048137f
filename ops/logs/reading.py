"""Reading a log: a path, '-' (stdin) or a binary stream, plain or gzip.

Lines are handled as bytes in blocks of a few megabytes cut just after a
newline, so that the per-line work stays in C (`bytes.split`, substring
tests) until a line is worth parsing.
"""

from __future__ import annotations

import gzip
import io
import zlib
from contextlib import contextmanager
from typing import BinaryIO, Iterator

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

    def readinto(self, buf) -> int:
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
        return open(path, "rb")  # noqa: SIM115
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
        stream: BinaryIO = io.BufferedReader(_Prefixed(head, raw), CHUNK_BYTES)  # type: ignore[arg-type]
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
