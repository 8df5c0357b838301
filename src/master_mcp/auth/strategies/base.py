"""What every auth strategy is: a per-backend decision, per principal, on what credential a call carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import httpx2
from pydantic import BaseModel, ConfigDict

from master_mcp.auth.principal import Principal

if TYPE_CHECKING:
    from master_mcp.auth.store import StoredToken, TokenStore
    from master_mcp.config import ServerConfig


@dataclass(frozen=True, slots=True)
class Forward:
    """Go ahead; `auth` (when set) is the httpx2 flow that puts the credential on backend requests."""

    auth: httpx2.Auth | None = None


@dataclass(frozen=True, slots=True)
class Delegate:
    """No credential yet: the caller has to go through an authorization flow first."""

    server_id: str
    authorization_url: str
    auth_endpoint: str
    token_endpoint: str
    required_scopes: tuple[str, ...]
    redirect_after_auth: str
    flow_id: str = field(default="", repr=False)


Decision = Forward | Delegate


class AuthRefused(Exception):
    """The strategy will not let this call through; the message (no credential in it) says why."""


class FlowStarter(Protocol):
    """The part of the OAuth flow controller a strategy needs: start a flow for a principal."""

    async def begin(self, principal: Principal, server_id: str) -> tuple[str, str]:
        """Register a pending flow; returns (flow id, the master URL that starts it)."""
        ...

    @property
    def callback_url(self) -> str: ...

    @property
    def token_url(self) -> str: ...

    @property
    def success_url(self) -> str: ...


@dataclass(slots=True)
class StrategyContext:
    """What the master lends a strategy: its backend's config, the token store, the flow starter, an HTTP client."""

    server: ServerConfig
    store: TokenStore
    flows: FlowStarter
    http: httpx2.AsyncClient


class AuthStrategy(Protocol):
    name: ClassVar[str]
    # True when each principal needs its own backend session (its own credential on the wire).
    per_principal: ClassVar[bool]
    # Optional class attributes, False when absent: `http_only` (its credential is an HTTP header, which a stdio
    # child cannot carry) and `stores_tokens` (it keeps per-user tokens in the token store).

    def shared_auth(self) -> httpx2.Auth | None:
        """The credential of the one shared backend session (strategies that are not per principal)."""
        ...

    async def prepare(self, principal: Principal) -> Decision:
        """Decide for one call; raises `AuthRefused` with the reason when the call must not go through."""
        ...


@runtime_checkable
class Delegating(Protocol):
    """A strategy that runs the authorization-code flow (the flow controller drives it)."""

    async def delegation(self, principal: Principal) -> Delegate:
        """A new authorization flow for `principal`, whether or not a token is stored already."""
        ...

    @property
    def provider(self) -> str | None:
        """The provider's configured name (`auth_config.provider`), if any."""
        ...

    async def authorization_request(self, state: str, code_challenge: str, scope: str | None = None) -> str:
        """The provider URL to send the browser to."""
        ...

    async def exchange_code(self, code: str, code_verifier: str) -> StoredToken: ...

    async def issuer(self) -> str | None: ...

    async def store_token(self, principal: Principal, token: StoredToken) -> None: ...


class StrategyConfig(BaseModel):
    """Base of each strategy's `auth_config` model: unknown keys are errors, secrets stay out of reprs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
