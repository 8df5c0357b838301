"""The client side of MCP's HTTP+SSE transport (protocol 2024-11-05), for a backend that still speaks only it.

A GET opens the session's one event stream. Its first event, `endpoint`, names where the master POSTs what it
sends, on the stream's own origin only (a message carries the backend's credentials); every answer comes back as a
`message` event on the stream. Each POST is answered at once (the work happens behind the stream); requests are
POSTed side by side, and a cancellation only once its request has been taken.

A POST whose connection breaks, or that the backend refuses, is answered as that message's error and the session
goes on (the SDK's client stopped sending for good, leaving a session that could never send again). The session
ends when the stream does, when no connection to the backend can be made, when the backend no longer knows the
session (404), or when `notifications/initialized` cannot be delivered. Requests go through `HttpWire`, as a
streamable-HTTP session's do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import anyio
import httpx2
from anyio.abc import TaskGroup
from mcp.shared._context_streams import ContextReceiveStream, ContextSendStream, create_context_streams
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from yarl import URL

from master_mcp.backends.failures import made_up
from master_mcp.backends.http_wire import REPEATABLE, UNREACHABLE, HttpWire, Reply
from master_mcp.backends.sse_events import Event, EventParser

logger = logging.getLogger(__name__)

# Everything RFC 3986 lets stand in a URL (letters, digits and "_.-~" besides): nothing of it is escaped again.
_URL_CHARACTERS: Final = "!#$%&'()*+,/:;=?@[]~"
_STREAM_HEADERS: Final[dict[str, str]] = {"accept": "text/event-stream", "cache-control": "no-store"}
_POST_HEADERS: Final[dict[str, str]] = {"content-type": "application/json"}
# The stream's first event says where to POST; a backend that has said nothing by then is not going to.
_ENDPOINT_WITHIN_S: Final = 30.0
# A POST is answered at once (the work happens behind the stream); a message that is not taken by then is lost, so
# that one backend stall does not hold up everything sent after it.
_POST_WITHIN_S: Final = 10.0
_NOT_TAKEN: Final = ErrorData(code=CONNECTION_CLOSED, message=f"the backend did not take it within {_POST_WITHIN_S:g}s")

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
            # As sent, made valid: what is escaped stays as it is (a query may be signed over its exact bytes), and
            # only what may not stand in a URL (a space, non-ASCII) is escaped.
            endpoint = stream.join(URL(quote(event.data.strip(), safe=_URL_CHARACTERS), encoded=True))
            here = _origin(endpoint) == _origin(stream)
            origin = str(endpoint.origin())
        except ValueError:
            raise httpx2.RemoteProtocolError("the backend's SSE endpoint event does not hold a URL") from None
        if not here or endpoint.user not in (None, stream.user) or endpoint.password not in (None, stream.password):
            # Only the origin is named: the path or query of an endpoint may identify the session.
            raise httpx2.RemoteProtocolError(f"the backend named an endpoint elsewhere than its own origin ({origin})")
        return endpoint
    raise httpx2.RemoteProtocolError("the backend's SSE stream ended before it named an endpoint")


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower(), url.port  # `port` is the scheme's default when none is given


@dataclass(frozen=True, slots=True)
class _Posting:
    taken: anyio.Event
    scope: anyio.CancelScope


class _Link:
    def __init__(self, wire: HttpWire, inbox: Inbox, endpoint: URL) -> None:
        self._wire = wire
        self._inbox = inbox
        self._endpoint = endpoint
        # Each request's POST until the backend has taken it, by JSON-RPC id: its cancellation waits for it.
        self._taking: dict[RequestId, _Posting] = {}

    async def listen(self, events: AsyncIterator[Event]) -> None:
        """Pass on what the stream brings until it ends; the session ends with it (a stream that broke, or an event
        over the limit, ends it with that error, which the supervisor reports)."""
        async for event in events:
            if event.event != "message" or not event.data:
                continue
            try:
                message = jsonrpc_message_adapter.validate_json(event.data, by_name=False)
            except ValidationError:
                logger.warning("a backend sent an event that is not a JSON-RPC message")
                continue
            await self._deliver(SessionMessage(message))
        await self._inbox.aclose()

    async def pump(self, outbox: ContextReceiveStream[SessionMessage], tg: TaskGroup) -> None:
        """POST what the session writes. A request goes in a task of its own, so that one the backend is slow to
        take holds up no other (its timeout runs meanwhile); a cancellation waits until its request has been taken,
        never overtaking it; anything else goes in order, here, each given `_POST_WITHIN_S`."""
        async for item in outbox:
            message = item.message
            metadata = item.metadata if isinstance(item.metadata, ClientMessageMetadata) else None
            body = message.model_dump_json(by_alias=True, exclude_unset=True).encode()
            if isinstance(message, JSONRPCRequest):
                posting = self._taking[message.id] = _Posting(anyio.Event(), anyio.CancelScope())
                repeatable = metadata is not None and REPEATABLE in (metadata.headers or {})
                sender = outbox.last_context
                if sender is not None:  # the request's task runs in the sender's context (its log correlation)
                    sender.run(tg.start_soon, self._request, message, body, repeatable, posting)
                else:
                    tg.start_soon(self._request, message, body, repeatable, posting)
            elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
                request_id = cancelled_request_id_from_params(message.params)
                tg.start_soon(self._cancel, self._taking.get(request_id) if request_id is not None else None, body)
            else:
                initialized = isinstance(message, JSONRPCNotification) and message.method == "notifications/initialized"
                await self._tell(body, essential=initialized)

    async def _request(self, message: JSONRPCRequest, body: bytes, repeatable: bool, posting: _Posting) -> None:
        failure: ErrorData | None = None
        try:
            with posting.scope:
                failure = await self._post(body, repeatable)
        finally:
            posting.taken.set()
            if self._taking.get(message.id) is posting:  # an id reused meanwhile belongs to the newer request
                del self._taking[message.id]
        if failure is not None:
            await self._deliver(SessionMessage(JSONRPCError(jsonrpc="2.0", id=message.id, error=failure)))

    async def _cancel(self, posting: _Posting | None, body: bytes) -> None:
        if posting is not None:
            with anyio.move_on_after(_POST_WITHIN_S):
                await posting.taken.wait()
            # A POST the backend has still not taken is given up on: nobody waits for its answer any more.
            posting.scope.cancel()
        await self._tell(body)

    async def _tell(self, body: bytes, *, essential: bool = False) -> None:
        """POST a message that gets no answer, given `_POST_WITHIN_S`; one the session cannot go on without
        (`essential`) ends it when it is not taken."""
        failure: ErrorData | None = _NOT_TAKEN
        with anyio.move_on_after(_POST_WITHIN_S):
            failure = await self._post(body, repeatable=False)
        if failure is None:
            return
        if essential:
            raise httpx2.RemoteProtocolError(f"an essential message was not delivered: {failure.message}")
        logger.warning("a message to the backend was lost: %s", failure.message)

    async def _post(self, body: bytes, repeatable: bool) -> ErrorData | None:
        """POST one message; what went wrong, or None when the backend took it."""
        try:
            reply = await self._wire.request("POST", _POST_HEADERS, body, to=self._endpoint, repeatable=repeatable)
        except UNREACHABLE:
            raise  # nothing got to the backend: it is down, and the session ends with this transport
        except httpx2.TransportError as exc:
            return ErrorData(code=CONNECTION_CLOSED, message=f"the message's connection failed ({type(exc).__name__})")
        with anyio.CancelScope(shield=True):
            await reply.finish()
        if reply.status == 404:
            raise httpx2.RemoteProtocolError("the backend no longer knows the session (HTTP 404)")
        if reply.status >= 300:
            return made_up(INTERNAL_ERROR, f"the backend refused the message: HTTP {reply.status}", reply.status)
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
    reply = await wire.request("GET", _STREAM_HEADERS)
    try:
        if reply.status >= 300 or not reply.content_type.startswith("text/event-stream"):
            raise httpx2.RemoteProtocolError(f"the backend refused the SSE stream: HTTP {reply.status}")
        events = _events(reply, EventParser(max_event_bytes))
        with anyio.fail_after(_ENDPOINT_WITHIN_S):
            endpoint = await _endpoint(events, reply.url)
        wire.add_address(endpoint)
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
