"""`bypass_auth`: no credentials at all; the client's Authorization never reaches the backend."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx2

from master_mcp.auth.principal import Principal
from master_mcp.auth.strategies.base import Decision, Forward, StrategyConfig, StrategyContext


class _NoConfig(StrategyConfig):
    pass


class BypassAuth:
    name: ClassVar[str] = "bypass_auth"
    per_principal: ClassVar[bool] = False

    def __init__(self, server_id: str, config: dict[str, Any], context: StrategyContext | None = None) -> None:
        _NoConfig.model_validate(config)
        self.server_id = server_id

    def shared_auth(self) -> httpx2.Auth | None:
        return None

    async def prepare(self, principal: Principal) -> Decision:
        return Forward(None)
