"""The HTTP front's sessions: each POST is answered as plain JSON when nothing but its answer can reach the client
while it is served, and as an SSE stream when something else may (progress, log lines, a backend's request to
the client). An SSE stream per request costs the front, and the client, about twice what a JSON body does.

What a request may bring back is known from the session, the request and the backend it goes to: the client
capabilities the session declared at `initialize` (sampling, elicitation, roots), whether the request carries a
progress token, and whether that backend declared it may send log lines (`logging`). Anything else (lists, ping,
initialize) only ever gets its answer. A 2026-07-28 request has no back-channel and gets log lines only where its
`_meta` asks for them. Left to itself, the SDK serves such a request in a task group of its own and waits to see
whether the handler sends something before its result; here, when nothing else can come, it is answered in-line as
JSON, beside a watcher of the client going away (which is how a 2026-07-28 client cancels).

The choice is made in the POST's own task; the SDK's message router, in another task, does not see it. Nothing may
therefore send a message related to a request answered as JSON (it would stand in for the answer): the relay asks
`FrontCall.streams` before every log line and request it passes to a caller, and progress needs a token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import anyio
from mcp.server.streamable_http import StreamableHTTPServerTransport, check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from master_mcp.front import LOG_LEVELS, STREAMS

_AS_JSON: ContextVar[bool | None] = ContextVar("master_mcp_as_json", default=None)
# Requests during which a backend may send something for the caller.
_FORWARDED: Final = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
_BACK_CHANNEL: Final = ("sampling", "elicitation", "roots")
_VERSION_HEADER: Final = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")


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


@contextmanager
def _answered(scope: Scope, *, streams: bool) -> Iterator[None]:
    """Serve a request in the mode chosen for it: the relay reads it in the ASGI scope (`front.STREAMS`), the SDK
    through the flags above."""
    scope[STREAMS] = streams
    token = _AS_JSON.set(not streams)
    try:
        yield
    finally:
        _AS_JSON.reset(token)


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None  # the SDK answers it with its own parse error


def _progress_token(params: Any) -> bool:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and meta.get("progressToken") is not None


def may_stream(message: Any, backend_may_log: Callable[[str, dict[str, Any]], bool], *, modern: bool) -> bool:
    """Whether anything but its answer may reach the client while `message` (a parsed POST body) is served, for a
    client without a back-channel."""
    if not isinstance(message, dict) or not isinstance(method := message.get("method"), str):
        return True  # not a request: the SDK answers whatever this is in its usual way
    params = message.get("params")
    if method not in _FORWARDED or not isinstance(params, dict):
        return False
    if _progress_token(params):
        return True
    if modern and not _log_opt_in(params):
        return False  # a 2026-07-28 request gets no log line it did not ask for
    return backend_may_log(method, params)


def _log_opt_in(params: dict[str, Any]) -> bool:
    meta = params.get("_meta")
    return isinstance(meta, dict) and meta.get(LOG_LEVEL_META_KEY) in LOG_LEVELS


class _AdaptiveTransport(StreamableHTTPServerTransport):
    """The SDK's session transport, answering each POST in the mode chosen for it."""

    # What this session's client declared; a class default, as instances are made by the SDK's own constructor.
    _back_channel = False
    # Whether the backend that serves a request (method, params) may send log lines while it does.
    backend_may_log: Callable[[str, dict[str, Any]], bool] = staticmethod(lambda method, params: True)

    is_json_response_enabled = _ChosenPerRequest()

    def _streams(self, message: Any) -> bool:
        if isinstance(message, dict) and message.get("method") == "initialize":
            params = message.get("params")
            capabilities = params.get("capabilities") if isinstance(params, dict) else None
            if isinstance(capabilities, dict):
                self._back_channel = any(capabilities.get(name) is not None for name in _BACK_CHANNEL)
        if self._back_channel:
            return True  # a client that can be asked things gets the stream it may be asked on, always
        return may_stream(message, self.backend_may_log, modern=False)

    async def _handle_post_request(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        if _ChosenPerRequest.configured(self, "is_json_response_enabled"):
            await super()._handle_post_request(scope, request, receive, send)
            return
        with _answered(scope, streams=self._streams(_parsed(await request.body()))):
            await super()._handle_post_request(scope, request, receive, send)


class AdaptiveSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, whose sessions, and 2026-07-28 requests, choose their response mode per
    request."""

    def __init__(self, *args: Any, backend_may_log: Callable[[str, dict[str, Any]], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backend_may_log = backend_may_log

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
        chosen = may_stream(message, self._backend_may_log, modern=True)
        with _answered(scope, streams=chosen):
            if chosen:  # the SDK streams it, and ends it when the client goes away
                await super()._handle_request(scope, _replaying(received, receive), send)
                return
            # A 2026-07-28 client cancels a request by closing it; answered in-line, the SDK would not notice.
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                await super()._handle_request(scope, _replaying(received, receive), send)
                tg.cancel_scope.cancel()

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            # The SDK builds the transport itself; its class is swapped rather than its constructor copied.
            configured = transport.__dict__.pop("is_json_response_enabled", False)
            transport.__class__ = _AdaptiveTransport
            transport.is_json_response_enabled = configured
            transport.backend_may_log = self._backend_may_log  # type: ignore[attr-defined]
        return transport


def _is_modern(scope: Scope) -> bool:
    # The SDK routes by this header alone: any value that is not a handshake-era version goes to its 2026-07-28
    # path (which rejects what it does not know).
    version = next((v for k, v in scope.get("headers", ()) if k == _VERSION_HEADER), None)
    return version is not None and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS


def _accepts_streams(scope: Scope) -> bool:
    return check_accept_headers(Request(scope))[1]


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    # The body has been read already: what `receive` gives now is the client going away.
    while (await receive())["type"] != "http.disconnect":
        pass
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
