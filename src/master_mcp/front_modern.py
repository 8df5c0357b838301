"""A 2026-07-28 request answered in-line, by the master rather than the SDK's entry for that era.

The SDK's entry (`handle_modern_request`) reads the body again and parses it a second time after the front has
parsed it to choose the response mode, validates the envelope into a model, and builds the reply through two
models and `json.dumps` (with a stdio backend the master's CPU per 2026-07-28 call went 2.53 -> 2.30 ms without
it: docs/benchmarks.md, change 28). Here the parsed body is served as it is: the same checks in the same order,
each the SDK's own function (Host, Origin and Content-Type; a routing header sent twice; the envelope and header
ladder; `Mcp-Param-*` headers against the called tool's schema), the request served by the SDK's `serve_one` as
the SDK's entry serves it, and the reply's bytes written once.

Only a body that is plainly one request comes here (see `plain_request`); anything else, and anything that may
bring more than its answer back, goes the SDK's way (`front_http.AdaptiveSessionManager`).
"""

from __future__ import annotations

from typing import Any, Final

import pydantic_core
from mcp.server._streamable_http_modern import _mcp_param_rejection, _SingleExchangeDispatchContext
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import modern_error_data, serve_one
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import HEADER_MISMATCH, ErrorData, JSONRPCRequest
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

# Methods whose answer is always a stream (a listen is one), never a JSON body.
_STREAMED: Final = frozenset({"subscriptions/listen"})
_JSON_HEADERS: Final = (b"content-type", b"application/json")


def plain_request(message: Any) -> bool:
    """Whether a parsed POST body is one JSON-RPC request in its plainest form: the version, an id that is an
    integer or a string, a method, params that are an object if present. The SDK's entry answers whatever else
    (a notification, a batch, an id it must coerce or refuse) in its own way."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or type(message.get("id")) not in (int, str):
        return False
    method = message.get("method")
    params = message.get("params")
    return isinstance(method, str) and method not in _STREAMED and (params is None or isinstance(params, dict))


class InlineModern:
    """Serves the plain 2026-07-28 requests of one session manager, with its server and security settings."""

    def __init__(self, app: Server[Any], security: TransportSecuritySettings | None) -> None:
        self._app = app
        self._security = TransportSecurityMiddleware(security)

    async def serve(
        self, message: dict[str, Any], lifespan_state: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        request = Request(scope, receive)
        refused = await self._security.validate_request(request, is_post=True)
        if refused is not None:
            await refused(scope, receive, send)
            return
        request_id = message["id"]
        method: str = message["method"]
        params: dict[str, Any] | None = message.get("params")
        headers = request.headers
        verdict = _verdict(message, headers)
        if not isinstance(verdict, InboundLadderRejection):
            # The SDK's own check of `Mcp-Param-*` headers, which reads only these fields of the request.
            envelope = JSONRPCRequest.model_construct(jsonrpc="2.0", id=request_id, method=method, params=params)
            verdict = await _mcp_param_rejection(self._app, request, envelope, verdict, lifespan_state) or verdict
        if isinstance(verdict, InboundLadderRejection):
            error = ErrorData(code=verdict.code, message=verdict.message, data=verdict.data)
            await _reply(send, request_id, error=error)
            return
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        dctx = _SingleExchangeDispatchContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=headers),
            request_id=request_id,
            message_metadata=ServerMessageMetadata(request_context=request),
            progress_token=progress_token_from_params(params),
        )
        try:
            result = await serve_one(
                self._app, dctx, method, params, connection=connection, lifespan_state=lifespan_state
            )
        except Exception as exc:
            await _reply(send, request_id, error=modern_error_data(exc))
            return
        await _reply(send, request_id, result=result)


def _verdict(message: dict[str, Any], headers: Headers) -> InboundModernRoute | InboundLadderRejection:
    """The envelope and routing-header rungs, as the SDK's entry runs them."""
    pairs = headers.items()
    duplicated = find_duplicated_routing_header(pairs)
    if duplicated is not None:
        return InboundLadderRejection(code=HEADER_MISMATCH, message=f"{duplicated} header appears more than once")
    # The first value of each header, as `dict(headers)` reads them, without a look-up per name.
    return classify_inbound_request(message, headers=dict(reversed(pairs)))


async def _reply(send: Send, request_id: Any, *, result: Any = None, error: ErrorData | None = None) -> None:
    if error is None:
        status = 200
        body = pydantic_core.to_json({"jsonrpc": "2.0", "id": request_id, "result": result})
    else:
        status = ERROR_CODE_HTTP_STATUS.get(error.code, 200)
        dumped = error.model_dump(mode="json", by_alias=True, exclude_none=True)
        body = pydantic_core.to_json({"jsonrpc": "2.0", "id": request_id, "error": dumped})
    headers = [_JSON_HEADERS, (b"content-length", str(len(body)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
