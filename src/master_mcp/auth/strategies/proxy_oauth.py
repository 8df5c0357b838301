"""`proxy_oauth`: the master obtains and refreshes the backend token itself, and fails closed."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import anyio
import httpx2
from pydantic import Field, model_validator

from master_mcp.auth.credentials import BearerAuth
from master_mcp.auth.oauth_client import ClientCredentials, OAuthError, token_request
from master_mcp.auth.principal import Principal
from master_mcp.auth.store import StoredToken
from master_mcp.auth.strategies.base import AuthRefused, Decision, Forward, StrategyConfig, StrategyContext


class ProxyOAuthConfig(StrategyConfig):
    token_source: str | None = Field(default=None, repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    token_endpoint: str | None = None
    scopes: list[str] = []
    resource: str | None = None
    audience: str | None = None

    @property
    def grant(self) -> Literal["static", "refresh_token", "client_credentials"]:
        if self.token_source is not None:
            return "static"
        return "refresh_token" if self.refresh_token is not None else "client_credentials"

    @model_validator(mode="after")
    def _one_way_to_a_token(self) -> ProxyOAuthConfig:
        if self.token_source is not None:
            if self.refresh_token or self.client_secret:
                raise ValueError(
                    "token_source is a static token: give it alone, without refresh_token or client_secret"
                )
            return self
        if not self.token_endpoint or not self.client_id:
            raise ValueError(
                "give token_source (a static token), or token_endpoint and client_id with refresh_token"
                " or client_secret (client credentials)"
            )
        if self.refresh_token is None and self.client_secret is None:
            raise ValueError("client credentials need client_secret (or give refresh_token)")
        return self


class ProxyOAuth:
    name: ClassVar[str] = "proxy_oauth"
    http_only: ClassVar[bool] = True
    per_principal: ClassVar[bool] = False

    def __init__(self, server_id: str, config: dict[str, Any], context: StrategyContext) -> None:
        self.server_id = server_id
        self.config = ProxyOAuthConfig.model_validate(config)
        self._http = context.http
        self._token: StoredToken | None = (
            StoredToken(access_token=self.config.token_source) if self.config.token_source is not None else None
        )
        self._lock = anyio.Lock()
        self._auth = BearerAuth(self)

    def shared_auth(self) -> httpx2.Auth | None:
        return self._auth

    async def prepare(self, principal: Principal) -> Decision:
        try:
            await self._obtain(force=False)
        except OAuthError as exc:
            raise AuthRefused(f"server {self.server_id!r}: the master could not obtain its token: {exc}") from None
        return Forward(None)

    # ---- CredentialSource --------------------------------------------------------------------------------------

    async def current(self) -> str | None:
        try:
            return (await self._obtain(force=False)).access_token
        except OAuthError:
            return None

    async def refresh(self) -> str | None:
        try:
            return (await self._obtain(force=True)).access_token
        except OAuthError:
            return None

    async def _obtain(self, *, force: bool) -> StoredToken:
        async with self._lock:
            token = self._token
            if token is not None and not force and not token.expired():
                return token
            if self.config.grant == "static":
                if token is None or force:
                    raise OAuthError("the static token was rejected and cannot be refreshed")
                return token
            assert self.config.token_endpoint is not None and self.config.client_id is not None
            form = {"scope": " ".join(self.config.scopes)} if self.config.scopes else {}
            if self.config.resource:
                form["resource"] = self.config.resource
            if self.config.audience:
                form["audience"] = self.config.audience
            refresh = (token.refresh_token if token else None) or self.config.refresh_token
            if refresh is not None:
                form |= {"grant_type": "refresh_token", "refresh_token": refresh}
            else:
                form["grant_type"] = "client_credentials"
            client = ClientCredentials(self.config.client_id, self.config.client_secret)
            try:
                self._token = await token_request(self._http, self.config.token_endpoint, form, client, token)
            except OAuthError:
                self._token = None  # fail closed: never keep using a token the provider refused to renew
                raise
            return self._token
