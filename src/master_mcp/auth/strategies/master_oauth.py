"""`master_oauth`: forward the caller's own bearer token, only where the config opts in and the token's verified
audience covers the backend. This is the only path on which a client's token leaves the master."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from master_mcp.auth.credentials import BearerAuth, StaticSource
from master_mcp.auth.oauth_client import same_url
from master_mcp.auth.principal import Principal
from master_mcp.auth.strategies.base import AuthRefused, Decision, Forward, StrategyConfig, StrategyContext


class MasterOAuthConfig(StrategyConfig):
    forward_client_token: bool = False
    audience: str | None = None


class MasterOAuth:
    name: ClassVar[str] = "master_oauth"
    http_only: ClassVar[bool] = True
    per_principal: ClassVar[bool] = True

    def __init__(self, server_id: str, config: dict[str, Any], context: StrategyContext | None = None) -> None:
        self.server_id = server_id
        self.config = MasterOAuthConfig.model_validate(config)
        # The audience a forwarded token must carry: the configured one, else the backend's own URL.
        self.audience = self.config.audience or (context.server.endpoint_url if context is not None else None)

    def shared_auth(self) -> httpx2.Auth | None:
        return None

    async def prepare(self, principal: Principal) -> Decision:
        if not self.config.forward_client_token:
            raise AuthRefused(
                f"server {self.server_id!r} uses master_oauth without auth_config.forward_client_token: true;"
                " the client's token is forwarded only where the config opts in"
            )
        if principal.token is None:
            raise AuthRefused(
                f"server {self.server_id!r} needs the caller's bearer token, and this caller presented none"
            )
        if self.audience is None or not any(same_url(a, self.audience) for a in principal.audiences):
            raise AuthRefused(
                f"server {self.server_id!r}: the caller's token was not issued for this backend (its audience does"
                f" not include {self.audience}); it is not forwarded. Ask the authorization server for a token whose"
                " audience covers it, or use token_exchange"
            )
        return Forward(BearerAuth(StaticSource(principal.token)))
