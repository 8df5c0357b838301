"""The stdio front: the master's own stdin and stdout as the read and write streams of its MCP server.

The SDK's `stdio_server` reads each line, and writes and flushes each message, in a worker thread: three thread
hand-offs and two memory streams on every call. Here the client's pipes or sockets are read and written on the
event loop (`lines`). Python clients hand a server pipes; Node clients (Claude Desktop, editors) hand it sockets,
one per stream; inetd-style launchers hand it one socket for both.

While serving, the wire is on private duplicates of fds 0 and 1, and fd 0 reads the null device and fd 1 writes to
stderr, as the SDK's transport does: whatever else in the process reads stdin or prints (a custom auth strategy, a
library) cannot take or tear the client's messages. Both are restored at the end, blocking again.

Anything else (a regular file, the null device, a terminal, whose non-blocking mode would be stderr's too) and
Windows keep the SDK's transport.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
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
    kinds = (_kind(0), _kind(1)) if sys.platform != "win32" else (None, None)
    if None in kinds:
        async with stdio_server() as streams:
            yield streams
        return
    loop = asyncio.get_running_loop()
    # (st_ino, st_dev): one socket both ways
    shared = kinds == ("socket", "socket") and os.fstat(0)[1:3] == os.fstat(1)[1:3]
    reader = asyncio.StreamReader(limit=max_line_bytes, loop=loop)
    with _claimed(0, _null_reader) as wire_in, _claimed(1, _stderr_writer) as wire_out:
        async with AsyncExitStack() as closing:
            stdout: asyncio.WriteTransport
            protocol: asyncio.BaseProtocol
            if shared:
                stdout, protocol = await loop.connect_accepted_socket(_protocol(reader), _socket(wire_out))
                read_side: asyncio.BaseTransport = stdout
                closing.callback(stdout.close)
            else:
                read_side, _ = await loop.connect_read_pipe(_protocol(reader), _file(wire_in, "rb"))
                closing.callback(read_side.close)
                # Nothing is read from stdout; a socket's transport keeps writing after its peer's shutdown (a pipe
                # transport would take that for the end).
                ignored = asyncio.StreamReader(loop=loop)
                if kinds[1] == "socket":
                    stdout, protocol = await loop.connect_accepted_socket(_protocol(ignored), _socket(wire_out))
                else:
                    stdout, protocol = await loop.connect_write_pipe(_protocol(ignored), _file(wire_out, "wb"))
            writer = asyncio.StreamWriter(stdout, protocol, None, loop)
            closing.push_async_callback(_flush, writer)
            # A client that stops reading ends the session by closing the read side (see `LineWriter`).
            yield (
                LineReader("the stdio client", reader, undecodable="replace"),
                LineWriter(writer, read_side.close),
            )


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Close the client's stdout once what is queued for it has gone out, or `_FLUSH_WITHIN_S` has passed."""
    writer.close()  # the transport closes once its buffer is written
    try:
        with suppress(TimeoutError, OSError):  # OSError: the pipe broke, and the transport is gone
            await asyncio.wait_for(writer.wait_closed(), _FLUSH_WITHIN_S)
    finally:
        if writer.transport.get_write_buffer_size():  # emptied when a transport is lost: this one is not
            writer.transport.abort()  # a client that reads no more: what is left for it is dropped


def _kind(fd: int) -> str | None:
    """What the event loop can serve `fd` as ("pipe" or "socket"); None for the rest."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISSOCK(mode):
        with socket.socket(fileno=os.dup(fd)) as probe:
            return "socket" if probe.type == socket.SOCK_STREAM else None
    return None


def _protocol(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)


def _private(fd: int) -> int:
    # Above the standard three, and not inherited by the master's stdio children, which must not hold the client's
    # pipes open.
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _file(wire: int, mode: str) -> Any:
    # The transport's own duplicate, which it closes; `_claimed` keeps `wire` to restore the fd from.
    return os.fdopen(_private(wire), mode, buffering=0)


def _socket(wire: int) -> socket.socket:
    return socket.socket(fileno=_private(wire))


def _null_reader() -> int:
    return os.open(os.devnull, os.O_RDONLY)


def _stderr_writer() -> int:
    try:
        return os.dup(2)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


@contextmanager
def _claimed(fd: int, diversion: Callable[[], int]) -> Iterator[int]:
    """A private duplicate of `fd` that is the wire, while `fd` itself points at what `diversion` opens. On
    leaving, `fd` is the wire again, and blocking (asyncio made the two non-blocking, and a blocking stdout is what
    code after the master expects)."""
    wire = _private(fd)
    try:
        target = diversion()
        try:
            os.dup2(target, fd)
        finally:
            os.close(target)
    except OSError:
        os.close(wire)
        raise
    try:
        yield wire
    finally:
        os.dup2(wire, fd)
        os.close(wire)
        with suppress(OSError):
            os.set_blocking(fd, True)
