"""The token store's blobs and the pending OAuth flows in Redis, shared by every replica of the master.

Same protocols as their memory / SQLite twins: `RedisBlobStore` keeps the sealed blobs `TokenStore` makes (the same
names, the same AES-GCM), `RedisFlowStore` keeps flow records that expire by Redis TTL and are taken atomically, so a
flow started on one replica completes on another and each id is spent once across all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from master_mcp.auth.consent import ConsentKey
from master_mcp.auth.crypto import Sealer, SealError
from master_mcp.auth.flow_state import FLOW_TTL_S, PendingFlow, PendingState
from master_mcp.auth.principal import Principal
from master_mcp.redis_link import RedisLink

logger = logging.getLogger(__name__)


class RedisBlobStore:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, name: str) -> str:
        return self._link.key("token", name)

    async def get(self, name: str) -> bytes | None:
        return _as_bytes(await self._link.run(lambda client: client.get(self._key(name))))

    async def put(self, name: str, blob: bytes) -> None:
        await self._link.run(lambda client: client.set(self._key(name), blob))

    async def delete(self, name: str) -> None:
        await self._link.run(lambda client: client.delete(self._key(name)))

    async def close(self) -> None:
        """Nothing of its own to close: the link belongs to the master and is closed with it."""


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # The client is made without decode_responses, so Redis answers bytes; the library's types allow str too.
    return value.encode() if isinstance(value, str) else value


def _principal_record(principal: Principal) -> dict[str, Any]:
    # The client's own bearer token stays out: a flow needs only who the principal is.
    return {
        "issuer": principal.issuer,
        "subject": principal.subject,
        "scopes": sorted(principal.scopes),
        "audiences": sorted(principal.audiences),
        "client_id": principal.client_id,
    }


def _principal(record: dict[str, Any]) -> Principal:
    client_id = record.get("client_id")
    return Principal(
        str(record["issuer"]),
        str(record["subject"]),
        frozenset(record.get("scopes", ())),
        audiences=frozenset(record.get("audiences", ())),
        client_id=client_id if isinstance(client_id, str) else None,
    )


def _flow_record(flow: PendingFlow) -> bytes:
    record = {"principal": _principal_record(flow.principal), "server_id": flow.server_id, "created": flow.created}
    return json.dumps(record).encode()


def _state_record(pending: PendingState) -> bytes:
    record = {
        "principal": _principal_record(pending.principal),
        "server_id": pending.server_id,
        "code_verifier": pending.code_verifier,
        "browser": pending.browser,
        "return_to": pending.return_to,
        "flow_id": pending.flow_id,
        "created": pending.created,
        "purpose": pending.purpose,
        "scope": pending.scope,
    }
    return json.dumps(record).encode()


def _load(blob: bytes | str | None) -> dict[str, Any] | None:
    if blob is None:
        return None
    try:
        record = json.loads(blob)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class RedisFlowStore:
    """Records live under a digest of their id (a reader of the database cannot replay a live link or state) and are
    sealed like tokens (a PKCE verifier is a credential too); Redis expires them after `ttl_s`."""

    def __init__(self, link: RedisLink, sealer: Sealer, ttl_s: float = FLOW_TTL_S) -> None:
        self._link = link
        self._sealer = sealer
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def _open(self, key: str, blob: bytes | str | None) -> dict[str, Any] | None:
        sealed = _as_bytes(blob)
        if sealed is None:
            return None
        try:
            return _load(self._sealer.open(sealed, key.encode()))
        except SealError:
            logger.warning("a pending OAuth flow record in Redis failed authentication; ignoring it")
            return None

    def _key(self, kind: str, value: str) -> str:
        return self._link.key(kind, hashlib.sha256(value.encode()).hexdigest())

    async def _put(self, key: str, blob: bytes) -> None:
        sealed = self._sealer.seal(blob, key.encode())
        await self._link.run(lambda client: client.set(key, sealed, px=self._ttl_ms))

    async def _take(self, key: str) -> dict[str, Any] | None:
        # GET and DEL in one MULTI/EXEC: of two replicas taking the same id at once, one gets it and the other
        # nothing. (GETDEL would need Redis 6.2.)
        async def get_and_delete(client: Any) -> Any:
            async with client.pipeline(transaction=True) as pipe:
                return await pipe.get(key).delete(key).execute()

        blob, _ = await self._link.run(get_and_delete)
        return self._open(key, blob)

    async def put_flow(self, flow_id: str, flow: PendingFlow) -> None:
        await self._put(self._key("flow", flow_id), _flow_record(flow))

    async def take_flow(self, flow_id: str) -> PendingFlow | None:
        record = await self._take(self._key("flow", flow_id))
        if record is None:
            return None
        created = float(record.get("created") or time.time())
        return PendingFlow(_principal(record["principal"]), str(record["server_id"]), created)

    async def put_state(self, state: str, pending: PendingState) -> None:
        await self._put(self._key("state", state), _state_record(pending))

    async def peek_state(self, state: str) -> PendingState | None:
        key = self._key("state", state)
        return _pending(self._open(key, await self._link.run(lambda client: client.get(key))))

    async def take_state(self, state: str) -> PendingState | None:
        return _pending(await self._take(self._key("state", state)))


def _pending(record: dict[str, Any] | None) -> PendingState | None:
    if record is None:
        return None
    return PendingState(
        principal=_principal(record["principal"]),
        server_id=str(record["server_id"]),
        code_verifier=str(record["code_verifier"]),
        browser=str(record["browser"]),
        return_to=record.get("return_to"),
        flow_id=str(record.get("flow_id") or ""),
        created=float(record.get("created") or time.time()),
        purpose=str(record.get("purpose") or "backend"),
        scope=record.get("scope"),
    )


class RedisConsentStore:
    """Approvals of (person, client), shared by every replica; kept under a digest of the key, no expiry."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, key: ConsentKey) -> str:
        return self._link.key("consent", hashlib.sha256(json.dumps(list(key)).encode()).hexdigest())

    async def get(self, key: ConsentKey) -> float | None:
        name = self._key(key)
        value = _as_bytes(await self._link.run(lambda client: client.get(name)))
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    async def put(self, key: ConsentKey, approved_at: float) -> None:
        name = self._key(key)
        await self._link.run(lambda client: client.set(name, repr(approved_at).encode()))
