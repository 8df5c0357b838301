"""`master_oauth`: forward the caller's own bearer token, only where the config explicitly opts in."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from master_mcp.auth.credentials import BearerAuth, StaticSource
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
        return Forward(BearerAuth(StaticSource(principal.token)))
