"""The stdio front: the master's own stdin and stdout as the read and write streams of its MCP server.

The SDK's `stdio_server` reads each line, and writes and flushes each message, in a worker thread: three thread
hand-offs and two memory streams on every call. Here the client's pipes or sockets are read and written on the
event loop (`lines`). Python clients hand a server pipes; Node clients (Claude Desktop, editors) hand it sockets,
one per stream; inetd-style launchers hand it one socket for both.

While serving, the wire is on private duplicates of fds 0 and 1, and fd 0 reads the null device and fd 1 writes to
stderr, as the SDK's transport does: whatever else in the process reads stdin or prints (a custom auth strategy, a
library) cannot take or tear the client's messages. Both are restored at the end.

Anything else (a regular file, the null device, a terminal, whose non-blocking mode would be stderr's too, a stderr
that is the wire itself) and Windows keep the SDK's transport.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from functools import partial
from typing import Any, Final, Literal

from mcp.server.stdio import stdio_server

from master_mcp.lines import MAX_MESSAGE_BYTES, LineReader, LineWriter

if sys.platform != "win32":
    import fcntl

# How long what is still queued for the client may take to go out once the master is done.
_FLUSH_WITHIN_S: Final = 2.0

_Kind = Literal["pipe", "socket"]


@asynccontextmanager
async def stdio_front(max_line_bytes: int = MAX_MESSAGE_BYTES) -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) streams of the process's stdin and stdout, until the context is left."""
    wires = _wires()
    if wires is None:
        async with stdio_server() as streams:
            yield streams
        return
    stdin_kind, stdout_kind, shared = wires
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=max_line_bytes, loop=loop)
    with _claimed(0, _null_reader) as wire_in, _claimed(1, _stderr_writer) as wire_out:
        async with AsyncExitStack() as closing:
            if shared:
                stdout, protocol = await _served(loop, "socket", wire_out, reader, writes=True)
                read_side = stdout
            else:
                read_side, _ = await _served(loop, stdin_kind, wire_in, reader, writes=False)
                closing.callback(read_side.close)
                # Nothing is read from stdout: what comes there (a socket peer's shutdown) is set aside.
                stdout, protocol = await _served(loop, stdout_kind, wire_out, asyncio.StreamReader(), writes=True)
            writer = asyncio.StreamWriter(stdout, protocol, None, loop)
            closing.push_async_callback(_flush, writer)
            # A client that stops reading ends the session by closing the read side (see `LineWriter`).
            yield (
                LineReader("the stdio client", reader, undecodable="replace"),
                LineWriter(writer, read_side.close),
            )


async def _served(
    loop: asyncio.AbstractEventLoop, kind: _Kind, wire: int, reader: asyncio.StreamReader, *, writes: bool
) -> tuple[Any, asyncio.StreamReaderProtocol]:
    """The transport serving `wire` on the loop, what it reads going to `reader`. A socket gets a socket's
    transport, either way: a pipe's would take a peer's shutdown, or requests coming in on a socket shared with
    stdin, for the end, and report a reset with a traceback."""
    protocol = partial(asyncio.StreamReaderProtocol, reader)
    if kind == "socket":
        return await loop.connect_accepted_socket(protocol, socket.socket(fileno=_private(wire)))
    if writes:
        return await loop.connect_write_pipe(protocol, os.fdopen(_private(wire), "wb", buffering=0))
    return await loop.connect_read_pipe(protocol, os.fdopen(_private(wire), "rb", buffering=0))


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Close the client's stdout once what is queued for it has gone out, or `_FLUSH_WITHIN_S` has passed."""
    writer.close()  # the transport closes once its buffer is written
    try:
        with suppress(TimeoutError, OSError):  # OSError: the pipe broke, and the transport is gone
            await asyncio.wait_for(writer.wait_closed(), _FLUSH_WITHIN_S)
    finally:
        if writer.transport.get_write_buffer_size():  # emptied when a transport is lost: this one is not
            writer.transport.abort()  # a client that reads no more: what is left for it is dropped


def _wires() -> tuple[_Kind, _Kind, bool] | None:
    """What stdin and stdout are, and whether they are one socket; None where the SDK's transport serves."""
    if sys.platform == "win32":
        return None
    try:
        stdin, stdout = os.fstat(0), os.fstat(1)
    except OSError:
        return None
    stdin_kind, stdout_kind = _kind(0, stdin.st_mode), _kind(1, stdout.st_mode)
    if stdin_kind is None or stdout_kind is None:
        return None
    with suppress(OSError):
        stderr = os.fstat(2)
        if _same(stderr, stdin) or _same(stderr, stdout):
            return None  # it would be made non-blocking with the wire, and be what fd 1 is diverted to
    return stdin_kind, stdout_kind, stdin_kind == stdout_kind == "socket" and _same(stdin, stdout)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def _kind(fd: int, mode: int) -> _Kind | None:
    if stat.S_ISFIFO(mode):
        return "pipe"
    if not stat.S_ISSOCK(mode):
        return None
    try:
        blocking = os.get_blocking(fd)
        duplicate = os.dup(fd)
    except OSError:
        return None
    try:
        probe = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return None
    with probe:
        try:
            listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            stream = probe.type == socket.SOCK_STREAM
        except OSError:
            return None
        finally:
            # A default timeout set by some library makes a new socket object non-blocking, and the mode belongs to
            # the client's socket, which the SDK's transport would then read blocking.
            with suppress(OSError):
                os.set_blocking(fd, blocking)
        return "socket" if stream and not listening else None


def _private(fd: int) -> int:
    # Above the standard three, and not inherited by the master's stdio children, which must not hold the client's
    # pipes open.
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


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
    leaving, `fd` is the wire again, in the blocking mode it had (the event loop makes the wire non-blocking)."""
    blocking = os.get_blocking(fd)
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
            os.set_blocking(fd, blocking)
