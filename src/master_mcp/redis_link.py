"""The master's one Redis client (`master.store.type: redis`): opened with the master, closed with it, every call
bounded in time, every failure a `StoreUnavailable` that names host:port and never the URL (it may hold a password).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_HEALTH_CHECK_S = 10


class StoreUnavailable(Exception):
    """The shared store cannot be reached (or refused the request); the message names it by host:port only."""


def redis_address(url: str) -> str:
    """host:port of a redis:// or rediss:// URL: what may be shown of it."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: BaseException) -> str:
    # Redis error texts name the address and the failure ("Connection refused", "WRONGPASS ..."), never the password.
    return str(exc).strip() or type(exc).__name__


class RedisLink:
    """Keys are `key_prefix` + the name each store gives; several masters (or deployments) can share a server."""

    def __init__(self, url: str, key_prefix: str, timeout_s: float) -> None:
        self._url = url
        self.prefix = key_prefix
        self.where = redis_address(url)
        self.timeout_s = timeout_s
        self._client: Redis | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable(f"the Redis store at {self.where} is not open (the master is not running)")
        return self._client

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"the Redis store at {self.where} cannot be used: {_reason(exc)}")

    async def open(self) -> None:
        """Connect and check the server answers: at start, an unreachable store is an error, not a fallback."""
        # Bounded everywhere: a lost server costs a call a few seconds, never a hang; the pool reconnects by itself
        # on the next command once the server is back.
        self._client = Redis.from_url(
            self._url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            health_check_interval=_HEALTH_CHECK_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        )
        try:
            await self.run(lambda client: client.ping())
        except StoreUnavailable:
            await self.aclose()
            raise
        logger.info("shared store: Redis at %s", self.where)

    async def run(self, operation: Callable[[Redis], Awaitable[_T]]) -> _T:
        """One operation on the client; any failure (or a call slower than its bound) becomes `StoreUnavailable`."""
        client = self.client
        try:
            # The socket timeouts bound each attempt; this bounds the retries too.
            with anyio.fail_after(self.timeout_s * 3):
                return await operation(client)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self.unavailable(exc) from None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.move_on_after(self.timeout_s, shield=True):
                await client.aclose()
