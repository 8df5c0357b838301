"""`token_exchange` (RFC 8693): the caller's token is exchanged for one whose audience is the backend.

The exchanged token is kept per principal (in memory) until it expires; a failed exchange is an error for the
call, never a fallback to forwarding the caller's own token.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import anyio
import httpx2
from pydantic import Field

from master_mcp.auth.credentials import BearerAuth
from master_mcp.auth.oauth_client import ClientCredentials, OAuthError, token_request
from master_mcp.auth.principal import Principal
from master_mcp.auth.store import StoredToken
from master_mcp.auth.strategies.base import AuthRefused, Decision, Forward, StrategyConfig, StrategyContext

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_CACHE = 4096


class TokenExchangeConfig(StrategyConfig):
    token_endpoint: str
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)
    audience: str | None = None
    resource: str | None = None
    scopes: list[str] = []
    subject_token_type: str = ACCESS_TOKEN_TYPE
    requested_token_type: str | None = None


class _Exchanged:
    """One principal's exchanged token for this backend; `subject_token` is the caller's latest token."""

    def __init__(self, strategy: TokenExchange, subject_token: str) -> None:
        self.strategy = strategy
        self.subject_token = subject_token
        self.token: StoredToken | None = None
        self.lock = anyio.Lock()
        self.auth = BearerAuth(self)

    async def obtain(self, *, force: bool) -> StoredToken:
        async with self.lock:
            token = self.token
            if token is None or force or token.expired():
                self.token = None  # a token the backend refused, or one past its time, is never sent again
                token = self.token = await self.strategy.exchange(self.subject_token)
            return token

    async def current(self) -> str | None:
        try:
            return (await self.obtain(force=False)).access_token
        except OAuthError:
            return None

    async def refresh(self) -> str | None:
        try:
            return (await self.obtain(force=True)).access_token
        except OAuthError:
            return None


class TokenExchange:
    name: ClassVar[str] = "token_exchange"
    per_principal: ClassVar[bool] = True
    http_only: ClassVar[bool] = True

    def __init__(self, server_id: str, config: dict[str, Any], context: StrategyContext) -> None:
        self.server_id = server_id
        self.config = TokenExchangeConfig.model_validate(config)
        self._http = context.http
        # Neither audience nor resource given: ask for the backend's own URL as the resource (RFC 8707).
        self._resource = self.config.resource or (None if self.config.audience else context.server.endpoint_url)
        self._exchanged: OrderedDict[tuple[str, str], _Exchanged] = OrderedDict()

    def shared_auth(self) -> httpx2.Auth | None:
        return None

    async def prepare(self, principal: Principal) -> Decision:
        if principal.token is None:
            raise AuthRefused(
                f"server {self.server_id!r} exchanges the caller's bearer token, and this caller presented none"
            )
        entry = self._exchanged.get(principal.key)
        if entry is None:
            entry = self._exchanged[principal.key] = _Exchanged(self, principal.token)
            while len(self._exchanged) > _CACHE:
                self._exchanged.popitem(last=False)
        self._exchanged.move_to_end(principal.key)
        entry.subject_token = principal.token
        try:
            await entry.obtain(force=False)
        except OAuthError as exc:
            raise AuthRefused(f"server {self.server_id!r}: token exchange failed: {exc}") from None
        return Forward(entry.auth)

    async def exchange(self, subject_token: str) -> StoredToken:
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": self.config.subject_token_type,
        }
        if self.config.audience:
            form["audience"] = self.config.audience
        if self._resource:
            form["resource"] = self._resource
        if self.config.scopes:
            form["scope"] = " ".join(self.config.scopes)
        if self.config.requested_token_type:
            form["requested_token_type"] = self.config.requested_token_type
        client = ClientCredentials(self.config.client_id, self.config.client_secret)
        token = await token_request(self._http, self.config.token_endpoint, form, client)
        if token.token_type.lower() != "bearer":
            # RFC 8693 section 2.2.1: "N_A" and the like are not access tokens this master can send.
            raise OAuthError(f"the exchanged token is of type {token.token_type!r}, not a bearer token")
        return token
