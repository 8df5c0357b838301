"""Catalog invalidation over Redis pub/sub, between the replicas of one deployment (one channel per key prefix).

A message is `{"origin": <instance id>, "server_id": <id>}`; each master ignores its own. Pub/sub keeps nothing for
a subscriber that was away, so after the subscription comes back from a lost connection every server counts as
changed (`on_change(None)`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from master_mcp.catalog.invalidation import OnChange
from master_mcp.redis_link import RedisLink, StoreUnavailable

logger = logging.getLogger(__name__)

_POLL_S = 1.0
_BACKOFF_START_S = 0.2
_BACKOFF_MAX_S = 5.0


class RedisInvalidation:
    def __init__(self, link: RedisLink, instance: str) -> None:
        self._link = link
        self._instance = instance
        self.channel = link.key("catalog")

    async def publish(self, server_id: str) -> None:
        message = json.dumps({"origin": self._instance, "server_id": server_id})
        await self._link.run(lambda client: client.publish(self.channel, message))

    async def listen(self, on_change: OnChange) -> None:
        backoff = _BACKOFF_START_S
        lost = False
        while True:
            try:
                pubsub = self._link.client.pubsub()
            except StoreUnavailable:
                await anyio.sleep(backoff)
                continue
            try:
                with anyio.fail_after(self._link.timeout_s * 3):
                    await pubsub.subscribe(self.channel)
                if lost:
                    logger.info("catalog sync: Redis at %s is back; re-listing every server", self._link.where)
                    on_change(None)
                lost, backoff = False, _BACKOFF_START_S
                while True:
                    self._deliver(await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_S), on_change)
            except Exception as exc:  # whatever the connection did, the subscription is rebuilt after a pause
                if not lost:
                    error = self._link.unavailable(exc)
                    logger.warning("catalog sync paused: %s; retrying in the background", error)
                lost = True
            finally:
                with anyio.move_on_after(self._link.timeout_s, shield=True):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _deliver(self, message: dict[str, Any] | None, on_change: OnChange) -> None:
        if message is None or message.get("type") != "message":
            return
        try:
            data = json.loads(message["data"])
            origin, server_id = data["origin"], data["server_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("catalog sync: ignored a malformed message on %s", self.channel)
            return
        if origin != self._instance and isinstance(server_id, str):
            on_change(server_id)
