"""The HTTP front's sessions: each POST is answered as plain JSON when nothing but its answer can reach the client
while it is served, and as an SSE stream when something else may (progress, log lines, a backend's request to
the client). An SSE stream per request costs the front, and the client, about twice what a JSON body does.

What a request may bring back is known from the session, the request and the backend it goes to: the client
capabilities the session declared at `initialize` (sampling, elicitation, roots), whether the request carries a
progress token, and whether that backend declared it may send log lines (`logging`). Anything else (lists, ping,
initialize) only ever gets its answer. (2026-07-28 requests need none of this: the SDK answers them as JSON unless
the handler sends something before its result.)

The choice is made in the POST's own task; the SDK's message router, in another task, does not see it. Nothing may
therefore send a message related to a request answered as JSON (it would stand in for the answer): the relay asks
`FrontCall.streams` before every log line and request it passes to a caller, and progress needs a token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from master_mcp.front import STREAMS

_AS_JSON: ContextVar[bool | None] = ContextVar("master_mcp_as_json", default=None)
# Requests during which a backend may send something for the caller.
_FORWARDED: Final = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
_BACK_CHANNEL: Final = ("sampling", "elicitation", "roots")


def _progress_token(params: Any) -> bool:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and meta.get("progressToken") is not None


class _AdaptiveTransport(StreamableHTTPServerTransport):
    """The SDK's session transport, answering each POST in the mode chosen for it."""

    # What this session's client declared; a class default, as instances are made by the SDK's own constructor.
    _back_channel = False
    # Whether the backend that serves a request (method, params) may send log lines while it does.
    backend_may_log: Callable[[str, dict[str, Any]], bool] = staticmethod(lambda method, params: True)

    @property
    def is_json_response_enabled(self) -> bool:
        chosen = _AS_JSON.get()
        configured = bool(self.__dict__.get("_json_configured", False))
        return configured if chosen is None else chosen

    @is_json_response_enabled.setter
    def is_json_response_enabled(self, value: bool) -> None:
        self.__dict__["_json_configured"] = value

    def _streams(self, message: Any) -> bool:
        if not isinstance(message, dict) or not isinstance(method := message.get("method"), str):
            return True  # not a request: the SDK answers whatever this is in its usual way
        params = message.get("params")
        if method == "initialize" and isinstance(params, dict):
            capabilities = params.get("capabilities")
            if isinstance(capabilities, dict):
                self._back_channel = any(capabilities.get(name) is not None for name in _BACK_CHANNEL)
        if self._back_channel:
            return True  # a client that can be asked things gets the stream it may be asked on, always
        if method not in _FORWARDED or not isinstance(params, dict):
            return False
        return _progress_token(params) or self.backend_may_log(method, params)

    async def _handle_post_request(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        if self.__dict__.get("_json_configured"):
            await super()._handle_post_request(scope, request, receive, send)
            return
        try:
            message = json.loads(await request.body())
        except (ValueError, RecursionError):
            message = None  # the SDK answers it with its own parse error
        streams = self._streams(message)
        scope[STREAMS] = streams
        token = _AS_JSON.set(not streams)
        try:
            await super()._handle_post_request(scope, request, receive, send)
        finally:
            _AS_JSON.reset(token)


class AdaptiveSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, whose sessions choose their response mode per request."""

    def __init__(self, *args: Any, backend_may_log: Callable[[str, dict[str, Any]], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backend_may_log = backend_may_log

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            # The SDK builds the transport itself; its class is swapped rather than its constructor copied.
            configured = transport.__dict__.pop("is_json_response_enabled", False)
            transport.__class__ = _AdaptiveTransport
            transport.is_json_response_enabled = configured
            transport.backend_may_log = self._backend_may_log  # type: ignore[attr-defined]
        return transport
