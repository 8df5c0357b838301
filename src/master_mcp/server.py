"""`MasterServer`: the MCP handlers of the front, and the one path every request takes to a backend.

front request -> catalog.resolve -> auth.prepare -> pool connection -> backend -> result mapped to front names
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, get_args

import anyio
import anyio.abc
import mcp_types as types
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, RequestHandler, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from master_mcp.auth import AuthRefused, Delegate, MultiAuthManager, Principal
from master_mcp.auth.inbound import current_principal
from master_mcp.backends.connection import (
    NO_PROFILE,
    BackendConnection,
    BackendState,
    BackendUnavailable,
    Profile,
    Unsolicited,
)
from master_mcp.backends.lane import LANE_METHODS
from master_mcp.backends.listing import Listing
from master_mcp.backends.pool import BackendPool
from master_mcp.catalog import Catalog, Route
from master_mcp.config import MasterConfig
from master_mcp.config.diff import ConfigDiff, diff_configs
from master_mcp.delegation import (
    AUTHORIZE_TOOL,
    authorize_tool,
    delegation_result,
    url_elicitation,
    wants_url_elicitation,
)
from master_mcp.front import LOG_LEVELS, FrontCall, FrontSession, FrontSessions
from master_mcp.front_stdio import stdio_front
from master_mcp.logs import REDACTOR, REQUEST_ID, new_request_id
from master_mcp.metrics import Metrics
from master_mcp.pages import ListPages, PageKey, page_key
from master_mcp.redis_link import StoreUnavailable
from master_mcp.relay import (
    Json,
    error_result,
    forward_params,
    map_prompt_result,
    map_read_result,
    map_tool_result,
)
from master_mcp.rounds import PendingCall, RoundTrips
from master_mcp.stores import Stores
from master_mcp.tracing import spans_when_collected
from master_mcp.version import VERSION

logger = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]
_R = TypeVar("_R", bound=BaseModel)


def _page(items: list[Json], cursor: str | None, size: int, key: str) -> Json:
    start = 0
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 12) or int(cursor) > len(items):
            raise MCPError(types.INVALID_PARAMS, f"invalid cursor {cursor!r}")
        start = int(cursor)
    end = start + size
    page: Json = {key: items[start:end]}
    if end < len(items):
        page["nextCursor"] = str(end)
    return page


_LIST_CHANGED: Final = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)
_CHANGES: Final = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


class _FrontServer(Server[Any]):
    """The front's low-level server. It relays list changes, and says so on every transport: the streamable-HTTP
    session manager builds its initialization options from these defaults, not from an argument."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or _CHANGES, experimental_capabilities, extensions
        )


def _for_era(ctx: Ctx, result: Json) -> Json:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
        # A handshake-era backend's result (and any list) is complete by definition; 2026-07-28 must say so.
        result["resultType"] = "complete"
    return result


_ROUND_TRIP_METHODS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})


def _lane_meta(ctx: Ctx, method: str, profile: Profile) -> Json | None:
    """For a request the 2026-07-28 lane may carry (see `backends/lane.py`): what of the client's own `_meta` goes
    with it (its log level; the rest of the envelope is the lane's). None for any other request."""
    if profile or method not in LANE_METHODS or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return None
    meta = (ctx.params or {}).get("_meta")
    level = meta.get(types.LOG_LEVEL_META_KEY) if isinstance(meta, dict) else None
    return {types.LOG_LEVEL_META_KEY: level} if isinstance(level, str) else {}


def profile_of(ctx: Ctx) -> Profile:
    """What this front client can answer when a backend asks during its call (a 2026-07-28 client answers through
    input-required rounds)."""
    caps = ctx.session.client_capabilities
    if caps is None or (caps.sampling is None and caps.elicitation is None and caps.roots is None):
        return NO_PROFILE  # most clients, on every call: no set built
    present = {"sampling": caps.sampling, "elicitation": caps.elicitation, "roots": caps.roots}
    return frozenset(name for name, capability in present.items() if capability is not None)


def _quiet(progress: Any) -> Any:
    """Progress of a call that outlives its first front request (input-required rounds): best effort only."""
    if progress is None:
        return None

    async def report(value: float, total: float | None, message: str | None) -> None:
        try:
            await progress(value, total, message)
        except Exception as exc:
            logger.debug("progress not delivered: %s", type(exc).__name__)

    return report


class NeedsAuthorization(Exception):
    def __init__(self, delegate: Delegate) -> None:
        # The link stands for the principal it was issued to: it goes to that caller only, never into a log line.
        super().__init__(f"server {delegate.server_id!r} needs authorization")
        self.delegate = delegate


class MasterServer:
    """One MCP server in front of every backend of a `MasterConfig`."""

    def __init__(self, config: MasterConfig, auth: MultiAuthManager | None = None) -> None:
        self.config = config
        enabled = [server for server in config.servers if server.enabled]
        self.catalog = Catalog(config.master.namespacing, enabled)
        self._page_size = config.master.page_size
        # Sessions waiting to hear that an authorization they were sent to has completed, by flow id.
        self._waiting: dict[str, tuple[Any, bool]] = {}
        # Backend tool names of per-user backends, to tell their own `authorize` tool from the master's.
        self._listings: dict[str, set[Any]] = {}
        self._delegated: set[str] = set()
        self._per_principal: set[str] = set()
        self._listed: set[str] = set()  # servers whose real catalog has been seen at least once
        self.fronts = FrontSessions()
        self.bus = InMemorySubscriptionBus()  # 2026-07-28 clients hear of changes through subscriptions/listen
        self._tg: anyio.abc.TaskGroup | None = None
        self._backend_subscriptions: dict[str, int] = {}  # front URI -> how many front sessions subscribed
        self._retired: list[MultiAuthManager] = []
        self.metrics = Metrics(self._metric_state)
        self.in_flight = 0  # front requests being served (the middleware counts them)
        self.draining = False
        self._warmed: set[Profile] = set()
        self.rounds = RoundTrips()
        # Tasks that live as long as the master runs (the config watcher, for one).
        self.companions: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.stores = Stores(config.master.store, config.base_dir)
        self._pages = ListPages()
        self.attach_auth_manager(auth or MultiAuthManager())
        self.lowlevel: Server[Any] = _FrontServer(
            config.master.name,
            version=VERSION,
            instructions="Tools, resources and prompts of several MCP servers; names carry the server they come from.",
            get_tool_input_schema=self.catalog.tool_header_schema,
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
            ("resources/subscribe", types.SubscribeRequestParams, self._subscribe),
            ("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe),
            ("subscriptions/listen", types.SubscriptionsListenRequestParams, ListenHandler(self.bus)),
        ]
        for method, params_type, handler in handlers:
            self.lowlevel.add_request_handler(method, params_type, handler)
        spans_when_collected(self.lowlevel)
        self.lowlevel.middleware.append(self._per_request)

    async def _per_request(self, ctx: Ctx, call_next: Any) -> Any:
        """Every front request gets an id for its log lines; every session that has said anything can be told
        about changes, not only those that called a tool."""
        if ctx.request_id is None:
            return await call_next(ctx)
        token = REQUEST_ID.set(new_request_id())
        self.in_flight += 1
        try:
            if ctx.method != "initialize":
                self.fronts.of(ctx, current_principal().key)
            if (key := page_key(ctx.method, ctx.params, ctx.protocol_version)) is not None:
                return await self._list_page(ctx, key, call_next)
            return await call_next(ctx)
        finally:
            self.in_flight -= 1
            REQUEST_ID.reset(token)

    async def _list_page(self, ctx: Ctx, key: PageKey, call_next: Any) -> Any:
        """A list page as the SDK serialized it last time, while the catalog has not changed (see `pages`)."""
        principal = current_principal()
        await self._discover_for(principal)
        if ctx.method == "tools/list":
            await self._warm_profile(principal, profile_of(ctx))
        catalog, version = self.catalog, self.catalog.version
        page = self._pages.get(key, catalog)
        if page is None:
            page = await call_next(ctx)
            self._pages.put(key, catalog, version, page)
        return page

    async def drain(self, grace_s: float) -> None:
        """Before shutting down: refuse new requests, and give those in flight up to `grace_s` to finish."""
        self.draining = True
        with anyio.move_on_after(grace_s):
            while self.in_flight:  # noqa: ASYNC110 - a count kept by the request middleware
                await anyio.sleep(0.05)

    # ---- public API ----------------------------------------------------------------------------------------------

    def attach_auth_manager(self, auth: MultiAuthManager) -> None:
        """Use `auth` (with its registered strategies) for every backend; call before the master runs."""
        previous: MultiAuthManager | None = getattr(self, "auth", None)
        if previous is not None and previous is not auth:
            self._retired.append(previous)  # its HTTP client and store are closed when the master starts
        auth.configure(
            self.config, token_blobs=self.stores.token_blobs, flows=self.stores.flows, consents=self.stores.consents
        )
        auth.on_authorized(self._authorized)
        self.auth = auth
        self.pool = BackendPool(
            self.config,
            on_listing=self._on_listing,
            on_notification=self._on_backend_notification,
            relay=self,
            per_principal=lambda sid: auth.strategy(sid).per_principal,
            on_session=self._send_log_level,
            on_shared_up=self._restore,
            shared_auth=lambda sid: auth.strategy(sid).shared_auth(),
            watched=self._watched,
        )
        enabled = [s.id for s in self.config.servers if s.enabled]
        self._delegated = {sid for sid in enabled if auth.delegating(sid) is not None}
        self._per_principal = {sid for sid in enabled if auth.strategy(sid).per_principal}
        for server_id in self._delegated:
            self._on_listing(server_id, None)

    async def reload(self, config: MasterConfig) -> ConfigDiff:
        """Take over a reloaded `servers.yaml`: new servers connect, removed ones close, changed ones reconnect,
        the others keep their sessions; front sessions hear of any list that changed. A config the auth layer
        refuses raises `ConfigError` and changes nothing. Settings of `master` and `routing` need a restart."""
        diff = diff_configs(self.config, config)
        if diff.needs_restart:
            logger.warning("config: %s changed; that takes effect at the next restart", ", ".join(diff.needs_restart))
        config = config.model_copy(update={"master": self.config.master, "routing": self.config.routing})
        REDACTOR.add(config.secrets)
        rebuild = set(diff.added) | set(diff.changed)
        self.auth.reconfigure(config, rebuild)
        stale = rebuild | set(diff.removed)
        before = self._lists()
        self.config = config
        enabled = [s.id for s in config.servers if s.enabled]
        self._delegated = {sid for sid in enabled if self.auth.delegating(sid) is not None}
        self._per_principal = {sid for sid in enabled if self.auth.strategy(sid).per_principal}
        self._listed -= stale
        for server_id in stale:
            self._listings.pop(server_id, None)
        self.catalog.set_servers([s for s in config.servers if s.enabled])
        for server_id in self._delegated & rebuild:
            self._on_listing(server_id, None)
        self._announce(before)
        await self.pool.apply(config, rebuild)
        logger.info("config reloaded: %s", diff.describe())
        return diff

    @asynccontextmanager
    async def running(self, *, wait_ready: bool = True) -> AsyncIterator[MasterServer]:
        """Connect the backends (in parallel) for as long as the context is open."""
        while self._retired:
            await self._retired.pop().aclose()
        try:
            await self.stores.open()  # an unreachable shared store stops the start, with its host:port
            async with anyio.create_task_group() as tg, self.pool.running(wait_ready=wait_ready):
                self._tg = tg
                tg.start_soon(self.stores.invalidation.listen, self._on_invalidated, name="catalog-invalidation")
                for companion in self.companions:
                    tg.start_soon(companion)
                try:
                    yield self
                finally:
                    self._tg = None
                    tg.cancel_scope.cancel()
        finally:
            await self.auth.aclose()
            await self.stores.aclose()

    def initialization_options(self) -> Any:
        return self.lowlevel.create_initialization_options()

    async def run_stdio(self) -> None:
        async with self.running(), stdio_front() as (read, write):
            await self.lowlevel.run(read, write, self.initialization_options())

    def _metric_state(self) -> dict[str, Any]:
        servers = []
        for status in self.pool.status():
            sessions = self.pool.sessions_of(status["id"]) + (1 if status["state"] == "up" else 0)
            servers.append({**status, "sessions": sessions})
        return {"servers": servers, "front_sessions": len(self.fronts)}

    def readiness(self) -> tuple[bool, list[Json]]:
        servers = []
        for status in self.pool.status():
            problems = self.catalog.problems(status["id"])
            servers.append({**status, **self.catalog.counts(status["id"]), "problems": problems})
        ready = all(s["state"] in ("up", "disabled", "per-principal") for s in servers)
        return ready, servers

    def backend_may_log(self, method: str, params: dict[str, Any]) -> bool:
        """Whether the backend a request goes to may send log lines while serving it (it declared `logging`);
        when unsure (a per-user backend, a name not routed), yes."""
        route: Route | None = None
        if method in ("tools/call", "prompts/get") and isinstance(name := params.get("name"), str):
            route = (self.catalog.resolve_tool if method == "tools/call" else self.catalog.resolve_prompt)(name)
        elif method == "resources/read" and isinstance(uri := params.get("uri"), str):
            route = self.catalog.resolve_resource(uri)
        connection = self.pool.connections.get(route.server_id) if route is not None else None
        if connection is None or connection.capabilities is None:
            return True
        return connection.capabilities.logging is not None

    # ---- the one path --------------------------------------------------------------------------------------------

    async def _backend(self, server_id: str, principal: Principal, profile: Profile = NO_PROFILE) -> BackendConnection:
        """auth.prepare, then the pool: the connection (shared, or the principal's own) this call goes out on."""
        if not self.pool.configured(server_id):
            raise BackendUnavailable(f"server {server_id!r} is no longer configured (the config was reloaded)")
        try:
            decision = await self.auth.prepare(server_id, principal)
        except AuthRefused as exc:
            raise BackendUnavailable(str(exc)) from None
        except StoreUnavailable as exc:
            raise BackendUnavailable(f"server {server_id!r}: {exc}") from None
        if isinstance(decision, Delegate):
            raise NeedsAuthorization(decision)
        return await self.pool.session(server_id, principal.key, decision.auth, profile)

    async def _forward(
        self, ctx: Ctx, route: Route, method: str, params: Json, *, idempotent: bool | None = None
    ) -> Json:
        principal = current_principal()
        profile = profile_of(ctx)
        raw = ctx.params or {}
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        token = raw.get("requestState") if modern else None
        if isinstance(token, str) and self.rounds.holds(token):
            return _for_era(ctx, await self.rounds.resume(token, principal.key, raw.get("inputResponses")))
        backend = await self._backend(route.server_id, principal, profile)
        lane = _lane_meta(ctx, method, profile)
        if isinstance(token, str):
            state = self.rounds.unwrap(token, principal.key, route.server_id) if lane is not None else None
            if state is None:
                return _for_era(ctx, await self.rounds.resume(token, principal.key, raw.get("inputResponses")))
            # The backend's own state, from an input-required result of a lane call: it goes back as it came.
            params = {**params, "requestState": state}
            if "inputResponses" in raw:
                params["inputResponses"] = raw["inputResponses"]
        progress = ctx.session.report_progress if progress_token_from_params(ctx.params) is not None else None
        if modern and profile and method in _ROUND_TRIP_METHODS and self._tg is not None:
            timeout = backend.server.timeout_s

            async def call(pending: PendingCall) -> Json:
                return await backend.request(
                    method, params, progress=_quiet(progress), owner=pending, idempotent=idempotent
                )

            return _for_era(ctx, await self.rounds.start(self._tg, principal.key, timeout, call))
        owner = FrontCall(ctx, self.fronts.of(ctx, principal.key))
        if not owner.streams:  # a request that can carry nothing but its answer gets no progress either
            progress = None
        started = time.perf_counter()
        logger.debug("%s -> server %s", method, route.server_id)
        try:
            result = await backend.request(
                method, params, progress=progress, owner=owner, idempotent=idempotent, lane=lane
            )
        except BackendUnavailable:
            self.metrics.observe(method, route.server_id, "unavailable")
            raise
        except MCPError:
            self.metrics.observe(method, route.server_id, "error", time.perf_counter() - started)
            raise
        if lane is not None and isinstance(state := result.get("requestState"), str):
            result = {**result, "requestState": self.rounds.wrap(state, principal.key, route.server_id)}
        outcome = "tool_error" if result.get("isError") is True else "ok"
        elapsed = time.perf_counter() - started
        self.metrics.observe(method, route.server_id, outcome, elapsed)
        logger.debug("%s <- server %s: %s in %.1f ms", method, route.server_id, outcome, elapsed * 1000)
        return _for_era(ctx, result)

    async def _forward_or_raise(self, ctx: Ctx, route: Route, method: str, params: Json) -> Json:
        """For requests with no error-result form: a backend that cannot answer is a JSON-RPC error naming it."""
        try:
            return await self._forward(ctx, route, method, params)
        except BackendUnavailable as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        except NeedsAuthorization as needed:
            delegate = needed.delegate
            data = delegation_result(delegate)["structuredContent"]
            raise MCPError(types.INVALID_REQUEST, str(needed), data=data) from None

    def _watched(self, server_id: str, principal: tuple[str, str] | None) -> list[str]:
        """The backend URIs of `server_id` that front sessions subscribed to (only `principal`'s, for a per-user
        session: one user's interests are not told to a backend under another's credential)."""
        uris: set[str] = set()
        for front in self.fronts:
            if principal is None or front.principal == principal:
                for uri in front.subscriptions:
                    route = self.catalog.resolve_resource(uri)
                    if route is not None and route.server_id == server_id:
                        uris.add(route.name)
        return sorted(uris)

    def _to_front(self, server_id: str) -> Any:
        return lambda uri: self.catalog.uri_to_front(server_id, uri)

    # ---- handlers ------------------------------------------------------------------------------------------------

    async def _list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        await self._discover_for(current_principal())
        await self._warm_profile(current_principal(), profile_of(ctx))
        return _for_era(ctx, _page(self.catalog.tools, params.cursor, self._page_size, "tools"))

    async def _list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        await self._discover_for(current_principal())
        return _for_era(ctx, _page(self.catalog.resources, params.cursor, self._page_size, "resources"))

    async def _list_templates(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        await self._discover_for(current_principal())
        return _for_era(ctx, _page(self.catalog.templates, params.cursor, self._page_size, "resourceTemplates"))

    async def _list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams) -> Json:
        await self._discover_for(current_principal())
        return _for_era(ctx, _page(self.catalog.prompts, params.cursor, self._page_size, "prompts"))

    async def _discover_for(self, principal: Principal) -> None:
        """Per-user backends list their catalog through a user's session: open this principal's, where no
        catalog is known yet (once one is, every principal sees it; see README, "Per-user backends")."""
        # Delegated backends are left out: for a principal without a token, asking would start a new flow each
        # time. Their catalog arrives with the first authorized session (a call, or the callback).
        unlisted = [sid for sid in self._per_principal - self._delegated if sid not in self._listed]
        await self._open_sessions(unlisted, principal, NO_PROFILE)

    async def _warm_profile(self, principal: Principal, profile: Profile) -> None:
        """A client that can answer sampling, elicitation or roots may be offered more tools by a backend: open
        that capability profile's session on each shared backend once, so its catalog includes them."""
        if not profile or profile in self._warmed:
            return
        self._warmed.add(profile)
        up = [sid for sid, connection in self.pool.connections.items() if connection.state is BackendState.UP]
        await self._open_sessions(up, principal, profile)

    async def _open_sessions(self, server_ids: list[str], principal: Principal, profile: Profile) -> None:
        """Open (in parallel, each bounded by the connect timeout) the sessions whose listings the catalog needs."""

        async def attempt(server_id: str) -> None:
            with anyio.move_on_after(self.config.master.connect_timeout_s):
                try:
                    await self._backend(server_id, principal, profile)
                except (BackendUnavailable, NeedsAuthorization) as exc:
                    logger.debug("server %s: no session for its catalog: %s", server_id, exc)

        async with anyio.create_task_group() as tg:
            for server_id in server_ids:
                tg.start_soon(attempt, server_id)

    # ---- RequestRelay: a backend asks its client something during a call ----------------------------------------

    async def _ask_front(self, owner: object | None, request: Any, result_type: type[_R]) -> _R | types.ErrorData:
        if isinstance(owner, PendingCall):
            answer: _R | types.ErrorData = await owner.ask(request)
            return answer
        if not isinstance(owner, FrontCall) or not owner.streams:
            return types.ErrorData(code=types.INVALID_REQUEST, message="no single client call to relay this request to")
        ctx = owner.ctx
        try:
            return await ctx.session.send_request(
                request,
                result_type,
                request_read_timeout_seconds=self.config.master.connect_timeout_s * 4,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        except MCPError as exc:
            return exc.error
        except TimeoutError:
            return types.ErrorData(code=types.REQUEST_TIMEOUT, message="the client did not answer in time")

    async def sampling(
        self, owner: object | None, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        request = types.CreateMessageRequest(params=params)
        if params.tools:
            return await self._ask_front(owner, request, types.CreateMessageResultWithTools)
        return await self._ask_front(owner, request, types.CreateMessageResult)

    async def elicitation(
        self, owner: object | None, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        return await self._ask_front(owner, types.ElicitRequest(params=params), types.ElicitResult)

    async def roots(self, owner: object | None) -> types.ListRootsResult | types.ErrorData:
        return await self._ask_front(owner, types.ListRootsRequest(), types.ListRootsResult)

    async def _call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> Json:
        route = self.catalog.resolve_tool(params.name)
        if route is None and not self._per_principal <= self._listed:
            await self._discover_for(current_principal())
            route = self.catalog.resolve_tool(params.name)
        # A backend whose catalog nobody could list yet, or that is down now: say why, instead of "unknown".
        route = route or self._unlisted_route(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name!r}")
        try:
            if route.server_id in self._delegated and route.name == AUTHORIZE_TOOL and self._synthetic(route):
                return _for_era(ctx, await self._authorize(ctx, route.server_id, params.arguments or {}))
            forwarded = forward_params(ctx.params, name=route.name)
            idempotent = self.catalog.idempotent(params.name)
            result = await self._forward(ctx, route, "tools/call", forwarded, idempotent=idempotent)
        except (BackendUnavailable, AuthRefused, StoreUnavailable) as exc:
            return _for_era(ctx, error_result(str(exc)))
        except NeedsAuthorization as needed:
            return _for_era(ctx, self._delegation(ctx, needed.delegate))
        return map_tool_result(result, self._to_front(route.server_id))

    async def _authorize(self, ctx: Ctx, server_id: str, arguments: dict[str, Any]) -> Json:
        """The master's own `<prefix>__authorize` tool of a per-user backend."""
        principal = current_principal()
        strategy = self.auth.delegating(server_id)
        if arguments.get("force") is True and strategy is not None:
            raise NeedsAuthorization(await strategy.delegation(principal))
        await self._backend(server_id, principal)
        return {"content": [{"type": "text", "text": f"{server_id} is authorized."}]}

    def _unlisted_route(self, front_name: str) -> Route | None:
        separator = self.config.master.namespacing.separator
        down = {sid for sid, connection in self.pool.connections.items() if connection.state is not BackendState.UP}
        for server_id in (self._per_principal - self._listed) | down:
            prefix = f"{self.config.server(server_id).name_prefix}{separator}"
            if len(prefix) > len(separator) and front_name.startswith(prefix):
                return Route(server_id, front_name.removeprefix(prefix))
        return None

    def _synthetic(self, route: Route) -> bool:
        tools = self._listings.get(route.server_id)
        return tools is None or AUTHORIZE_TOOL not in tools

    def _delegation(self, ctx: Ctx, delegate: Delegate) -> Json:
        url_mode = ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS and wants_url_elicitation(
            ctx.session.client_capabilities
        )
        self._waiting[delegate.flow_id] = (ctx.session, url_mode)
        while len(self._waiting) > 1024:
            self._waiting.pop(next(iter(self._waiting)))
        if url_mode:
            raise url_elicitation(delegate)
        return delegation_result(delegate)

    async def _authorized(self, principal: Principal, server_id: str, flow_id: str) -> None:
        """After a callback stored a token: fresh session for that principal, then tell the waiting client."""
        self.pool.close_principal(server_id, principal.key)
        before = self.catalog.version
        try:
            await self._backend(server_id, principal)
        except (BackendUnavailable, NeedsAuthorization) as exc:
            logger.warning("server %s: first session after authorization failed: %s", server_id, exc)
        session, url_mode = self._waiting.pop(flow_id, (None, False))
        if session is None:
            return
        try:
            if url_mode:
                await session.send_elicit_complete(flow_id)
            if self.catalog.version != before:
                await session.send_tool_list_changed()
        except Exception as exc:  # the client may be gone; that costs it the notice, nothing else
            logger.info("could not notify the client that started flow for %s: %s", server_id, type(exc).__name__)

    async def _read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> Json:
        route = self.catalog.resolve_resource(params.uri)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {params.uri!r}", data={"uri": params.uri})
        result = await self._forward_or_raise(ctx, route, "resources/read", forward_params(ctx.params, uri=route.name))
        return map_read_result(result, self._to_front(route.server_id))

    async def _get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> Json:
        route = self.catalog.resolve_prompt(params.name) or self._unlisted_route(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name!r}")
        result = await self._forward_or_raise(ctx, route, "prompts/get", forward_params(ctx.params, name=route.name))
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
        return await self._forward_or_raise(
            ctx, route, "completion/complete", forward_params(ctx.params, ref=backend_ref)
        )

    async def _set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> Json:
        front = self.fronts.of(ctx, current_principal().key)
        if front is not None:
            front.log_level = params.level
        # Backends are shared: they log at the most verbose level any session asked for; each session then
        # receives only what its own level lets through.
        level = self._wanted_log_level() or params.level

        async def one(connection: BackendConnection) -> None:
            try:
                await connection.request("logging/setLevel", {"level": level})
            except (BackendUnavailable, MCPError) as exc:
                logger.warning("server %s: logging/setLevel failed: %s", connection.server_id, exc)

        async with anyio.create_task_group() as tg:
            for connection in self.pool.live():
                if connection.capabilities is not None and connection.capabilities.logging is not None:
                    tg.start_soon(one, connection)
        return {}

    def _wanted_log_level(self) -> str | None:
        """The most verbose level any front session asked for (None: nobody asked)."""
        levels = [f.log_level for f in self.fronts if f.log_level in LOG_LEVELS]
        return min(levels, key=LOG_LEVELS.index) if levels else None

    async def _subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> Json:
        route = self.catalog.resolve_resource(params.uri)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {params.uri!r}", data={"uri": params.uri})
        front = self.fronts.of(ctx, current_principal().key)
        if front is None:
            raise MCPError(types.INVALID_REQUEST, "resources/subscribe needs a session that can receive notifications")
        if params.uri in front.subscriptions:
            return _for_era(ctx, {})
        # Counted before the await, so a concurrent unsubscribe sees this subscriber.
        count = self._backend_subscriptions[params.uri] = self._backend_subscriptions.get(params.uri, 0) + 1
        front.subscriptions.add(params.uri)
        if count == 1:
            try:
                forwarded = forward_params(ctx.params, uri=route.name)
                await self._forward_or_raise(ctx, route, "resources/subscribe", forwarded)
            except BaseException:
                front.subscriptions.discard(params.uri)
                self._backend_subscriptions[params.uri] -= 1
                raise
        if not front.subscriptions - {params.uri}:
            front.connection.exit_stack.push_async_callback(self._drop_subscriptions, front)
        await self._watching(route.server_id)
        return _for_era(ctx, {})

    async def _watching(self, server_id: str) -> None:
        """Return once each 2026-07-28 lane of `server_id` listens for the resources front sessions subscribed to
        now (a subscription through the master holds from its answer on, as the backend's own does)."""
        waiting = self.pool.rewatch(server_id)
        with anyio.move_on_after(self.config.master.connect_timeout_s):
            for event in waiting:
                await event.wait()

    async def _drop_subscriptions(self, front: FrontSession) -> None:
        for uri in list(front.subscriptions):
            await self._drop_subscription(front, uri)

    async def _unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> Json:
        front = self.fronts.of(ctx, current_principal().key)
        if front is not None and params.uri in front.subscriptions:
            await self._drop_subscription(front, params.uri)
        return _for_era(ctx, {})

    async def _drop_subscription(self, front: FrontSession, uri: str) -> None:
        if uri not in front.subscriptions:
            return
        front.subscriptions.discard(uri)
        if (watched := self.catalog.resolve_resource(uri)) is not None:
            self.pool.rewatch(watched.server_id)  # no need to wait: the master relays only what is subscribed to
        remaining = self._backend_subscriptions.get(uri, 1) - 1
        if remaining > 0:
            self._backend_subscriptions[uri] = remaining
            return
        self._backend_subscriptions.pop(uri, None)
        route = self.catalog.resolve_resource(uri)
        if route is None:
            return
        with anyio.move_on_after(5):
            try:
                backend = await self._backend(route.server_id, Principal(*front.principal))
                await backend.request("resources/unsubscribe", {"uri": route.name})
            except (BackendUnavailable, NeedsAuthorization, MCPError) as exc:
                logger.debug("server %s: unsubscribe failed: %s", route.server_id, exc)

    # ---- what backends send on their own -------------------------------------------------------------------------

    async def _on_backend_notification(self, server_id: str, note: types.ServerNotification, owner: object) -> None:
        if isinstance(note, types.ResourceUpdatedNotification):
            uri = self.catalog.uri_to_front(server_id, str(note.params.uri))
            subscribers = self.fronts.subscribers(uri)
            if server_id in self._per_principal:
                # A per-user session's news is that user's: to their sessions only, never onto the shared bus.
                whose = owner.principal if isinstance(owner, Unsolicited) else None
                if isinstance(owner, FrontCall) and owner.front is not None:
                    whose = owner.front.principal
                subscribers = [front for front in subscribers if whose is not None and front.principal == whose]
            else:
                await self.bus.publish(ResourceUpdated(uri))
            for front in subscribers:
                await front.notify("notifications/resources/updated", {"uri": uri})
        elif isinstance(note, types.LoggingMessageNotification):
            await self._relay_log(server_id, note, owner)
        elif isinstance(note, _LIST_CHANGED) and self._tg is not None:
            # This replica re-lists by itself; the others may not have heard (the backend told this session only).
            self._tg.start_soon(self._share_change, server_id)

    async def _share_change(self, server_id: str) -> None:
        try:
            await self.stores.invalidation.publish(server_id)
        except StoreUnavailable as exc:
            logger.warning("server %s: list change not shared with the other replicas: %s", server_id, exc)

    def _on_invalidated(self, server_id: str | None) -> None:
        """Another replica saw `server_id`'s lists change (None: news may have been missed): re-list it here."""
        logger.debug("re-listing %s: news from another replica", f"server {server_id}" if server_id else "every server")
        self.pool.refresh(server_id)

    async def _relay_log(self, server_id: str, note: types.LoggingMessageNotification, owner: object) -> None:
        """A backend's log line goes to the session whose call it was made during, and to no one else."""
        if isinstance(owner, Unsolicited):
            # The backend's own lines (no call in flight): to the sessions that asked for logs with
            # logging/setLevel, and for a per-user session only to that user's.
            line = note.params.model_dump(by_alias=True, exclude_none=True, mode="json")
            for front in self.fronts:
                opted_in = front.log_level is not None and owner.principal in (None, front.principal)
                if opted_in and front.wants_log(note.params.level):
                    await front.notify("notifications/message", line)
            return
        if not isinstance(owner, FrontCall):
            logger.debug("server %s: a log line that belongs to no single call was not relayed", server_id)
            return
        if not owner.streams or not owner.wants_log(note.params.level):
            return
        params = note.params.model_copy(update={"logger": note.params.logger or server_id})
        try:
            await owner.ctx.session.send_notification(
                types.LoggingMessageNotification(params=params), related_request_id=owner.ctx.request_id
            )
        except Exception as exc:  # the caller may be gone; it loses only this line
            logger.debug("server %s: log line not delivered: %s", server_id, type(exc).__name__)

    def _announce(self, before: tuple[Any, ...]) -> None:
        """Tell every front session which of its lists changed (handshake era) and publish it (2026-07-28)."""
        after = self._lists()
        events: list[Any] = []
        if after[0] != before[0]:
            events.append(("notifications/tools/list_changed", ToolsListChanged()))
        if after[1] != before[1]:
            events.append(("notifications/resources/list_changed", ResourcesListChanged()))
        if after[2] != before[2]:
            events.append(("notifications/prompts/list_changed", PromptsListChanged()))
        if not events or self._tg is None:
            return

        async def deliver() -> None:
            for method, event in events:
                await self.fronts.broadcast(method)
                await self.bus.publish(event)

        self._tg.start_soon(deliver)

    async def _restore(self, connection: BackendConnection) -> None:
        """A shared backend session is up (at start, after a reconnect, or in place of one a reload replaced): it
        knows nothing of what the front sessions asked of the one before. Subscribe again, and set the log level."""
        for uri, count in list(self._backend_subscriptions.items()):
            route = self.catalog.resolve_resource(uri)
            if count > 0 and route is not None and route.server_id == connection.server_id:
                try:
                    await connection.request("resources/subscribe", {"uri": route.name})
                except (BackendUnavailable, MCPError) as exc:
                    logger.info("server %s: re-subscribing after a reconnect failed: %s", connection.server_id, exc)
        await self._send_log_level(connection)

    async def _send_log_level(self, connection: BackendConnection) -> None:
        """A session that is new to the backend logs at the level the front sessions asked for."""
        level = self._wanted_log_level()
        if level and connection.capabilities is not None and connection.capabilities.logging is not None:
            try:
                await connection.request("logging/setLevel", {"level": level})
            except (BackendUnavailable, MCPError) as exc:
                logger.info("server %s: sending the log level failed: %s", connection.server_id, exc)

    def _lists(self) -> tuple[Any, ...]:
        return (self.catalog.tools, (self.catalog.resources, self.catalog.templates), self.catalog.prompts)

    # ---- catalog upkeep ------------------------------------------------------------------------------------------

    def _on_listing(self, server_id: str, listing: Listing | None) -> None:
        connection = self.pool.connections.get(server_id)
        if connection is not None:
            caps = connection.capabilities
            self.catalog.set_capability(server_id, "resources", caps is not None and caps.resources is not None)
        if listing is not None:
            self._listed.add(server_id)
        if server_id in self._delegated:
            listing = listing or Listing()
            names = {tool.get("name") for tool in listing.tools}
            self._listings[server_id] = names
            if AUTHORIZE_TOOL not in names:
                listing = Listing(
                    [*listing.tools, authorize_tool(server_id)], listing.resources, listing.templates, listing.prompts
                )
        before = self._lists()
        self.catalog.update(server_id, listing)
        self._announce(before)
