"""`MasterServer`: the MCP handlers of the front, and the one path every request takes to a backend.

front request -> catalog.resolve -> auth.prepare -> pool connection -> backend -> result mapped to front names
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, get_args

import anyio
import mcp_types as types
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, RequestHandler, Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from master_mcp.auth import LOCAL_PRINCIPAL, Delegate, MultiAuthManager, Principal
from master_mcp.backends.connection import BackendConnection, BackendUnavailable
from master_mcp.backends.pool import BackendPool
from master_mcp.catalog import Catalog, Listing, Route
from master_mcp.config import MasterConfig
from master_mcp.relay import (
    Json,
    error_result,
    forward_params,
    map_prompt_result,
    map_read_result,
    map_tool_result,
)

logger = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]
VERSION: Final = "0.1.0"


def _page(items: list[Json], cursor: str | None, size: int, key: str) -> Json:
    start = 0
    if cursor is not None:
        if not cursor.isdigit() or int(cursor) > len(items):
            raise MCPError(types.INVALID_PARAMS, f"invalid cursor {cursor!r}")
        start = int(cursor)
    end = start + size
    page: Json = {key: items[start:end]}
    if end < len(items):
        page["nextCursor"] = str(end)
    return page


def _for_era(ctx: Ctx, result: Json) -> Json:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
        # A handshake-era backend's result (and any list) is complete by definition; 2026-07-28 must say so.
        result["resultType"] = "complete"
    return result


class MasterServer:
    """One MCP server in front of every backend of a `MasterConfig`."""

    def __init__(self, config: MasterConfig, auth: MultiAuthManager | None = None) -> None:
        self.config = config
        enabled = [server for server in config.servers if server.enabled]
        self.catalog = Catalog(config.master.namespacing, enabled)
        self.pool = BackendPool(config, on_listing=self._on_listing)
        self.auth = auth or MultiAuthManager()
        self.auth.configure(config)
        self._page_size = config.master.page_size
        self.lowlevel: Server[Any] = Server(
            config.master.name,
            version=VERSION,
            instructions="Tools, resources and prompts of several MCP servers; names carry the server they come from.",
            get_tool_input_schema=self.catalog.tool_input_schema,
            # Lists change whenever a backend's does, and may differ per principal: never fresh, never shared.
            cache_hints=dict.fromkeys(get_args(CacheableMethod), CacheHint(ttl_ms=0, scope="private")),
        )
        handlers: list[tuple[str, type[BaseModel], RequestHandler[Any, Any]]] = [
            ("tools/list", types.PaginatedRequestParams, self._list_tools),
            ("tools/call", types.CallToolRequestParams, self._call_tool),
            ("resources/list", types.PaginatedRequestParams, self._list_resources),
            ("resources/templates/list", types.PaginatedRequestParams, self._list_templates),
            ("resources/read", types.ReadResourceRequestParams, self._read_resource),
            ("prompts/list", types.PaginatedRequestParams, self._list_prompts),
            ("prompts/get", types.GetPromptRequestParams, self._get_prompt),
            ("completion/complete", types.CompleteRequestParams, self._complete),
            ("logging/setLevel", types.SetLevelRequestParams, self._set_level),
        ]
        for method, params_type, handler in handlers:
            self.lowlevel.add_request_handler(method, params_type, handler)

    # ---- public API ----------------------------------------------------------------------------------------------

    def attach_auth_manager(self, auth: MultiAuthManager) -> None:
        auth.configure(self.config)
        self.auth = auth

    @asynccontextmanager
    async def running(self, *, wait_ready: bool = True) -> AsyncIterator[MasterServer]:
        """Connect the backends (in parallel) for as long as the context is open."""
        async with self.pool.running(wait_ready=wait_ready):
            yield self

    def initialization_options(self) -> Any:
        return self.lowlevel.create_initialization_options(NotificationOptions())

    async def run_stdio(self) -> None:
        async with self.running(), stdio_server() as (read, write):
            await self.lowlevel.run(read, write, self.initialization_options())

    def readiness(self) -> tuple[bool, list[Json]]:
        servers = []
        for status in self.pool.status():
            problems = self.catalog.problems(status["id"])
            servers.append({**status, **self.catalog.counts(status["id"]), "problems": problems})
        ready = all(s["state"] in ("up", "disabled") for s in servers)
        return ready, servers

    # ---- the one path --------------------------------------------------------------------------------------------

    def _principal(self, ctx: Ctx) -> Principal:
        return LOCAL_PRINCIPAL

    async def _backend(self, ctx: Ctx, server_id: str) -> BackendConnection:
        decision = await self.auth.prepare(server_id, self._principal(ctx))
        if isinstance(decision, Delegate):
            raise BackendUnavailable(f"server {server_id!r} needs authorization: {decision.reason}")
        return self.pool.get(server_id)

    async def _forward(self, ctx: Ctx, route: Route, method: str, params: Json) -> Json:
        backend = await self._backend(ctx, route.server_id)
        progress = ctx.session.report_progress if progress_token_from_params(ctx.params) is not None else None
        return _for_era(ctx, await backend.request(method, params, progress=progress))

    def _to_front(self, server_id: str) -> Any:
        return lambda uri: self.catalog.uri_to_front(server_id, uri)

    # ---- handlers ------------------------------------------------------------------------------------------------

    async def _list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        return _for_era(ctx, _page(self.catalog.tools, params.cursor, self._page_size, "tools"))

    async def _list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        return _for_era(ctx, _page(self.catalog.resources, params.cursor, self._page_size, "resources"))

    async def _list_templates(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        return _for_era(ctx, _page(self.catalog.templates, params.cursor, self._page_size, "resourceTemplates"))

    async def _list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        return _for_era(ctx, _page(self.catalog.prompts, params.cursor, self._page_size, "prompts"))

    async def _call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> Json:
        route = self.catalog.resolve_tool(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name!r}")
        try:
            result = await self._forward(ctx, route, "tools/call", forward_params(ctx.params, name=route.name))
        except BackendUnavailable as exc:
            return error_result(str(exc))
        return map_tool_result(result, self._to_front(route.server_id))

    async def _read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> Json:
        route = self.catalog.resolve_resource(params.uri)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {params.uri!r}", data={"uri": params.uri})
        try:
            result = await self._forward(ctx, route, "resources/read", forward_params(ctx.params, uri=route.name))
        except BackendUnavailable as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        return map_read_result(result, self._to_front(route.server_id))

    async def _get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> Json:
        route = self.catalog.resolve_prompt(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name!r}")
        try:
            result = await self._forward(ctx, route, "prompts/get", forward_params(ctx.params, name=route.name))
        except BackendUnavailable as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        return map_prompt_result(result, self._to_front(route.server_id))

    async def _complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> Json:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            route = self.catalog.resolve_prompt(ref.name)
            backend_ref: Json = {"type": "ref/prompt", "name": route.name} if route else {}
            what = f"prompt {ref.name!r}"
        else:
            route = self.catalog.resolve_template(ref.uri) or self.catalog.resolve_resource(ref.uri)
            backend_ref = {"type": "ref/resource", "uri": route.name} if route else {}
            what = f"resource {ref.uri!r}"
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown {what}")
        try:
            return await self._forward(ctx, route, "completion/complete", forward_params(ctx.params, ref=backend_ref))
        except BackendUnavailable as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None

    async def _set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> Json:
        async def one(connection: BackendConnection) -> None:
            try:
                await connection.request("logging/setLevel", {"level": params.level})
            except (BackendUnavailable, MCPError) as exc:
                logger.warning("server %s: logging/setLevel failed: %s", connection.server_id, exc)

        async with anyio.create_task_group() as tg:
            for connection in self.pool.connections.values():
                if connection.capabilities is not None and connection.capabilities.logging is not None:
                    tg.start_soon(one, connection)
        return {}

    # ---- catalog upkeep ------------------------------------------------------------------------------------------

    def _on_listing(self, server_id: str, listing: Listing | None) -> None:
        connection = self.pool.connections.get(server_id) if hasattr(self, "pool") else None
        caps = connection.capabilities if connection is not None else None
        self.catalog.set_capability(server_id, "resources", caps is not None and caps.resources is not None)
        self.catalog.update(server_id, listing)
