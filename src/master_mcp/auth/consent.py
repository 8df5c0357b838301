"""Remembered consent: which person approved which client to have the master connect backends on their behalf."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

ConsentKey = tuple[str, str, str]  # (issuer, subject, client id)
_MAX_ENTRIES = 100_000


class ConsentStore(Protocol):
    """A small async store (memory here; a Redis twin shares it between replicas)."""

    async def get(self, key: ConsentKey) -> float | None:
        """When the approval was given, or None when there is none."""
        ...

    async def put(self, key: ConsentKey, approved_at: float) -> None: ...


class MemoryConsentStore:
    def __init__(self) -> None:
        self._approvals: OrderedDict[ConsentKey, float] = OrderedDict()

    async def get(self, key: ConsentKey) -> float | None:
        return self._approvals.get(key)

    async def put(self, key: ConsentKey, approved_at: float) -> None:
        self._approvals[key] = approved_at
        self._approvals.move_to_end(key)
        while len(self._approvals) > _MAX_ENTRIES:
            self._approvals.popitem(last=False)
