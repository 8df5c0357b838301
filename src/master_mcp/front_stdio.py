"""The stdio front: the master's own stdin and stdout as the read and write streams of its MCP server.

The SDK's `stdio_server` reads each line, and writes and flushes each message, in a worker thread: three thread
hand-offs and two memory streams on every call. Here the pipes are read and written on the event loop (`lines`).

While serving, the wire is on private duplicates of fds 0 and 1, and fd 0 reads the null device and fd 1 writes to
stderr, as the SDK's transport does: whatever else in the process reads stdin or prints (a custom auth strategy, a
library) cannot take or tear the client's messages. Both are restored at the end.

What the event loop cannot watch (stdin or stdout a regular file, or the null device), and Windows, keep the SDK's
transport.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Final

from mcp.server.stdio import stdio_server

from master_mcp.lines import MAX_LINE_BYTES, LineReader, LineWriter

if sys.platform != "win32":
    import fcntl

# How long what is still queued for the client may take to go out once the master is done.
_FLUSH_WITHIN_S: Final = 2.0


@asynccontextmanager
async def stdio_front(max_line_bytes: int = MAX_LINE_BYTES) -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) streams of the process's stdin and stdout, until the context is left."""
    if sys.platform == "win32" or not (_watchable(0, selectors.EVENT_READ) and _watchable(1, selectors.EVENT_WRITE)):
        async with stdio_server() as streams:
            yield streams
        return
    loop = asyncio.get_running_loop()
    with _claimed(0, _null_reader) as wire_in, _claimed(1, _stderr_writer) as wire_out:
        reader = asyncio.StreamReader(limit=max_line_bytes, loop=loop)
        stdin, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(_private(wire_in), "rb", buffering=0)
        )
        try:
            stdout, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop),
                os.fdopen(_private(wire_out), "wb", buffering=0),
            )
            writer = asyncio.StreamWriter(stdout, protocol, None, loop)
            try:
                # A client that stops reading ends the session by closing stdin's pipe (see `LineWriter`).
                yield LineReader("the stdio client", reader), LineWriter(writer, stdin.close)
            finally:
                try:
                    await asyncio.wait_for(writer.drain(), _FLUSH_WITHIN_S)
                except (TimeoutError, ConnectionError):
                    pass  # a client that reads no more: what is left for it is dropped
                finally:
                    if not stdout.is_closing():  # else the pipe broke, and it is closed already
                        stdout.abort()
        finally:
            stdin.close()


def _watchable(fd: int, events: int) -> bool:
    """Whether the event loop can watch `fd` (a pipe, a socket or a terminal; not a regular file, nor the null
    device, which epoll refuses)."""
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            return False
        with selectors.DefaultSelector() as selector:
            selector.register(fd, events)
    except (OSError, ValueError):
        return False
    return True


def _null_reader() -> int:
    return os.open(os.devnull, os.O_RDONLY)


def _stderr_writer() -> int:
    try:
        return os.dup(2)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


def _private(fd: int) -> int:
    # Above the standard three, and not inherited by the master's stdio children, which must not hold the client's
    # pipes open.
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


@contextmanager
def _claimed(fd: int, diversion: Callable[[], int]) -> Iterator[int]:
    """A private duplicate of `fd` that is the wire, while `fd` itself points at what `diversion` opens. On
    leaving, `fd` is the wire again, and blocking as it was (asyncio made it non-blocking)."""
    wire = _private(fd)
    blocking = os.get_blocking(fd)
    target = diversion()
    try:
        os.dup2(target, fd)
    finally:
        os.close(target)
    try:
        yield wire
    finally:
        os.dup2(wire, fd)
        os.close(wire)
        with suppress(OSError):
            os.set_blocking(fd, blocking)
