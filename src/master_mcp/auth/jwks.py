"""The signing keys of the master's authorization server: fetched once, cached, refetched only when it helps.

A key id the cache does not know triggers one refetch (the AS may have rotated its keys), but at most one per
`refetch_interval_s`: a flood of tokens with made-up key ids costs the AS one request, not one each. When the JWKS
endpoint cannot be reached, the keys already held keep verifying tokens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import jwt

logger = logging.getLogger(__name__)

REFETCH_INTERVAL_S = 30.0
MAX_AGE_S = 3600.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A verification key and the algorithm its JWK pins (`alg`), if it pins one."""

    key: Any
    alg: str | None


class JwksError(Exception):
    """No key can verify this token; the message is safe to log (it holds no token)."""


class JwksCache:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        uri: str,
        *,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self._http = http
        self._uri = uri
        self._refetch_interval = refetch_interval_s
        self._max_age = max_age_s
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._failed_at: float | None = None  # last failed fetch, while the endpoint stays unreachable
        self._kid_refetch_at: float | None = None  # last refetch for a key id the cache did not know
        self._lock = anyio.Lock()

    async def key(self, kid: str | None) -> SigningKey:
        """The key with id `kid` (or the only key, when the token names none)."""
        found = self._lookup(kid)
        if found is None or self._stale():
            await self._refresh(wanted=kid)
            found = self._lookup(kid)
        if found is None:
            raise JwksError(f"no signing key with kid {kid!r}" if kid else "the token names no usable key id")
        return found

    def _lookup(self, kid: str | None) -> SigningKey | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self._max_age

    def _recent(self, moment: float | None, now: float) -> bool:
        return moment is not None and now - moment < self._refetch_interval

    async def _refresh(self, *, wanted: str | None) -> None:
        async with self._lock:
            if self._lookup(wanted) is not None and not self._stale():
                return  # another request fetched meanwhile
            now = time.monotonic()
            # Rate limits, so neither made-up key ids nor a dead endpoint cause a request storm: after a failed
            # fetch, none for a while; and one refetch for unknown key ids per interval (held keys are fresh).
            if self._recent(self._failed_at, now):
                return
            unknown_kid = not self._stale()
            if unknown_kid and self._recent(self._kid_refetch_at, now):
                return
            if unknown_kid:
                self._kid_refetch_at = now
            uri = self._uri
            try:
                response = await self._http.get(uri, headers={"accept": "application/json"})
                response.raise_for_status()
                keys = self._parse(response.json())
            except (httpx2.HTTPError, ValueError) as exc:
                self._failed_at = now
                logger.warning(
                    "JWKS fetch from %s failed (%s); keeping %d cached keys", uri, type(exc).__name__, len(self._keys)
                )
                return
            self._keys = keys
            self._fetched_at = now
            self._failed_at = None

    @staticmethod
    def _parse(document: object) -> dict[str, SigningKey]:
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWK set")
        keys: dict[str, SigningKey] = {}
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or curve this build cannot use: skip it, keep the others
            alg = entry.get("alg")
            keys[str(entry.get("kid") or f"#{index}")] = SigningKey(key.key, alg if isinstance(alg, str) else None)
        return keys
