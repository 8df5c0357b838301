"""The wire to a stdio backend: a child process speaking newline-delimited JSON-RPC on its stdin and stdout.

It keeps the contract of the SDK's `stdio_client` (a read and a write stream for a `ClientSession`; the child in a
process group of its own; at the end its stdin is closed, then the group is sent SIGTERM, then SIGKILL) with no task
between the session and the pipes (`lines`).

POSIX only: on Windows the master keeps the SDK's transport, which knows that platform's process trees and
commands (`transports.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Final, TextIO

import anyio
from mcp.client.stdio import get_default_environment

from master_mcp.lines import LineReader, LineWriter

logger = logging.getLogger(__name__)

# The child's own chance to exit once its stdin is closed, then after SIGTERM (the MCP lifecycle's order).
_EXIT_WITHIN_S: Final = 2.0
_TERM_WITHIN_S: Final = 2.0
_POLL_S: Final = 0.01


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
) -> AsyncIterator[tuple[LineReader, LineWriter]]:
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
        yield LineReader(f"server {server_id!r}", process.stdout), LineWriter(process.stdin, stdout_pipe.close)
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
