"""The token store: per (issuer, subject, server_id), sealed with AES-GCM, over a small blob protocol.

`TokenStore` does the sealing; a `BlobStore` only keeps bytes (memory, SQLite; Redis can follow the same shape).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import anyio.to_thread

from master_mcp.auth.crypto import Sealer, SealError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenKey:
    issuer: str
    subject: str
    server_id: str

    @property
    def name(self) -> str:
        return json.dumps([self.issuer, self.subject, self.server_id])


@dataclass(frozen=True, slots=True)
class StoredToken:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    token_type: str = "Bearer"

    def expired(self, leeway_s: float = 30.0) -> bool:
        return self.expires_at is not None and self.expires_at - leeway_s <= time.time()

    @classmethod
    def from_response(cls, data: dict[str, object], previous: StoredToken | None = None) -> StoredToken:
        """Build from an OAuth token response; a refresh response may omit the refresh token and scope."""
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("token response has no access_token")
        refresh = data.get("refresh_token")
        expires_in = data.get("expires_in")
        scope = data.get("scope")
        return cls(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) else (previous.refresh_token if previous else None),
            expires_at=time.time() + float(expires_in) if isinstance(expires_in, int | float) else None,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (previous.scopes if previous else ()),
            token_type=str(data.get("token_type") or "Bearer"),
        )


class BlobStore(Protocol):
    async def get(self, name: str) -> bytes | None: ...
    async def put(self, name: str, blob: bytes) -> None: ...
    async def delete(self, name: str) -> None: ...
    async def close(self) -> None: ...


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    async def get(self, name: str) -> bytes | None:
        return self._blobs.get(name)

    async def put(self, name: str, blob: bytes) -> None:
        self._blobs[name] = blob

    async def delete(self, name: str) -> None:
        self._blobs.pop(name, None)

    async def close(self) -> None:
        self._blobs.clear()


class SQLiteBlobStore:
    """One table in one file; calls run in a worker thread so the event loop never blocks on disk."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS tokens (name TEXT PRIMARY KEY, blob BLOB NOT NULL)")
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple[object, ...]) -> list[tuple[bytes]]:
        with self._lock:
            return list(self._db.execute(sql, args))

    async def get(self, name: str) -> bytes | None:
        rows = await anyio.to_thread.run_sync(self._run, "SELECT blob FROM tokens WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    async def put(self, name: str, blob: bytes) -> None:
        sql = "INSERT INTO tokens (name, blob) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET blob = excluded.blob"
        await anyio.to_thread.run_sync(self._run, sql, (name, blob))

    async def delete(self, name: str) -> None:
        await anyio.to_thread.run_sync(self._run, "DELETE FROM tokens WHERE name = ?", (name,))

    async def close(self) -> None:
        with self._lock:
            self._db.close()


class TokenStore:
    def __init__(self, blobs: BlobStore, sealer: Sealer) -> None:
        self._blobs = blobs
        self._sealer = sealer
        # Whether what is stored outlives this process (tokens a user granted should).
        self.persistent = not isinstance(blobs, MemoryBlobStore)

    async def get(self, key: TokenKey) -> StoredToken | None:
        blob = await self._blobs.get(key.name)
        if blob is None:
            return None
        try:
            data = json.loads(self._sealer.open(blob, key.name.encode()))
            return StoredToken(**{**data, "scopes": tuple(data.get("scopes", ()))})
        except (SealError, ValueError, TypeError):
            # Fail closed: a credential that does not authenticate is never used, and is removed.
            logger.warning("stored token for server %s failed authentication; discarding it", key.server_id)
            await self._blobs.delete(key.name)
            return None

    async def put(self, key: TokenKey, token: StoredToken) -> None:
        await self._blobs.put(key.name, self._sealer.seal(json.dumps(asdict(token)).encode(), key.name.encode()))

    async def delete(self, key: TokenKey) -> None:
        await self._blobs.delete(key.name)

    async def close(self) -> None:
        await self._blobs.close()
