"""The HTTP front's sessions: each POST is answered as plain JSON unless something besides its answer reaches the
client while it is served (progress, log lines, a backend's request to the client); then it is answered as an SSE
stream. An SSE stream per request costs the front, and the client, about twice what a JSON body does.

A handshake-era request from a client that accepts both is answered lazily: the front waits for the first message
the request produces; its answer goes out as a JSON body, anything else opens the stream, first with that message
and then with the rest, up to the answer. So nothing the client can receive is dropped, and a request that only
could have brought something back (a backend that declared `logging` and logged nothing) still costs a JSON body.
A request silent for `open_after_s` gets its stream then, whose pings keep clients and proxies from giving up on
a long call. A session whose client declared it can be asked things (sampling, elicitation, roots) is answered the
same way: a request to the client is one more message that is not the answer, and opens the stream it goes out on
(the SDK's JSON branch would refuse to send it, so such a request is marked as able to carry one).

Anything but its answer that is sent for a request answered as JSON alone would stand in for the answer. So a
request that cannot get a stream (its client accepts only JSON; a 2026-07-28 request that asked for nothing more)
is marked in its ASGI scope, and the relay asks `FrontCall.streams` before every log line, progress notification
and request it passes to a caller.

A 2026-07-28 request that may bring back more than its answer goes the SDK's own way, which serves it in a task
group of its own and streams what comes. What it may bring back is known from the request and the backend it goes
to: a progress token, or a log opt-in in its `_meta` for a backend that declared `logging`. When nothing else can
come, it is answered in-line as JSON (by `front_modern` when it is plainly one request), and once it has run a
moment it is watched for its client going away (which is how a 2026-07-28 client cancels).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from functools import partial
from http import HTTPStatus
from typing import Any, Final

import anyio
import pydantic_core
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    MCP_SESSION_ID_HEADER,
    EventMessage,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    INTERNAL_ERROR,
    LOG_LEVEL_META_KEY,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCResponse,
    RequestId,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from master_mcp.deadlines import Deadlines
from master_mcp.front import LOG_LEVELS, STREAMS
from master_mcp.front_modern import InlineModern, plain_request

_AS_JSON: ContextVar[bool | None] = ContextVar("master_mcp_as_json", default=None)
# The request a session's POST task serves in the SDK's JSON branch, if a stream may still be opened for it.
_LAZY: ContextVar[str | None] = ContextVar("master_mcp_lazy", default=None)
_ANSWERS: Final = (JSONRPCResponse, JSONRPCError)
# Queued for a request that has been silent too long: it opens the stream, and is sent as a comment.
_OPEN_NOW: Final = JSONRPCNotification(jsonrpc="2.0", method="master-mcp/open-stream")
# Requests during which a backend may send something for the caller.
_FORWARDED: Final = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
_BACK_CHANNEL: Final = ("sampling", "elicitation", "roots")
_VERSION_HEADER: Final = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")
# Whether each Accept header value seen lately takes JSON, and an event stream: a client sends the same one every
# time.
_TAKES_BY_ACCEPT: dict[bytes, tuple[bool, bool]] = {}
_ACCEPTS_REMEMBERED: Final = 64
# How long an in-line 2026-07-28 request runs before it is watched for its client going away (see `_Watch`).
_WATCH_AFTER_S: Final = 0.2


class _ChosenPerRequest:
    """A flag the SDK reads for the mode it answers a request in (`is_json_response_enabled` on a session's
    transport, `json_response` on the manager): the mode chosen for the request being served, else the value the
    SDK was configured with."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> bool:
        chosen = _AS_JSON.get()
        return self.configured(obj, self._name) if chosen is None else chosen

    def __set__(self, obj: Any, value: bool) -> None:
        obj.__dict__[f"_{self._name}_configured"] = value

    @staticmethod
    def configured(obj: Any, name: str) -> bool:
        return bool(obj.__dict__.get(f"_{name}_configured", False))


def _answered(scope: Scope, *, streams: bool, as_json: bool) -> Token[bool | None]:
    """Serve a request in the mode chosen for it, until the token returned is reset: whether anything besides its
    answer may be passed to it (the relay reads `front.STREAMS` in the ASGI scope), and which of its branches the
    SDK takes (the flags above). A token rather than a context manager, which cost more than the rest of the
    choice on every request."""
    scope[STREAMS] = streams
    return _AS_JSON.set(as_json)


def _parsed(body: bytes) -> Any:
    try:
        return pydantic_core.from_json(body)  # the SDK's parser: a quarter of `json.loads`'s time on a call's body
    except ValueError:
        return None  # the SDK answers it with its own parse error


def _method(message: Any) -> str | None:
    """The method of a parsed POST body that is one request or notification; None for anything else (a response,
    a batch, garbage), which the SDK answers in its usual way."""
    method = message.get("method") if isinstance(message, dict) else None
    return method if isinstance(method, str) else None


def _progress_token(params: Any) -> bool:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and meta.get("progressToken") is not None


def _may_stream(message: Any, backend_may_log: Callable[[str, dict[str, Any]], bool]) -> bool:
    """Whether anything but its answer may reach the client while `message` (the parsed body of a 2026-07-28 POST,
    which has no back-channel) is served."""
    if (method := _method(message)) is None:
        return True  # not a request: the SDK answers whatever this is in its usual way
    params = message.get("params")
    if method not in _FORWARDED or not isinstance(params, dict):
        return False
    if _progress_token(params):
        return True
    if not _log_opt_in(params):
        return False  # a 2026-07-28 request gets no log line it did not ask for
    return backend_may_log(method, params)


def _log_opt_in(params: dict[str, Any]) -> bool:
    meta = params.get("_meta")
    return isinstance(meta, dict) and meta.get(LOG_LEVEL_META_KEY) in LOG_LEVELS


class _AdaptiveTransport(StreamableHTTPServerTransport):
    """The SDK's session transport, answering each POST as JSON until something besides its answer comes."""

    # What this session's client declared; a class default, as instances are made by the SDK's own constructor.
    _back_channel = False
    # Requests whose first message opened a stream: their memory streams now belong to that stream.
    _opened: set[str]
    # How long a request may stay silent before its stream opens anyway.
    open_after_s = 10.0
    # The lazily answered requests in flight, by id: each opens its stream if it is still silent `open_after_s`
    # after it came.
    _silent: Deadlines[str]

    is_json_response_enabled = _ChosenPerRequest()

    def _note_back_channel(self, initialize: dict[str, Any]) -> None:
        params = initialize.get("params")
        capabilities = params.get("capabilities") if isinstance(params, dict) else None
        if isinstance(capabilities, dict):
            self._back_channel = any(capabilities.get(name) is not None for name in _BACK_CHANNEL)

    async def _handle_post_request(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        if _ChosenPerRequest.configured(self, "is_json_response_enabled"):
            await super()._handle_post_request(scope, request, receive, send)
            return
        message = _parsed(await request.body())
        method = _method(message)
        if method == "initialize":
            self._note_back_channel(message)
        request_id = _request_id(message, method)
        if request_id is None:
            # What is not one request (a notification, a response, garbage) gets the SDK's own handling.
            streams = self._back_channel or method is None
            token = _answered(scope, streams=streams, as_json=not streams)
            try:
                await super()._handle_post_request(scope, request, receive, send)
            finally:
                _AS_JSON.reset(token)
            return
        # The SDK's JSON branch serves it; `_create_json_response` opens a stream if its first message is not
        # the answer. A client that takes no stream gets the answer only.
        lazy = _accepts_streams(scope)
        token = _answered(scope, streams=lazy, as_json=True)
        lazy_token = _LAZY.set(request_id if lazy else None)
        # A long call that sends nothing still gets its stream (and the stream's pings) before a client or a
        # proxy between gives up on a silent response.
        opens_at = self._silent.add(request_id) if lazy else 0.0
        try:
            await super()._handle_post_request(scope, request, receive, send)
        finally:
            if lazy:
                self._silent.remove(request_id, opens_at)
            _LAZY.reset(lazy_token)
            _AS_JSON.reset(token)

    def _message_metadata(self, request: Request, **kwargs: Any) -> ServerMessageMetadata:
        metadata = super()._message_metadata(request, **kwargs)
        if self._back_channel and _LAZY.get() is not None:
            metadata.can_send_request = True  # its first message, if it is a request to the client, opens the stream
        return metadata

    def _open_now(self, request_id: str) -> None:
        queued = self._request_streams.get(request_id)
        if queued is None or request_id in self._sse_stream_writers:
            return  # answered, or its stream is open
        try:
            queued[0].send_nowait(EventMessage(_OPEN_NOW))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # messages are queued already: the first of them opens the stream

    def _create_event_data(self, event_message: EventMessage) -> dict[str, Any]:
        # `_OPEN_NOW` may also trail the message that opened the stream; either way it is only a comment.
        if event_message.message is _OPEN_NOW:
            return {"comment": "open"}
        return super()._create_event_data(event_message)

    def _create_json_response(
        self,
        response_message: JSONRPCMessage | None,
        status_code: HTTPStatus = HTTPStatus.OK,
        headers: dict[str, str] | None = None,
    ) -> Response:
        request_id = _LAZY.get()
        if request_id is None or response_message is None or isinstance(response_message, _ANSWERS):
            return super()._create_json_response(response_message, status_code, headers)
        # The SDK's JSON branch hands over the first message the request produced, and it was not the answer.
        return self._stream_opening_with(request_id, response_message)

    def _stream_opening_with(self, request_id: str, first: JSONRPCMessage) -> Response:
        """An SSE stream for a request served by the SDK's JSON branch: `first`, then the rest of what the SDK's
        router queues for the request, up to its answer (the SDK's own writer)."""
        queued = self._request_streams.get(request_id)
        if queued is None:  # the session was terminated meanwhile; the SDK's own answer to that
            return self._create_error_response(
                "Session terminated before the request completed", HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR
            )
        pending = queued[1]
        writer, reader = anyio.create_memory_object_stream[dict[str, Any]](0)
        self._sse_stream_writers[request_id] = writer
        self._opened.add(request_id)
        stream = EventSourceResponse(
            content=reader,
            data_sender_callable=partial(
                self._run_sse_writer, request_id, writer, pending, self._create_event_data(EventMessage(first))
            ),
            headers={
                "Cache-Control": "no-cache, no-transform",
                "Connection": "keep-alive",
                "Content-Type": CONTENT_TYPE_SSE,
                **({MCP_SESSION_ID_HEADER: self.mcp_session_id} if self.mcp_session_id else {}),
            },
        )

        async def ended() -> None:
            # The SDK's writer cleans up as it ends, unless it was cancelled before it began.
            await reader.aclose()
            self._sse_stream_writers.pop(request_id, None)
            await super(_AdaptiveTransport, self)._clean_up_memory_streams(request_id)

        return _Finally(stream, ended)

    async def _clean_up_memory_streams(self, request_id: RequestId) -> None:
        if request_id in self._opened:  # the SDK's JSON branch, done with a request whose stream is open
            self._opened.discard(str(request_id))
            return
        await super()._clean_up_memory_streams(request_id)


class _Finally(Response):
    """A response, and what must run once it has been sent or abandoned."""

    def __init__(self, response: Response, then: Callable[[], Awaitable[None]]) -> None:
        self._response = response
        self._then = then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._response(scope, receive, send)
        finally:
            await self._then()


class AdaptiveSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, whose sessions, and 2026-07-28 requests, choose their response mode per
    request."""

    def __init__(self, *args: Any, backend_may_log: Callable[[str, dict[str, Any]], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backend_may_log = backend_may_log
        self._inline = InlineModern(self.app, self.security_settings)
        self._unwatched: Deadlines[_Watch] = Deadlines(_WATCH_AFTER_S, _Watch.begin)

    # The SDK reads it when it builds a session's transport, and when it serves a 2026-07-28 request.
    json_response = _ChosenPerRequest()

    async def _handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        configured = _ChosenPerRequest.configured(self, "json_response")
        if configured or scope.get("method") != "POST" or not _is_modern(scope) or not _accepts_streams(scope):
            # A client that cannot take a stream gets the SDK's own answer (406), whatever it asks.
            await super()._handle_request(scope, receive, send)
            return
        received = await _whole_body(receive)
        message = _parsed(b"".join(m.get("body", b"") for m in received))
        chosen = _may_stream(message, self._backend_may_log)
        token = _answered(scope, streams=chosen, as_json=not chosen)
        try:
            if chosen:  # the SDK streams it, and ends it when the client goes away
                await super()._handle_request(scope, _replaying(received, receive), send)
                return
            # A 2026-07-28 client cancels a request by closing it; answered in-line, the SDK would not notice.
            with anyio.CancelScope() as served:
                watch = _Watch(receive, served)
                begins_at = self._unwatched.add(watch)
                try:
                    if plain_request(message) and _accepts(scope)[0]:
                        # The body stays readable to whoever is handed the request, as in the SDK's entry.
                        replayed = _replaying(received, receive)
                        await self._inline.serve(message, self._lifespan_state, scope, replayed, send)
                    else:
                        await super()._handle_request(scope, _replaying(received, receive), send)
                finally:
                    self._unwatched.remove(watch, begins_at)
                    watch.end()
        finally:
            _AS_JSON.reset(token)

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            # The SDK builds the transport itself; its class is swapped rather than its constructor copied.
            configured = transport.__dict__.pop("is_json_response_enabled", False)
            transport.__class__ = _AdaptiveTransport
            transport.is_json_response_enabled = configured
            transport._opened = set()  # type: ignore[attr-defined]
            # `open_after_s` is read here, once per session: a change made later applies to sessions opened later.
            transport._silent = Deadlines(transport.open_after_s, transport._open_now)  # type: ignore[attr-defined]
        return transport


def _request_id(message: Any, method: str | None) -> str | None:
    """The key the SDK files a request's streams under, for a body that is one request (of `method`, its
    `_method`) with a plain id."""
    if method is not None:
        request_id = message.get("id")
        if type(request_id) in (int, str):
            return str(request_id)
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case), as Starlette's `Headers` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _is_modern(scope: Scope) -> bool:
    # The SDK routes by this header alone: any value that is not a handshake-era version goes to its 2026-07-28
    # path (which rejects what it does not know).
    version = _header(scope, _VERSION_HEADER)
    return version is not None and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS


def _accepts(scope: Scope) -> tuple[bool, bool]:
    """Whether the request's Accept header takes JSON, and an event stream, by the SDK's own reading of it
    (wildcards included), remembered per header value."""
    accept = _header(scope, b"accept") or b""
    takes = _TAKES_BY_ACCEPT.get(accept)
    if takes is None:
        if len(_TAKES_BY_ACCEPT) >= _ACCEPTS_REMEMBERED:
            _TAKES_BY_ACCEPT.clear()  # a client making up a new header per request gets no memory to fill
        headers = [(b"accept", accept)] if accept else []
        takes = _TAKES_BY_ACCEPT[accept] = check_accept_headers(Request({"type": "http", "headers": headers}))
    return takes


def _accepts_streams(scope: Scope) -> bool:
    return _accepts(scope)[1]


class _Watch:
    """The watch over an in-line 2026-07-28 request for its client going away. It begins once the request has run
    `_WATCH_AFTER_S`: most requests end sooner, and a watcher task on every one cost about 33 Python calls each
    (cProfile, 300 calls, stdio backend: 1,988 per request with it, 1,955 now; 1,889 without the cancel scope too).
    A client that went away sooner is noticed as the watch begins. The watcher is a bare task rather than a task
    group's: it only cancels."""

    __slots__ = ("_context", "_receive", "_served", "_task")

    def __init__(self, receive: Receive, served: anyio.CancelScope) -> None:
        self._receive = receive
        self._served = served
        self._context = contextvars.copy_context()  # the watcher runs in its request's context, as it did inline
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        watching = _cancel_on_disconnect(self._receive, self._served)
        self._task = asyncio.get_running_loop().create_task(watching, context=self._context)

    def end(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    # The body has been read already: what `receive` gives now is the client going away.
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the server could not tell: the request is served to its end
        return
    scope.cancel()


async def _whole_body(receive: Receive) -> list[Message]:
    received: list[Message] = []
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return received


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """`receive` with the messages already read from it handed out again first."""
    pending = list(received)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
