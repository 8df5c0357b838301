"""All backend connections of one master: the shared ones (started together, supervised) and the per-principal
ones (opened on a principal's first call, bounded by an LRU and an idle timeout, never shared across principals)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx2

from master_mcp.backends.balancer import Instances
from master_mcp.backends.breaker import CircuitBreaker
from master_mcp.backends.connection import (
    NO_PROFILE,
    BackendConnection,
    BackendState,
    BackendUnavailable,
    ListingSink,
    NotificationSink,
    Profile,
    RequestRelay,
)
from master_mcp.backends.listing import Listing
from master_mcp.config.models import MasterConfig, ServerConfig

logger = logging.getLogger(__name__)

PrincipalKey = tuple[str, str]
SessionKey = tuple[str, PrincipalKey | None, Profile]
_REAP_EVERY_S = 30.0


class BackendPool:
    def __init__(
        self,
        config: MasterConfig,
        on_listing: ListingSink,
        *,
        per_principal: Callable[[str], bool],
        shared_auth: Callable[[str], httpx2.Auth | None],
        on_notification: NotificationSink | None = None,
        relay: RequestRelay | None = None,
        on_session: Callable[[BackendConnection], Awaitable[None]] | None = None,
        on_shared_up: Callable[[BackendConnection], Coroutine[Any, Any, None]] | None = None,
        watched: Callable[[str, PrincipalKey | None], list[str]] | None = None,
    ) -> None:
        self.config = config
        self._watched = watched
        self._on_session = on_session
        self._on_shared_up = on_shared_up
        self._on_listing = on_listing
        self._on_notification = on_notification
        self._relay = relay
        self._shared_auth = shared_auth
        self._per_principal = per_principal
        self._listings: dict[str, dict[Profile, Listing]] = {}
        # One breaker per backend, shared by all its sessions: it is the backend that fails, not a session.
        self._breakers = {s.id: CircuitBreaker(config.routing.circuit_breaker) for s in config.servers}
        # Likewise what traffic has shown of each instance of a backend with several (`urls`).
        self._instances = {s.id: self._instances_of(s) for s in config.servers if s.urls}
        self._per_principal_ids = {s.id for s in config.servers if per_principal(s.id)}
        self.connections: dict[str, BackendConnection] = {
            server.id: self._new(server.id, shared_auth(server.id), reconnect=True)
            for server in config.servers
            if server.id not in self._per_principal_ids
        }
        self._sessions: OrderedDict[SessionKey, BackendConnection] = OrderedDict()
        self._tg: anyio.abc.TaskGroup | None = None

    def _new(
        self,
        server_id: str,
        auth: httpx2.Auth | None,
        *,
        reconnect: bool,
        profile: Profile = NO_PROFILE,
        principal: PrincipalKey | None = None,
    ) -> BackendConnection:
        server = self.config.server(server_id)

        def on_listing(sid: str, listing: Listing | None) -> None:
            self._merge_listing(sid, profile, listing, shared=reconnect)

        def watched() -> list[str]:
            return self._watched(server_id, principal) if self._watched is not None else []

        return BackendConnection(
            server,
            self.config.base_dir,
            connect_timeout=self.config.master.connect_timeout_s,
            on_listing=on_listing,
            auth=auth,
            reconnect=reconnect,
            on_notification=self._on_notification,
            profile=profile,
            relay=self._relay,
            principal=principal,
            breaker=self._breakers[server_id],
            instances=self._instances.get(server_id),
            on_up=self._on_shared_up if reconnect else None,
            watched=watched,
        )

    @staticmethod
    def _instances_of(server: ServerConfig) -> Instances:
        return Instances(server.id, list(server.urls), server.load_balancing)

    def _merge_listing(self, server_id: str, profile: Profile, listing: Listing | None, *, shared: bool) -> None:
        """A backend's catalog is the union of what its sessions list (a client with more capabilities may be
        shown more tools). The shared session going down takes the backend out; an on-demand one closing does not."""
        if listing is None:
            if shared:
                self._listings.pop(server_id, None)
                self._on_listing(server_id, None)
            return
        known = self._listings.setdefault(server_id, {})
        known[profile] = listing
        ordered = [known[p] for p in sorted(known, key=lambda p: (len(p), sorted(p)))]
        self._on_listing(server_id, Listing.union(ordered))

    async def apply(self, config: MasterConfig, rebuild: set[str]) -> None:
        """Take over a reloaded config. Servers that are gone close; those in `rebuild` (new or changed) get new
        connections, each replacing the old one only once it has had its first try, so calls keep being served
        meanwhile; every other connection, and its sessions, stays as it is."""
        present = {server.id for server in config.servers}
        gone = set(self.connections) - present | (rebuild & set(self.connections))
        self.config = config
        for key in [k for k in self._sessions if k[0] not in present or k[0] in rebuild]:
            self._drop(key)
        for server_id in (set(self._breakers) - present) | rebuild:
            self._listings.pop(server_id, None)
            self._breakers.pop(server_id, None)
            self._instances.pop(server_id, None)
        for server in config.servers:
            self._breakers.setdefault(server.id, CircuitBreaker(config.routing.circuit_breaker))
            if server.urls and server.id not in self._instances:
                self._instances[server.id] = self._instances_of(server)
        self._per_principal_ids = {s.id for s in config.servers if self._per_principal(s.id)}
        fresh = {
            server_id: self._new(server_id, self._shared_auth(server_id), reconnect=True)
            for server_id in sorted(rebuild & present - self._per_principal_ids)
        }
        if self._tg is not None:
            for connection in fresh.values():
                self._tg.start_soon(connection.run, name=f"backend:{connection.server_id}")
            async with anyio.create_task_group() as tg:
                for connection in fresh.values():
                    tg.start_soon(connection.first_attempt.wait)
        retired = [self.connections.pop(server_id) for server_id in gone]
        self.connections.update(fresh)
        for connection in retired:
            if self._tg is None:
                connection.close()
            else:
                self._tg.start_soon(connection.retire, connection.server.timeout_s)

    def configured(self, server_id: str) -> bool:
        return server_id in self._breakers

    def get(self, server_id: str) -> BackendConnection:
        return self.connections[server_id]

    async def session(
        self, server_id: str, principal: PrincipalKey, auth: httpx2.Auth | None, profile: Profile = NO_PROFILE
    ) -> BackendConnection:
        """The connection a call uses: the shared one, or one of its own for a principal (per-user credentials)
        or for a capability profile (a client that can answer sampling, elicitation or roots requests)."""
        per_principal = server_id in self._per_principal_ids
        if not per_principal and not profile:
            shared = self.connections.get(server_id)
            if shared is None:  # a reload is replacing its connection right now
                raise BackendUnavailable(f"server {server_id!r} is reconnecting after a config reload")
            return shared
        key: SessionKey = (server_id, principal if per_principal else None, profile)
        connection = self._sessions.get(key)
        if connection is not None and connection.state is BackendState.DOWN:
            self._drop(key)
            connection = None
        opened = connection is None
        if connection is None:
            if self._tg is None:
                raise BackendUnavailable(f"server {server_id!r}: the master is not running")
            credential = auth if per_principal else self._shared_auth(server_id)
            connection = self._sessions[key] = self._new(
                server_id, credential, reconnect=False, profile=profile, principal=key[1]
            )
            self._tg.start_soon(connection.run, name=f"backend:{server_id}:session")
            self._evict(server_id)
        self._sessions.move_to_end(key)
        await connection.first_attempt.wait()
        if connection.state is not BackendState.UP:
            if self._sessions.get(key) is connection:  # not one another caller opened since
                self._drop(key)
            raise BackendUnavailable(f"server {server_id!r} could not be reached: {connection.last_error}")
        if opened and self._on_session is not None:
            await self._on_session(connection)
        return connection

    def close_principal(self, server_id: str, principal: PrincipalKey) -> None:
        """Close one principal's sessions (its credential changed); the next call opens a fresh one."""
        for key in [k for k in self._sessions if k[0] == server_id and k[1] == principal]:
            self._drop(key)

    def _drop(self, key: SessionKey) -> None:
        """Forget a session; calls still running on it get up to the server's `timeout_s` to finish."""
        connection = self._sessions.pop(key, None)
        if connection is None:
            return
        if self._tg is not None and connection.active:
            self._tg.start_soon(connection.retire, connection.server.timeout_s)
        else:
            connection.close()

    def _evict(self, server_id: str) -> None:
        limit = self.config.master.sessions.max_per_server
        keys = [key for key in self._sessions if key[0] == server_id]
        for key in keys[: max(0, len(keys) - limit)]:  # oldest first: the OrderedDict is kept in use order
            logger.info("server %s: closing the least recently used principal session", server_id)
            self._drop(key)

    async def _reap_idle(self) -> None:
        idle_s = self.config.master.sessions.idle_timeout_s
        while True:
            await anyio.sleep(min(_REAP_EVERY_S, idle_s))
            now = time.monotonic()
            for key, connection in list(self._sessions.items()):
                if now - connection.last_used > idle_s and not connection.active:
                    self._drop(key)

    def live(self) -> list[BackendConnection]:
        """Every open connection: the shared ones and the on-demand ones (per principal, per profile)."""
        return [*self.connections.values(), *self._sessions.values()]

    def refresh(self, server_id: str | None) -> None:
        """Re-list `server_id` (None: every server) on each of its open connections."""
        for connection in self.live():
            if server_id is None or connection.server_id == server_id:
                connection.refresh()

    def rewatch(self, server_id: str) -> list[anyio.Event]:
        """The resources front sessions subscribed to on `server_id` changed: what to wait for until every
        connection of it listens for the new set (see `BackendConnection.rewatch`)."""
        waiting = (connection.rewatch() for connection in self.live() if connection.server_id == server_id)
        return [event for event in waiting if event is not None]

    def sessions_of(self, server_id: str) -> int:
        return sum(1 for key in self._sessions if key[0] == server_id)

    @asynccontextmanager
    async def running(self, *, wait_ready: bool = True) -> AsyncIterator[BackendPool]:
        """Connect every shared backend in parallel; with `wait_ready`, return once each has had its first try."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for connection in self.connections.values():
                tg.start_soon(connection.run, name=f"backend:{connection.server_id}")
            tg.start_soon(self._reap_idle, name="backend-sessions-reaper")
            if wait_ready:
                await self.wait_first_attempts()
            try:
                yield self
            finally:
                self._tg = None
                for connection in self.live():
                    connection.close()
                self._sessions.clear()
                tg.cancel_scope.cancel()

    async def wait_first_attempts(self) -> None:
        async with anyio.create_task_group() as tg:
            for connection in self.connections.values():
                tg.start_soon(connection.first_attempt.wait)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for server in self.config.servers:
            if server.id in self.connections:
                rows.append(self.connections[server.id].status())
            else:
                state = "per-principal" if server.enabled else "disabled"
                rows.append(
                    {
                        "id": server.id,
                        "transport": server.type,
                        "state": state,
                        "sessions": self.sessions_of(server.id),
                        "connects": 0,
                        "breaker": self._breakers[server.id].state.value,
                        "last_error": None,
                    }
                )
        return rows
