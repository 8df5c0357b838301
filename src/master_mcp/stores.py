"""What a master keeps beyond its own process, built from `master.store`: the one place that reads its `type`.

| type   | token blobs        | pending OAuth flows | consent records | catalog invalidation |
|--------|--------------------|---------------------|-----------------|----------------------|
| memory | memory             | memory              | memory          | none (one master)    |
| sqlite | one SQLite file    | memory              | memory          | none (one master)    |
| redis  | Redis              | Redis (TTL, atomic) | Redis           | Redis pub/sub        |
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import anyio

from master_mcp.auth.consent import ConsentStore, MemoryConsentStore
from master_mcp.auth.crypto import MasterKeyError, Sealer, key_from_environment
from master_mcp.auth.flow_state import FlowStore, MemoryFlowStore
from master_mcp.auth.redis_store import RedisBlobStore, RedisConsentStore, RedisFlowStore
from master_mcp.auth.store import BlobStore, MemoryBlobStore, SQLiteBlobStore
from master_mcp.catalog.invalidation import Invalidation, LocalInvalidation
from master_mcp.config.models import TokenStoreSettings
from master_mcp.redis_link import RedisLink, StoreUnavailable
from master_mcp.sync import RedisInvalidation


def _flow_sealer() -> Sealer:
    """Flow records in Redis are sealed with the deployment's key, so every replica can open them. An unset key
    gives a key of this process only; the auth layer refuses to start where flows must cross replicas without one,
    and reports a malformed key as a config error."""
    try:
        return Sealer(key_from_environment(required=False))
    except MasterKeyError:
        return Sealer(secrets.token_bytes(32))


class Stores:
    def __init__(self, settings: TokenStoreSettings, base_dir: Path) -> None:
        self.settings = settings
        self._base_dir = base_dir
        # Tells this master's own invalidation messages from the other replicas'.
        self.instance = uuid.uuid4().hex
        self.link: RedisLink | None = None
        self.flows: FlowStore = MemoryFlowStore()
        self.consents: ConsentStore = MemoryConsentStore()
        self.invalidation: Invalidation = LocalInvalidation()
        if settings.type == "redis" and settings.url is not None:
            self.link = RedisLink(settings.url, settings.key_prefix, settings.timeout_s)
            self.flows = RedisFlowStore(self.link, _flow_sealer())
            self.consents = RedisConsentStore(self.link)
            self.invalidation = RedisInvalidation(self.link, self.instance)

    def token_blobs(self) -> BlobStore:
        """Where sealed tokens go; asked for only when some backend's strategy stores tokens."""
        if self.link is not None:
            return RedisBlobStore(self.link)
        if self.settings.type == "sqlite":
            path = Path(self.settings.path)
            return SQLiteBlobStore(path if path.is_absolute() else self._base_dir / path)
        return MemoryBlobStore()

    async def open(self) -> None:
        """With the master: connect (Redis) and check the store answers; raises `StoreUnavailable` if not."""
        if self.link is not None:
            await self.link.open()

    async def status(self) -> dict[str, object]:
        """For `/readyz`: the store's type, and for Redis whether it answers a ping now (bounded by its timeout).
        Names the host and port only, never the URL, which may carry a password."""
        if self.link is None:
            return {"type": self.settings.type}
        link = self.link
        error: str | None = "no answer in time"
        with anyio.move_on_after(link.timeout_s):
            try:
                await link.run(lambda client: client.ping())
                error = None
            except StoreUnavailable as exc:
                error = str(exc)
        return {"type": "redis", "at": link.where, "up": error is None, "error": error}

    async def aclose(self) -> None:
        if self.link is not None:
            await self.link.aclose()
