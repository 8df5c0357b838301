"""Pending OAuth flows: short-lived, single-use records (flow ids and `state` values), taken atomically."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from master_mcp.auth.principal import Principal

FLOW_TTL_S = 600.0
_MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class PendingFlow:
    """A delegation handed to a client: whoever opens its link acts for `principal` on `server_id`."""

    principal: Principal
    server_id: str
    created: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class PendingState:
    """One authorization request in flight at a provider."""

    principal: Principal
    server_id: str
    code_verifier: str = field(repr=False)
    browser: str = field(repr=False)  # digest of the cookie of the browser that started it
    return_to: str | None
    flow_id: str
    created: float = field(default_factory=time.time)
    # "login" for the master's own login (whose callback shares /oauth/callback), else a backend's flow.
    purpose: str = "backend"
    scope: str | None = None


class FlowStore(Protocol):
    """Async, so a store shared by several replicas (Redis) has the same shape as the in-process one."""

    async def put_flow(self, flow_id: str, flow: PendingFlow) -> None: ...
    async def take_flow(self, flow_id: str) -> PendingFlow | None: ...
    async def put_state(self, state: str, pending: PendingState) -> None: ...
    async def peek_state(self, state: str) -> PendingState | None: ...
    async def take_state(self, state: str) -> PendingState | None: ...


class MemoryFlowStore:
    """Bounded and expiring; `take_*` removes the record, so each id can be used once."""

    def __init__(self, ttl_s: float = FLOW_TTL_S) -> None:
        self._ttl = ttl_s
        self._flows: OrderedDict[str, PendingFlow] = OrderedDict()
        self._states: OrderedDict[str, PendingState] = OrderedDict()

    def _prune(self, table: OrderedDict[str, Any]) -> None:
        now = time.time()
        while table and (len(table) > _MAX_PENDING or next(iter(table.values())).created + self._ttl < now):
            table.popitem(last=False)

    async def put_flow(self, flow_id: str, flow: PendingFlow) -> None:
        self._flows[flow_id] = flow
        self._prune(self._flows)

    async def take_flow(self, flow_id: str) -> PendingFlow | None:
        flow = self._flows.pop(flow_id, None)
        return flow if flow is not None and flow.created + self._ttl >= time.time() else None

    async def put_state(self, state: str, pending: PendingState) -> None:
        self._states[state] = pending
        self._prune(self._states)

    async def peek_state(self, state: str) -> PendingState | None:
        """The record, left in place: checked before it is spent, so a stranger holding it cannot void it."""
        pending = self._states.get(state)
        return pending if pending is not None and pending.created + self._ttl >= time.time() else None

    async def take_state(self, state: str) -> PendingState | None:
        pending = self._states.pop(state, None)
        return pending if pending is not None and pending.created + self._ttl >= time.time() else None
