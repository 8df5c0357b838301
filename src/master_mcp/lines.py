"""Newline-delimited JSON-RPC on a pair of asyncio pipes, as the read and write streams of an SDK session.

Both stdio hops use it: the master's stdin and stdout (the stdio front) and a stdio backend's stdout and stdin. A
message is written to the pipe by whoever sends it, and the session's receive loop reads its pipe itself, a line at
a time, parsing the bytes. The SDK's stdio transports hand every message through a memory stream to a task of their
own (the server's does its reads and writes in worker threads) and decode the bytes as text before parsing them:
task switches and copies on every message of a path every call takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Final, Literal, Self

import anyio
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter
from pydantic import ValidationError

logger = logging.getLogger(__name__)

# The longest message taken from a peer, a stdio line or a backend's SSE event: a longer one ends the session (its
# message is lost either way). The SDK's 1 MiB default for SSE would fail every larger result (a file, a report);
# the bound still keeps one runaway peer from growing the master without limit.
MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024
_YIELD_EVERY: Final = 32


class _Stream:
    """What both streams do as a session's streams: closing is saying "no more" (the pipes close at the end)."""

    _closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class LineReader(_Stream):
    """A session's read stream: each line of a pipe, parsed, until the other end closes it. `peer` names that end
    in the log ("server 'x'", "the stdio client"). `undecodable`: what becomes of bytes that are not UTF-8 ("strict":
    the line is refused; "replace": they are read as U+FFFD), as the SDK's transport on that side does."""

    def __init__(
        self, peer: str, lines: asyncio.StreamReader, *, undecodable: Literal["strict", "replace"] = "strict"
    ) -> None:
        self._peer = peer
        self._lines = lines
        self._taken = 0
        self._replace = undecodable == "replace"

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        while not self._closed:
            try:
                line = await self._lines.readuntil(b"\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the peer closed or reset its end (or died); an unfinished last line is no message
            except asyncio.LimitOverrunError:
                # Its message is lost either way; ending the session says so now rather than at a timeout.
                logger.error("%s wrote a line longer than the master takes; closing the session", self._peer)
                break
            if line.isspace():
                continue
            self._taken += 1
            if not self._taken % _YIELD_EVERY:
                # Buffered lines are read without waiting: a peer that floods its pipe must not keep the rest of
                # the master from running.
                await asyncio.sleep(0)
            try:
                return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
            except ValueError as exc:
                if self._replace and not line.isascii():
                    with suppress(ValueError):
                        text = line.decode("utf-8", "replace")
                        return SessionMessage(jsonrpc_message_adapter.validate_json(text, by_name=False))
                # The line itself stays out of the message: a peer may write anything, credentials included.
                errors = f" ({exc.error_count()} validation errors)" if isinstance(exc, ValidationError) else ""
                return ValueError(f"a line from {self._peer} is not a JSON-RPC message{errors}")
        self._closed = True
        raise StopAsyncIteration

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise anyio.EndOfStream from None


class LineWriter(_Stream):
    """A session's write stream: each message is one line written to a pipe by its sender. When the pipe breaks,
    `close_reader` (closing the session's other pipe) ends the session's receive loop."""

    def __init__(self, pipe: asyncio.StreamWriter, close_reader: Callable[[], None]) -> None:
        self._pipe = pipe
        self._close_reader = close_reader

    async def send(self, item: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        pipe = self._pipe
        if pipe.transport.get_write_buffer_size():
            # A peer that is not reading holds up the senders once 64 KiB wait for it (asyncio's high-water mark),
            # before they add to it: one message per waiting sender at most past that, and none from a sender that
            # gave up waiting.
            try:
                await pipe.drain()
            except ConnectionError:
                self._broken()
        if pipe.is_closing():
            self._broken()
        message = item.message
        pipe.write(type(message).__pydantic_serializer__.to_json(message, by_alias=True, exclude_unset=True) + b"\n")
        if pipe.is_closing():
            self._broken()  # the write found the pipe closed: the message is lost, so the sender must hear of it

    def _broken(self) -> None:
        # A peer that closed its end takes no more messages, though it may still be running: the session ends
        # instead of failing every message from now on.
        self._close_reader()
        raise anyio.BrokenResourceError
