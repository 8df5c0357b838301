"""Opening the wire to one backend: a stdio child, streamable HTTP, or SSE."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx2
from mcp.client.stdio import StdioServerParameters, stdio_client

from master_mcp.backends.balancer import Instances
from master_mcp.backends.http_wire import HttpWire
from master_mcp.backends.legacy_sse import legacy_sse
from master_mcp.backends.stdio_child import stdio_child
from master_mcp.backends.streamable import streamable_http
from master_mcp.config.models import ServerConfig
from master_mcp.lines import MAX_MESSAGE_BYTES
from master_mcp.logs import REDACTOR


def _working_dir(server: ServerConfig, base_dir: Path) -> Path:
    cwd = Path(server.cwd) if server.cwd else base_dir
    return cwd if cwd.is_absolute() else base_dir / cwd


def _windows_child(server: ServerConfig, base_dir: Path, errlog: TextIO) -> AbstractAsyncContextManager[Any]:
    # The SDK's transport knows what Windows needs (Job Objects to end a child's own children, `npx` found as
    # `npx.cmd`, threads under a selector loop); the master's own is for POSIX.
    assert server.command is not None
    parameters = StdioServerParameters(
        command=server.command, args=list(server.args), env=dict(server.env), cwd=_working_dir(server, base_dir)
    )
    return stdio_client(parameters, errlog=errlog)


@contextmanager
def child_stderr(server_id: str, tail: deque[str] | None = None) -> Iterator[TextIO]:
    """A pipe for a stdio child's stderr whose lines become log lines of the master, so they pass the same
    redaction as everything else (a child may well print its own credentials)."""
    read_fd, write_fd = os.pipe()
    child_logger = logging.getLogger(f"master_mcp.child.{server_id}")

    def pump() -> None:
        with os.fdopen(read_fd, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.strip():
                    child_logger.info("%s", line.rstrip())
                    if tail is not None:
                        tail.append(REDACTOR.redact(line.strip())[:300])

    thread = threading.Thread(target=pump, name=f"stderr:{server_id}", daemon=True)
    thread.start()
    writer = os.fdopen(write_fd, "w")
    try:
        yield writer
    finally:
        writer.close()


@asynccontextmanager
async def open_transport(
    server: ServerConfig,
    base_dir: Path,
    auth: httpx2.Auth | None = None,
    on_forgotten: Callable[[], None] | None = None,
    instances: Instances | None = None,
    stderr_tail: deque[str] | None = None,
) -> AsyncIterator[Any]:
    """Yield the (read, write) stream pair of a fresh connection to `server`; `on_forgotten` is told when a
    streamable-HTTP backend no longer knows the session; `instances` spreads requests over several instances of
    the backend."""
    if server.type == "stdio":
        assert server.command is not None
        with child_stderr(server.id, stderr_tail) as errlog:
            child = (
                _windows_child(server, base_dir, errlog)
                if sys.platform == "win32"
                else stdio_child(
                    server.id,
                    server.command,
                    list(server.args),
                    env=dict(server.env),
                    cwd=_working_dir(server, base_dir),
                    stderr=errlog,
                    max_line_bytes=MAX_MESSAGE_BYTES,
                )
            )
            async with child as streams:
                errlog.close()  # the child has its copy; EOF on the pipe now means the child is gone
                yield streams
        return
    url = server.endpoint_url
    assert url is not None
    async with HttpWire(url, headers=server.headers, auth=auth, instances=instances) as wire:
        if server.type == "sse":
            async with legacy_sse(wire, max_event_bytes=MAX_MESSAGE_BYTES) as streams:
                yield streams
            return
        forgotten = on_forgotten or (lambda: None)
        async with streamable_http(wire, max_event_bytes=MAX_MESSAGE_BYTES, on_forgotten=forgotten) as streams:
            yield streams
