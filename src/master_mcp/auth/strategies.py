"""Auth strategies: per backend, what credential (if any) a call carries, decided per principal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx2

from master_mcp.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class Forward:
    """Go ahead; `auth` (when set) is the httpx2 flow that puts the credential on backend requests."""

    auth: httpx2.Auth | None = None


@dataclass(frozen=True, slots=True)
class Delegate:
    """No credential yet: the caller has to be sent through an authorization flow first."""

    server_id: str
    authorization_url: str
    reason: str


Decision = Forward | Delegate


class AuthStrategy(Protocol):
    name: ClassVar[str]
    # True when each principal needs its own backend session (its own credential on the wire).
    per_principal: ClassVar[bool]

    async def prepare(self, principal: Principal) -> Decision: ...


class BypassAuth:
    """No credentials at all; the client's Authorization never reaches the backend."""

    name: ClassVar[str] = "bypass_auth"
    per_principal: ClassVar[bool] = False

    def __init__(self, server_id: str, config: dict[str, Any]) -> None:
        if config:
            raise ValueError(f"takes no auth_config keys (got {', '.join(sorted(config))})")
        self.server_id = server_id

    async def prepare(self, principal: Principal) -> Decision:
        return Forward(None)
