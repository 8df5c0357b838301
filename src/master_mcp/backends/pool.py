"""All backend connections of one master: started together, supervised, looked up by server id."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from master_mcp.backends.connection import BackendConnection, ListingSink
from master_mcp.config.models import MasterConfig

logger = logging.getLogger(__name__)


class BackendPool:
    def __init__(self, config: MasterConfig, on_listing: ListingSink) -> None:
        self.config = config
        self.connections: dict[str, BackendConnection] = {
            server.id: BackendConnection(
                server,
                config.base_dir,
                connect_timeout=config.master.connect_timeout_s,
                on_listing=on_listing,
            )
            for server in config.servers
        }

    def get(self, server_id: str) -> BackendConnection:
        return self.connections[server_id]

    @asynccontextmanager
    async def running(self, *, wait_ready: bool = True) -> AsyncIterator[BackendPool]:
        """Connect every backend in parallel; with `wait_ready`, return once each has had its first attempt."""
        async with anyio.create_task_group() as tg:
            for connection in self.connections.values():
                tg.start_soon(connection.run, name=f"backend:{connection.server_id}")
            if wait_ready:
                await self.wait_first_attempts()
            try:
                yield self
            finally:
                for connection in self.connections.values():
                    connection.stop()
                tg.cancel_scope.cancel()

    async def wait_first_attempts(self) -> None:
        async with anyio.create_task_group() as tg:
            for connection in self.connections.values():
                tg.start_soon(connection.first_attempt.wait)

    def status(self) -> list[dict[str, Any]]:
        return [connection.status() for connection in self.connections.values()]
