"""`MultiAuthManager`: one strategy per backend (`servers[].auth_strategy`), the token store and the OAuth flows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx2
from mcp.server.auth.provider import TokenVerifier
from pydantic import ValidationError
from starlette.requests import Request

from master_mcp.auth.consent import ConsentStore
from master_mcp.auth.crypto import MasterKeyError, Sealer, key_from_environment
from master_mcp.auth.flow import OAuthFlowController
from master_mcp.auth.flow_state import FlowStore
from master_mcp.auth.inbound import StaticTokenVerifier, principal_from
from master_mcp.auth.master_login import MasterLogin
from master_mcp.auth.oauth_client import http_client
from master_mcp.auth.oauth_verifier import MasterProvider, OAuthTokenVerifier
from master_mcp.auth.principal import LOCAL_PRINCIPAL, Principal
from master_mcp.auth.resource_server import ResourceServer
from master_mcp.auth.session import SessionCookies
from master_mcp.auth.store import BlobStore, MemoryBlobStore, TokenStore
from master_mcp.auth.strategies import (
    AuthStrategy,
    BypassAuth,
    Decision,
    DelegateOAuth,
    Delegating,
    MasterOAuth,
    ProxyOAuth,
    StrategyContext,
    TokenExchange,
)
from master_mcp.config import ConfigError, MasterConfig
from master_mcp.config.loader import key_path
from master_mcp.net import is_loopback


class StrategyFactory(Protocol):
    def __call__(self, server_id: str, config: dict[str, Any], context: StrategyContext) -> AuthStrategy: ...


_BUILTIN: dict[str, StrategyFactory] = {
    BypassAuth.name: BypassAuth,
    MasterOAuth.name: MasterOAuth,
    DelegateOAuth.name: DelegateOAuth,
    ProxyOAuth.name: ProxyOAuth,
    TokenExchange.name: TokenExchange,
}
# Strategies whose credential travels as an HTTP header: a stdio child has no such thing.


class MultiAuthManager:
    def __init__(self) -> None:
        self._factories: dict[str, StrategyFactory] = dict(_BUILTIN)
        self._requested: dict[str, tuple[str, dict[str, Any]]] = {}
        self._strategies: dict[str, AuthStrategy] = {}
        self.store: TokenStore | None = None
        self.flows: OAuthFlowController | None = None
        self._http: httpx2.AsyncClient | None = None
        self._verifier: TokenVerifier | None = None
        self.resource_server: ResourceServer | None = None
        self.master_provider: MasterProvider | None = None
        self._master_key = b""
        self._retired_stores: list[TokenStore] = []
        self._token_blobs: Callable[[], BlobStore] | None = None
        self._on_authorized: Callable[[Principal, str, str], Awaitable[None]] | None = None

    # ---- registration --------------------------------------------------------------------------------------------

    def register_strategy(self, name: str, factory: StrategyFactory) -> None:
        """Make a custom strategy usable as `auth_strategy: <name>` (and in `register_server_auth`)."""
        self._factories[name] = factory

    def register_server_auth(self, server_id: str, strategy: str, config: dict[str, Any] | None = None) -> None:
        """Choose a strategy for a backend in code; it wins over `servers.yaml` when the manager is attached."""
        if strategy not in self._factories:
            raise ValueError(f"unknown auth strategy {strategy!r} (available: {', '.join(sorted(self._factories))})")
        self._requested[server_id] = (strategy, dict(config or {}))

    def on_authorized(self, callback: Callable[[Principal, str, str], Awaitable[None]]) -> None:
        self._on_authorized = callback

    # ---- building ------------------------------------------------------------------------------------------------

    def configure(
        self,
        config: MasterConfig,
        *,
        token_blobs: Callable[[], BlobStore],
        flows: FlowStore,
        consents: ConsentStore | None = None,
    ) -> None:
        """Build every backend's strategy; a bad choice is a `ConfigError` naming its key path.

        `token_blobs` makes the store of sealed tokens (asked only when a strategy stores tokens); `flows` keeps the
        pending OAuth flows; `consents` remembers who approved which client. All come from `master.store` (see
        `master_mcp.stores`)."""
        self._check_choices(config)
        self._token_blobs = token_blobs
        self.store = self._open_store(config, token_blobs if self._stores_tokens(config) else None)
        self._http = http_client()
        settings = config.master
        self._configure_inbound(config)
        login = sessions = None
        if self.master_provider is not None and isinstance(self._verifier, OAuthTokenVerifier):
            login = MasterLogin(self.master_provider, self._verifier, resource=self._verifier.accepted_audiences[0])
            sessions = SessionCookies(self._master_key, secure=settings.public_base_url.startswith("https://"))
        self.flows = OAuthFlowController(
            base_url=settings.public_base_url,
            strategies=self.delegating,
            identify=self.identify,
            on_authorized=self._authorized,
            require_caller=settings.auth.mode == "local",
            store=flows,
            consents=consents,
            login=login,
            sessions=sessions,
        )
        self._strategies = self._build(config, [server.id for server in config.servers])

    def reconfigure(self, config: MasterConfig, rebuild: set[str]) -> None:
        """Take over a reloaded config: build the strategies of `rebuild` (new or changed servers), drop those of
        servers that are gone, keep the rest as they are. All or nothing: a bad choice changes nothing."""
        self._check_choices(config)
        built = self._build(config, [server.id for server in config.servers if server.id in rebuild])
        if self._stores_tokens(config) and isinstance(self.store, TokenStore) and not self.store.persistent:
            # A server that keeps tokens arrived: they must survive restarts as they would have from the start.
            store = self._open_store(config, self._token_blobs)
            if store.persistent:
                self._retired_stores.append(self.store)
                self.store = store
                built = self._build(config, [server.id for server in config.servers if server.id in rebuild])
        kept = {sid: s for sid, s in self._strategies.items() if sid not in rebuild}
        present = {server.id for server in config.servers}
        self._strategies = {sid: s for sid, s in (kept | built).items() if sid in present}

    def _choices(self, config: MasterConfig) -> dict[str, tuple[str, dict[str, Any]]]:
        return {s.id: (s.auth_strategy, dict(s.auth_config)) for s in config.servers} | self._requested

    def _stores_tokens(self, config: MasterConfig) -> bool:
        choices = self._choices(config)
        return any(getattr(self._factories.get(choices[s.id][0]), "stores_tokens", False) for s in config.servers)

    def _check_choices(self, config: MasterConfig) -> None:
        choices = self._choices(config)
        problems: list[str] = []
        for index, server in enumerate(config.servers):
            name, _ = choices[server.id]
            where = f"servers[{index}]"
            if name not in self._factories:
                available = ", ".join(sorted(self._factories))
                problems.append(f"{where}.auth_strategy: unknown auth strategy {name!r} (available: {available})")
            elif getattr(self._factories[name], "http_only", False) and server.type == "stdio":
                problems.append(
                    f"{where}.auth_strategy: {name} sends credentials as HTTP headers, which a stdio child cannot"
                    " carry; use an http, sse or local backend, or give the child its credential in `env`"
                )
        if problems:
            raise ConfigError(str(config.source or "<config>"), problems)

    def _build(self, config: MasterConfig, server_ids: list[str]) -> dict[str, AuthStrategy]:
        assert self.store is not None and self.flows is not None and self._http is not None
        choices = self._choices(config)
        index = {server.id: i for i, server in enumerate(config.servers)}
        strategies: dict[str, AuthStrategy] = {}
        problems: list[str] = []
        for server_id in server_ids:
            server = config.servers[index[server_id]]
            name, options = choices[server_id]
            context = StrategyContext(server=server, store=self.store, flows=self.flows, http=self._http)
            try:
                strategies[server_id] = self._factories[name](server_id, options, context)
            except ValidationError as exc:
                for error in exc.errors():
                    loc = key_path(["auth_config", *error["loc"]]) if error["loc"] else "auth_config"
                    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
                    problems.append(f"servers[{index[server_id]}].{loc}: {message.removeprefix('Value error, ')}")
            except ValueError as exc:
                problems.append(f"servers[{index[server_id]}].auth_config: {exc}")
        if problems:
            raise ConfigError(str(config.source or "<config>"), problems)
        return strategies

    def _configure_inbound(self, config: MasterConfig) -> None:
        settings = config.master
        inbound = settings.auth
        resource = f"{settings.public_base_url.rstrip('/')}{settings.path}"
        self._verifier = None
        self.master_provider = None
        authorization_servers: tuple[str, ...] = ()
        if inbound.mode == "static_tokens":
            self._verifier = StaticTokenVerifier(inbound)
        elif inbound.mode == "master_oauth":
            assert self._http is not None and inbound.issuer is not None
            self.master_provider = MasterProvider(inbound, self._http)
            self._verifier = OAuthTokenVerifier(self.master_provider, resource=resource)
            authorization_servers = (inbound.issuer,)
        self.resource_server = (
            ResourceServer(
                self._verifier,
                resource=resource,
                required_scopes=tuple(inbound.required_scopes),
                scopes_supported=tuple(dict.fromkeys([*inbound.scopes, *inbound.required_scopes])),
                authorization_servers=authorization_servers,
                name=settings.name,
            )
            if self._verifier is not None
            else None
        )

    def _open_store(self, config: MasterConfig, token_blobs: Callable[[], BlobStore] | None) -> TokenStore:
        # Tokens that outlive the process (a file, or Redis shared by replicas) need the same key every time; so do
        # login cookies that one replica signs and another must accept.
        persistent = token_blobs is not None and config.master.store.type != "memory"
        shared_logins = config.master.store.type == "redis" and config.master.auth.mode == "master_oauth"
        try:
            key = key_from_environment(required=persistent or shared_logins)
        except MasterKeyError as exc:
            raise ConfigError(str(config.source or "<config>"), [f"master.store: {exc}"]) from None
        if not self._master_key:
            self._master_key = key  # also signs browser session cookies (a key derived from it)
        blobs = token_blobs() if token_blobs is not None else MemoryBlobStore()
        return TokenStore(blobs, Sealer(key))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self.store is not None:
            await self.store.close()
        while self._retired_stores:
            await self._retired_stores.pop().close()

    # ---- use -----------------------------------------------------------------------------------------------------

    def strategy(self, server_id: str) -> AuthStrategy:
        return self._strategies[server_id]

    def delegating(self, server_id: str) -> Delegating | None:
        strategy = self._strategies.get(server_id)
        # Any strategy that runs the authorization-code flow, the built-in one or a custom one.
        return strategy if isinstance(strategy, Delegating) else None

    async def prepare(self, server_id: str, principal: Principal) -> Decision:
        return await self._strategies[server_id].prepare(principal)

    @property
    def token_verifier(self) -> TokenVerifier | None:
        return self._verifier

    async def identify(self, request: Request) -> Principal | None:
        """The principal behind an HTTP request to the OAuth routes (bearer token, or the local user on loopback)."""
        header = request.headers.get("authorization", "")
        if self._verifier is not None:
            if header[:7].lower() != "bearer ":
                return None
            access = await self._verifier.verify_token(header[7:])
            return principal_from(access) if access is not None else None
        client = request.client.host if request.client else None
        return LOCAL_PRINCIPAL if is_loopback(client) else None

    async def _authorized(self, principal: Principal, server_id: str, flow_id: str) -> None:
        if self._on_authorized is not None:
            await self._on_authorized(principal, server_id, flow_id)
