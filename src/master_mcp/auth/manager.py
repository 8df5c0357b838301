"""`MultiAuthManager`: one strategy per backend (`servers[].auth_strategy`), the token store and the OAuth flows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx2
from mcp.server.auth.provider import TokenVerifier
from pydantic import ValidationError
from starlette.requests import Request

from master_mcp.auth.crypto import MasterKeyError, Sealer, key_from_environment
from master_mcp.auth.flow import OAuthFlowController
from master_mcp.auth.inbound import StaticTokenVerifier, principal_from
from master_mcp.auth.master_login import MasterLogin
from master_mcp.auth.oauth_client import http_client
from master_mcp.auth.oauth_verifier import MasterProvider, OAuthTokenVerifier
from master_mcp.auth.principal import LOCAL_PRINCIPAL, Principal
from master_mcp.auth.resource_server import ResourceServer
from master_mcp.auth.session import SessionCookies
from master_mcp.auth.store import BlobStore, MemoryBlobStore, SQLiteBlobStore, TokenStore
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

    def configure(self, config: MasterConfig) -> None:
        """Build every backend's strategy; a bad choice is a `ConfigError` naming its key path."""
        choices = {s.id: (s.auth_strategy, dict(s.auth_config)) for s in config.servers} | self._requested
        problems: list[str] = []
        index = {server.id: i for i, server in enumerate(config.servers)}
        for server in config.servers:
            name, _ = choices[server.id]
            where = f"servers[{index[server.id]}]"
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

        storing = any(getattr(self._factories.get(choices[s.id][0]), "stores_tokens", False) for s in config.servers)
        self.store = self._open_store(config, needed=storing)
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
            login=login,
            sessions=sessions,
        )
        for server in config.servers:
            name, options = choices[server.id]
            context = StrategyContext(server=server, store=self.store, flows=self.flows, http=self._http)
            try:
                self._strategies[server.id] = self._factories[name](server.id, options, context)
            except ValidationError as exc:
                for error in exc.errors():
                    loc = key_path(["auth_config", *error["loc"]]) if error["loc"] else "auth_config"
                    message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
                    problems.append(f"servers[{index[server.id]}].{loc}: {message.removeprefix('Value error, ')}")
            except ValueError as exc:
                problems.append(f"servers[{index[server.id]}].auth_config: {exc}")
        if problems:
            raise ConfigError(str(config.source or "<config>"), problems)

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

    def _open_store(self, config: MasterConfig, *, needed: bool) -> TokenStore:
        settings = config.master.store
        persistent = needed and settings.type == "sqlite"
        try:
            key = key_from_environment(required=persistent)
        except MasterKeyError as exc:
            raise ConfigError(str(config.source or "<config>"), [f"master.store: {exc}"]) from None
        self._master_key = key  # also signs browser session cookies (a key derived from it)
        blobs: BlobStore = MemoryBlobStore()
        if persistent:
            path = Path(settings.path)
            blobs = SQLiteBlobStore(path if path.is_absolute() else config.base_dir / path)
        return TokenStore(blobs, Sealer(key))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self.store is not None:
            await self.store.close()

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
