"""`MultiAuthManager`: one strategy per backend, chosen by `servers[].auth_strategy`."""

from __future__ import annotations

from typing import Any, Protocol

from master_mcp.auth.principal import Principal
from master_mcp.auth.strategies import AuthStrategy, BypassAuth, Decision
from master_mcp.config import ConfigError, MasterConfig


class StrategyFactory(Protocol):
    def __call__(self, server_id: str, config: dict[str, Any]) -> AuthStrategy: ...


_BUILTIN: dict[str, StrategyFactory] = {BypassAuth.name: BypassAuth}


class MultiAuthManager:
    def __init__(self) -> None:
        self._factories: dict[str, StrategyFactory] = dict(_BUILTIN)
        self._strategies: dict[str, AuthStrategy] = {}

    def register_strategy(self, name: str, factory: StrategyFactory) -> None:
        """Make a custom strategy class usable as `auth_strategy: <name>`."""
        self._factories[name] = factory

    def register_server_auth(self, server_id: str, strategy: str, config: dict[str, Any] | None = None) -> None:
        factory = self._factories.get(strategy)
        if factory is None:
            raise ValueError(f"unknown auth strategy {strategy!r} (available: {', '.join(sorted(self._factories))})")
        self._strategies[server_id] = factory(server_id, dict(config or {}))

    def configure(self, config: MasterConfig) -> None:
        """Register every configured server's strategy; a bad one is a `ConfigError` naming its key."""
        problems: list[str] = []
        for index, server in enumerate(config.servers):
            if server.id in self._strategies:
                continue  # registered in code (e.g. by an embedding application); that choice wins
            try:
                self.register_server_auth(server.id, server.auth_strategy, server.auth_config)
            except ValueError as exc:
                key = "auth_strategy" if server.auth_strategy not in self._factories else "auth_config"
                problems.append(f"servers[{index}].{key}: {exc}")
        if problems:
            raise ConfigError(str(config.source or "<config>"), problems)

    def strategy(self, server_id: str) -> AuthStrategy:
        return self._strategies.setdefault(server_id, BypassAuth(server_id, {}))

    async def prepare(self, server_id: str, principal: Principal) -> Decision:
        return await self.strategy(server_id).prepare(principal)
