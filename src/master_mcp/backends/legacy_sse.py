"""The client side of MCP's HTTP+SSE transport (protocol 2024-11-05), for a backend that still speaks only it.

A GET opens the session's one event stream. Its first event, `endpoint`, names where the master POSTs what it
sends, on the stream's own origin only (a message carries the backend's credentials); every answer comes back as a
`message` event on the stream. A POST that fails costs its own message and nothing else: a request is answered in
its place with the error, and the session goes on. The session ends when the stream does, or when no connection to
the backend can be made at all. Requests go through `HttpWire`, as a streamable-HTTP session's do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
import httpx2
from anyio.abc import TaskGroup
from mcp.shared._context_streams import ContextReceiveStream, ContextSendStream, create_context_streams
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from yarl import URL

from master_mcp.backends.http_wire import UNREACHABLE, HttpWire, Reply
from master_mcp.backends.sse_events import Event, EventParser, EventTooLarge

logger = logging.getLogger(__name__)

_POST_HEADERS: Final[dict[str, str]] = {"content-type": "application/json"}
# The stream's first event says where to POST; a backend that has said nothing by then is not going to.
_ENDPOINT_WITHIN_S: Final = 30.0

Inbox = ContextSendStream[SessionMessage | Exception]


async def _events(reply: Reply, parser: EventParser) -> AsyncIterator[Event]:
    async for chunk in reply.chunks():
        for event in parser.feed(chunk):
            yield event


async def _endpoint(events: AsyncIterator[Event], stream: URL) -> URL:
    """Where the backend takes messages: its `endpoint` event's address, which must be on the stream's origin."""
    async for event in events:
        if event.event != "endpoint":
            continue
        try:
            endpoint = stream.join(URL(event.data.strip()))
        except ValueError:
            raise httpx2.RemoteProtocolError("the backend's SSE endpoint event does not hold a URL") from None
        if endpoint.origin() != stream.origin():
            # Only the origin is named: the path or query of an endpoint may identify the session.
            raise httpx2.RemoteProtocolError(f"the backend named an endpoint on another origin ({endpoint.origin()})")
        return endpoint
    raise httpx2.RemoteProtocolError("the backend's SSE stream ended before it named an endpoint")


class _Link:
    def __init__(self, wire: HttpWire, inbox: Inbox, endpoint: URL) -> None:
        self._wire = wire
        self._inbox = inbox
        self._endpoint = endpoint

    async def listen(self, events: AsyncIterator[Event]) -> None:
        """Pass on what the stream brings until it ends; the session ends with it."""
        try:
            async for event in events:
                if event.event != "message" or not event.data:
                    continue
                try:
                    message = jsonrpc_message_adapter.validate_json(event.data, by_name=False)
                except ValidationError:
                    logger.warning("a backend sent an event that is not a JSON-RPC message")
                    continue
                await self._deliver(SessionMessage(message))
        except (httpx2.TransportError, EventTooLarge) as exc:
            logger.debug("the SSE stream ended: %s", type(exc).__name__)
        await self._inbox.aclose()

    async def pump(self, outbox: ContextReceiveStream[SessionMessage], tg: TaskGroup) -> None:
        """POST what the session writes: a request in a task of its own (its answer comes on the stream), anything
        else in order, here."""
        async for item in outbox:
            message = item.message
            body = message.model_dump_json(by_alias=True, exclude_unset=True).encode()
            if isinstance(message, JSONRPCRequest):
                sender = outbox.last_context
                if sender is not None:
                    sender.run(tg.start_soon, self._request, message, body)
                else:
                    tg.start_soon(self._request, message, body)
                continue
            failure = await self._post(body)
            if failure is not None:
                logger.warning("a message to the backend was lost: %s", failure.message)

    async def _request(self, message: JSONRPCRequest, body: bytes) -> None:
        failure = await self._post(body)
        if failure is not None:
            await self._deliver(SessionMessage(JSONRPCError(jsonrpc="2.0", id=message.id, error=failure)))

    async def _post(self, body: bytes) -> ErrorData | None:
        """POST one message; what went wrong, or None when the backend took it."""
        try:
            reply = await self._wire.request("POST", _POST_HEADERS, body, to=self._endpoint)
        except UNREACHABLE:
            raise  # nothing got to the backend: it is down, and the session ends with this transport
        except httpx2.TransportError as exc:
            return ErrorData(code=CONNECTION_CLOSED, message=f"the message's connection failed ({type(exc).__name__})")
        with anyio.CancelScope(shield=True):
            await reply.finish()
        if reply.status >= 300:
            return ErrorData(code=INTERNAL_ERROR, message=f"the backend refused the message: HTTP {reply.status}")
        return None

    async def _deliver(self, message: SessionMessage) -> None:
        try:
            await self._inbox.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the stream has ended, and the session with it: nobody waits for this any more


@asynccontextmanager
async def legacy_sse(
    wire: HttpWire, *, max_event_bytes: int
) -> AsyncIterator[tuple[ContextReceiveStream[SessionMessage | Exception], ContextSendStream[SessionMessage]]]:
    """The (read, write) streams of a session with the HTTP+SSE backend `wire` reaches."""
    reply = await wire.request("GET", {"accept": "text/event-stream"})
    try:
        if reply.status >= 300 or not reply.content_type.startswith("text/event-stream"):
            raise httpx2.RemoteProtocolError(f"the backend refused the SSE stream: HTTP {reply.status}")
        events = _events(reply, EventParser(max_event_bytes))
        with anyio.fail_after(_ENDPOINT_WITHIN_S):
            endpoint = await _endpoint(events, reply.url)
        wire.reach(endpoint)
        inbox, read = create_context_streams[SessionMessage | Exception](0)
        write, outbox = create_context_streams[SessionMessage](0)
        link = _Link(wire, inbox, endpoint)
        async with inbox, read, write, outbox, anyio.create_task_group() as tg:
            tg.start_soon(link.listen, events)
            tg.start_soon(link.pump, outbox, tg)
            try:
                yield read, write
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await reply.finish()
