"""The front sessions the master knows: where list changes, resource updates and log lines are delivered.

A handshake-era connection with a back-channel (stdio, stateful streamable HTTP) is remembered from its first
request until it closes; 2026-07-28 clients are reached through `subscriptions/listen` instead (the SDK's bus).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from mcp.server.connection import Connection, allowed_log_levels
from mcp.server.context import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

logger = logging.getLogger(__name__)

_STATE_KEY: Final = "master_mcp.front"
# Set by the HTTP front in the ASGI scope of a request: False when it can only be answered as a plain JSON body
# (no stream can be opened for it), so nothing but its answer may be sent for it.
STREAMS: Final = "master_mcp.streams"
LOG_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


@dataclass(eq=False)
class FrontSession:
    connection: Connection
    principal: tuple[str, str]
    log_level: str | None = None
    subscriptions: set[str] = field(default_factory=set)

    def wants_log(self, level: str) -> bool:
        if self.log_level is None or level not in LOG_LEVELS:
            return True
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.log_level)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        try:
            await self.connection.outbound.notify(method, params)
        except Exception as exc:  # a client that went away costs only its own notice
            logger.debug("could not deliver %s to a front session: %s", method, type(exc).__name__)


@dataclass(frozen=True, eq=False)
class FrontCall:
    """One front request in flight: what a backend's notification during that request is delivered to."""

    ctx: ServerRequestContext[Any, Any]
    front: FrontSession | None

    @property
    def streams(self) -> bool:
        """Whether this request can carry anything besides its answer (an HTTP request that cannot get a stream
        cannot: see `front_http`)."""
        scope = getattr(self.ctx.request, "scope", None)
        return not isinstance(scope, dict) or scope.get(STREAMS) is not False

    def wants_log(self, level: str) -> bool:
        """Whether a backend's log line at `level` goes to this caller: a handshake-era session gets what its
        `logging/setLevel` lets through; a 2026-07-28 request opts in by itself, in its `_meta`, or gets none."""
        if self.front is not None:
            return self.front.wants_log(level)
        return level in allowed_log_levels(self.ctx.protocol_version, self.ctx.meta)


def _connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection | None:
    # The low-level context exposes the per-connection object only on its session; it is the one place the SDK
    # keeps per-connection state (`state`) and teardown (`exit_stack`), which is exactly what is needed here.
    connection = getattr(ctx.session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


class FrontSessions:
    def __init__(self) -> None:
        self._live: dict[int, FrontSession] = {}

    def of(self, ctx: ServerRequestContext[Any, Any], principal: tuple[str, str]) -> FrontSession | None:
        connection = _connection_of(ctx)
        if connection is None or not connection.has_standalone_channel:
            return None
        if connection.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return None
        front = connection.state.get(_STATE_KEY)
        if front is None:
            front = connection.state[_STATE_KEY] = FrontSession(connection, principal)
            self._live[id(front)] = front
            connection.exit_stack.callback(self._live.pop, id(front), None)
        return front if isinstance(front, FrontSession) else None

    def __iter__(self) -> Any:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    async def broadcast(self, method: str) -> None:
        for front in list(self._live.values()):
            await front.notify(method)

    def subscribers(self, uri: str) -> list[FrontSession]:
        return [front for front in self._live.values() if uri in front.subscriptions]
