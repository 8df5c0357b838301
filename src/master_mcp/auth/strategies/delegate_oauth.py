"""`delegate_oauth`: each principal authorizes the backend's provider (code + PKCE S256); tokens kept per principal."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import anyio
import httpx2
from pydantic import Field, model_validator

from master_mcp.auth import oauth_client
from master_mcp.auth.credentials import BearerAuth
from master_mcp.auth.oauth_client import ClientCredentials, OAuthError, ProviderEndpoints, discover, token_request
from master_mcp.auth.principal import Principal
from master_mcp.auth.store import StoredToken, TokenKey
from master_mcp.auth.strategies.base import AuthRefused, Decision, Delegate, Forward, StrategyConfig, StrategyContext

_SOURCE_CACHE = 4096


class DelegateOAuthConfig(StrategyConfig):
    provider: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)
    scopes: list[str] = []
    issuer: str | None = None
    resource: str | None = None
    audience: str | None = None
    extra_authorize_params: dict[str, str] = {}

    @model_validator(mode="after")
    def _endpoints_together(self) -> DelegateOAuthConfig:
        if (self.authorization_endpoint is None) != (self.token_endpoint is None):
            raise ValueError(
                "give both authorization_endpoint and token_endpoint, or neither (then they are discovered)"
            )
        return self


class _PrincipalSource:
    """One principal's credential for one backend: the stored token, refreshed on expiry or on a 401."""

    def __init__(self, strategy: DelegateOAuth, key: TokenKey, token: StoredToken) -> None:
        self.strategy = strategy
        self.key = key
        self.token: StoredToken | None = token
        self.auth = BearerAuth(self)

    async def current(self) -> str | None:
        token = self.token
        if token is not None and token.expired():
            return await self.refresh()
        return token.access_token if token else None

    async def refresh(self) -> str | None:
        self.token = await self.strategy.refresh(self.key, self.token)
        return self.token.access_token if self.token else None


class DelegateOAuth:
    name: ClassVar[str] = "delegate_oauth"
    per_principal: ClassVar[bool] = True
    http_only: ClassVar[bool] = True
    stores_tokens: ClassVar[bool] = True

    def __init__(self, server_id: str, config: dict[str, Any], context: StrategyContext) -> None:
        self.server_id = server_id
        self.config = DelegateOAuthConfig.model_validate(config)
        self._context = context
        self._endpoints: ProviderEndpoints | None = None
        if self.config.authorization_endpoint and self.config.token_endpoint:
            self._endpoints = ProviderEndpoints(
                self.config.authorization_endpoint, self.config.token_endpoint, self.config.issuer
            )
        self._discovery = anyio.Lock()
        self._refreshing = anyio.Lock()
        self._sources: OrderedDict[TokenKey, _PrincipalSource] = OrderedDict()

    def shared_auth(self) -> httpx2.Auth | None:
        return None

    def _key(self, principal: Principal) -> TokenKey:
        return TokenKey(principal.issuer, principal.subject, self.server_id)

    async def endpoints(self) -> ProviderEndpoints:
        async with self._discovery:
            if self._endpoints is None:
                self._endpoints = await discover(
                    self._context.http, resource_url=self._context.server.endpoint_url, issuer=self.config.issuer
                )
            return self._endpoints

    async def prepare(self, principal: Principal) -> Decision:
        key = self._key(principal)
        source = self._sources.get(key)
        if source is None or source.token is None:
            stored = await self._context.store.get(key)
            if stored is not None and stored.expired():
                stored = await self.refresh(key, stored)
            if stored is not None:
                source = self._remember(key, stored)
        if source is not None and source.token is not None:
            self._sources.move_to_end(key)
            return Forward(source.auth)
        return await self.delegation(principal)

    async def delegation(self, principal: Principal) -> Delegate:
        try:
            endpoints = await self.endpoints()
        except OAuthError as exc:
            reason = f"server {self.server_id!r} needs authorization, but its provider is unknown: {exc}"
            raise AuthRefused(reason) from None
        flows = self._context.flows
        flow_id, url = await flows.begin(principal, self.server_id)
        return Delegate(
            server_id=self.server_id,
            authorization_url=url,
            auth_endpoint=endpoints.authorization_endpoint,
            token_endpoint=flows.token_url,
            required_scopes=tuple(self.config.scopes),
            redirect_after_auth=flows.success_url,
            flow_id=flow_id,
        )

    def _remember(self, key: TokenKey, token: StoredToken) -> _PrincipalSource:
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = _PrincipalSource(self, key, token)
            while len(self._sources) > _SOURCE_CACHE:
                self._sources.popitem(last=False)
        source.token = token
        return source

    async def refresh(self, key: TokenKey, token: StoredToken | None) -> StoredToken | None:
        """A fresh token, or None: then the stored one is dropped, so the next call asks for authorization again."""
        async with self._refreshing:
            stored = await self._context.store.get(key)
            if stored is not None and token is not None and stored.access_token != token.access_token:
                return stored  # another request already refreshed it
            refresh = token.refresh_token if token else None
            fresh: StoredToken | None = None
            if refresh:
                form = {"grant_type": "refresh_token", "refresh_token": refresh}
                if self.config.resource:
                    form["resource"] = self.config.resource
                try:
                    endpoints = await self.endpoints()
                    fresh = await token_request(
                        self._context.http, endpoints.token_endpoint, form, self._client(), token
                    )
                except OAuthError:
                    fresh = None
            if fresh is None:
                await self._context.store.delete(key)
                self._sources.pop(key, None)
                return None
            await self._context.store.put(key, fresh)
            return fresh

    def _client(self) -> ClientCredentials:
        return ClientCredentials(self.config.client_id, self.config.client_secret)

    # ---- Delegating ----------------------------------------------------------------------------------------------

    @property
    def provider(self) -> str | None:
        return self.config.provider

    async def authorization_request(self, state: str, code_challenge: str, scope: str | None = None) -> str:
        endpoints = await self.endpoints()
        named = {
            "scope": scope or " ".join(self.config.scopes),
            "resource": self.config.resource,
            "audience": self.config.audience,
        }
        extra = {key: value for key, value in named.items() if value}
        extra |= {k: v for k, v in self.config.extra_authorize_params.items() if k not in extra}
        redirect_uri = self._context.flows.callback_url
        return oauth_client.authorization_url(
            endpoints.authorization_endpoint, self.config.client_id, redirect_uri, state, code_challenge, extra
        )

    async def exchange_code(self, code: str, code_verifier: str) -> StoredToken:
        endpoints = await self.endpoints()
        return await oauth_client.exchange_code(
            self._context.http,
            endpoints.token_endpoint,
            self._client(),
            code=code,
            code_verifier=code_verifier,
            redirect_uri=self._context.flows.callback_url,
            resource=self.config.resource,
        )

    async def issuer(self) -> str | None:
        return (await self.endpoints()).issuer

    async def store_token(self, principal: Principal, token: StoredToken) -> None:
        key = self._key(principal)
        await self._context.store.put(key, token)
        self._remember(key, token)
