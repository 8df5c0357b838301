"""The wire to a stdio backend: a child process speaking newline-delimited JSON-RPC on its stdin and stdout.

It keeps the contract of the SDK's `stdio_client` (a read and a write stream for a `ClientSession`; the child in a
process group of its own; at the end its stdin is closed, then the group is sent SIGTERM, then SIGKILL) with no task
between the session and the pipes. A message is written to stdin by whoever sends it, and the session's receive loop
reads stdout itself, a line at a time. The SDK's transport hands every message through a memory stream to a pipe
task and decodes stdout as text before parsing it: two task switches and a copy per message, in a path every call to
a stdio backend takes twice.

POSIX only: on Windows the master keeps the SDK's transport, which knows that platform's process trees and
commands (`transports.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TextIO

import anyio
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter
from pydantic import ValidationError

logger = logging.getLogger(__name__)

# The child's own chance to exit once its stdin is closed, then after SIGTERM (the MCP lifecycle's order).
_EXIT_WITHIN_S: Final = 2.0
_TERM_WITHIN_S: Final = 2.0
_POLL_S: Final = 0.01
_YIELD_EVERY: Final = 32


class _Stream:
    """What both streams do as the session's streams: closing is saying "no more" (the pipes close at the end)."""

    _closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _Stdout(_Stream):
    """The session's read stream: each line of the child's stdout, parsed, until it closes it."""

    def __init__(self, server_id: str, lines: asyncio.StreamReader) -> None:
        self._server_id = server_id
        self._lines = lines
        self._taken = 0

    def __aiter__(self) -> _Stdout:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        while not self._closed:
            try:
                line = await self._lines.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                break  # the child closed its stdout (or died); an unfinished last line is no message
            except asyncio.LimitOverrunError:
                # Its answer is lost either way; ending the session says so now rather than at the call's timeout.
                logger.error("server %s wrote a line longer than the master takes; closing it", self._server_id)
                break
            if line.isspace():
                continue
            self._taken += 1
            if not self._taken % _YIELD_EVERY:
                # Buffered lines are read without waiting: a child that floods its stdout must not keep the rest
                # of the master from running.
                await asyncio.sleep(0)
            try:
                return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
            except ValueError as exc:
                # The line itself stays out of the message: a child may print anything, credentials included.
                errors = f" ({exc.error_count()} validation errors)" if isinstance(exc, ValidationError) else ""
                return ValueError(f"a line on its stdout is not a JSON-RPC message{errors}")
        self._closed = True
        raise StopAsyncIteration

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise anyio.EndOfStream from None


class _Stdin(_Stream):
    """The session's write stream: each message is one line written to the child's stdin by its sender."""

    def __init__(self, pipe: asyncio.StreamWriter, close_stdout: Callable[[], None]) -> None:
        self._pipe = pipe
        self._close_stdout = close_stdout

    async def send(self, item: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        pipe = self._pipe
        if pipe.transport.get_write_buffer_size():
            # A child that is not reading holds up its senders before they add to what it has not read: one
            # message per waiting caller at most, and none from a caller that gave up waiting.
            try:
                await pipe.drain()
            except ConnectionError:
                self._broken()
        if pipe.is_closing():
            self._broken()
        message = item.message
        pipe.write(type(message).__pydantic_serializer__.to_json(message, by_alias=True, exclude_unset=True) + b"\n")
        if pipe.is_closing():
            self._broken()  # the write found its stdin closed: the message is lost, so the caller must hear of it

    def _broken(self) -> None:
        # A child that closed its stdin takes no more requests, though it may still be running: the session ends
        # (and its supervisor starts it again) instead of failing every call from now on. Closing our end of its
        # stdout ends the session's receive loop.
        self._close_stdout()
        raise anyio.BrokenResourceError


@asynccontextmanager
async def stdio_child(
    server_id: str,
    command: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stderr: TextIO,
    max_line_bytes: int,
) -> AsyncIterator[tuple[_Stdout, _Stdin]]:
    """Start the child and yield its (read, write) streams; on leaving, the child and its own children end.

    It inherits only the SDK's safe set of environment variables, overlaid with `env`. A line longer than
    `max_line_bytes` ends the session; until it is seen to be, up to twice that may be held (asyncio stops reading a
    pipe only then).
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: asyncio.subprocess.SubprocessStreamProtocol(limit=max_line_bytes, loop=loop),
        command,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=get_default_environment() | env,
        start_new_session=True,  # its group, so that ending it ends what it started too
    )
    process = asyncio.subprocess.Process(transport, protocol, loop)
    assert process.stdin is not None and process.stdout is not None
    stdout_pipe = transport.get_pipe_transport(1)
    assert stdout_pipe is not None
    try:
        yield _Stdout(server_id, process.stdout), _Stdin(process.stdin, stdout_pipe.close)
    finally:
        try:
            with anyio.CancelScope(shield=True):
                await _end(process, process.stdin, process.stdout)
        finally:
            with suppress(PermissionError):  # re-killing a setuid child
                transport.close()  # kills the child if it is somehow still there


async def _end(process: asyncio.subprocess.Process, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> None:
    stdin.close()

    async def discard() -> None:
        # A child blocked writing to a full stdout never reads the end of its stdin, so it is read to the end.
        with suppress(ConnectionError, OSError):
            while await stdout.read(1 << 16):
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(discard)
        if not await _exited(process, _EXIT_WITHIN_S):
            _signal_group(process, kill=False)
            if not await _exited(process, _TERM_WITHIN_S):
                _signal_group(process, kill=True)
                if not await _exited(process, _TERM_WITHIN_S):
                    logger.warning("process %d is still alive after SIGKILL; leaving it", process.pid)
        tg.cancel_scope.cancel()


async def _exited(process: asyncio.subprocess.Process, within_s: float) -> bool:
    # Polled, not `process.wait()`: that also waits for the pipes to close, which a grandchild holding them open
    # never does.
    deadline = time.monotonic() + within_s
    while process.returncode is None:
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(_POLL_S)
    return True


def _signal_group(process: asyncio.subprocess.Process, *, kill: bool) -> None:
    # The child leads its own group (start_new_session), so its pid is the group's id.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
