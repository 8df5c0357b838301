"""Catalog invalidation between replicas: a backend's `list_changed` seen by one master makes the others re-list.

`LocalInvalidation` is the single-master case (nothing to tell anyone); `master_mcp.sync.RedisInvalidation` carries
the news over Redis pub/sub when several replicas share a store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio

# Called with the id of the server whose lists changed, or None: news may have been missed, re-list every server.
OnChange = Callable[[str | None], None]


class Invalidation(Protocol):
    async def publish(self, server_id: str) -> None:
        """Tell the other replicas that `server_id`'s lists changed."""
        ...

    async def listen(self, on_change: OnChange) -> None:
        """Deliver the other replicas' news to `on_change` until cancelled (never the news this one published)."""
        ...


class LocalInvalidation:
    async def publish(self, server_id: str) -> None:
        return None

    async def listen(self, on_change: OnChange) -> None:
        await anyio.sleep_forever()
