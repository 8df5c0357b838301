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

from collections.abc import Mapping
from typing import Any, Final

import pydantic_core
from mcp.server._streamable_http_modern import _SingleExchangeDispatchContext
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import modern_error_data, serve_one
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundLadderRejection,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import HEADER_MISMATCH, ErrorData
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

# Methods whose answer is always a stream (a listen is one), never a JSON body.
_STREAMED: Final = frozenset({"subscriptions/listen"})
_PARAM_PREFIX: Final = MCP_PARAM_HEADER_PREFIX.lower()
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
        verdict = self._verdict(message, method, params, headers)
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

    def _verdict(
        self, message: dict[str, Any], method: str, params: dict[str, Any] | None, headers: Headers
    ) -> InboundModernRoute | InboundLadderRejection:
        pairs = headers.items()
        duplicated = find_duplicated_routing_header(pairs)
        if duplicated is not None:
            return InboundLadderRejection(code=HEADER_MISMATCH, message=f"{duplicated} header appears more than once")
        # The first value of each header, as `dict(headers)` reads them, without a look-up per name.
        first = dict(reversed(pairs))
        verdict = classify_inbound_request(message, headers=first)
        if isinstance(verdict, InboundLadderRejection):
            return verdict
        return self._param_rejection(method, params or {}, first, headers) or verdict

    def _param_rejection(
        self, method: str, params: dict[str, Any], first: dict[str, str], headers: Headers
    ) -> InboundLadderRejection | None:
        """A `tools/call`'s `Mcp-Param-*` headers against the called tool's schema, as the SDK's entry checks
        them: only when there are arguments or such headers, and never failing the call when no schema is
        known. `headers` as they came, as a header sent twice fails the check. The master's server always has the
        catalog's look-up (which cannot fail), so there is no `tools/list` to fall back on as the SDK's entry
        does for a server without one."""
        lookup = self._app.get_tool_input_schema
        name = params.get("name")
        arguments = params.get("arguments")
        if method != "tools/call" or lookup is None or not isinstance(name, str):
            return None
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, Mapping):
            return None
        if not arguments and not any(header.startswith(_PARAM_PREFIX) for header in first):
            return None
        schema = lookup(name)
        return None if schema is None else validate_mcp_param_headers(schema, arguments, headers)


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
