"""Many waits of the same length, watched by one timer.

The front starts something for a request that has run a while: the stream of a silent call (after 10 s), the
watcher of a 2026-07-28 client going away (after a moment). Most requests end long before. An asyncio timer per
request cost about 35 Python calls (a handle, heap pushes, a cancel), a watcher task per request about 33; here a
request costs a dict entry, and one timer wakes for the oldest wait.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Keys that fall due `after_s` after they were added, unless removed before; `due(key)` is called for each as it
    falls due, from the event loop."""

    def __init__(self, after_s: float, due: Callable[[K], None]) -> None:
        self._after_s = after_s
        self._due = due
        # Every key waits as long, so insertion order is due order: the first entry is the next to fall due.
        self._waiting: dict[K, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, key: K) -> float:
        """Start `key`'s wait. The time returned identifies this wait, for `remove`."""
        loop = asyncio.get_running_loop()
        at = loop.time() + self._after_s
        self._waiting.pop(key, None)  # a key added again waits from now, behind the others
        self._waiting[key] = at
        if self._timer is None:
            self._timer = self._arm(loop, at)
        return at

    def remove(self, key: K, at: float) -> None:
        """End the wait of `key` that `add` began at `at`; a later wait of the same key is its own."""
        if self._waiting.get(key) == at:
            del self._waiting[key]

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> asyncio.TimerHandle:
        # In a context of its own: a timer would otherwise run, and keep alive, the context of whichever request
        # armed it, and its actions would run in that unrelated request's context (its trace, its log fields).
        return loop.call_at(at, self._wake, context=contextvars.Context())

    def _wake(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        fallen: list[K] = []
        while self._waiting:
            key, at = next(iter(self._waiting.items()))
            if at > now:
                self._timer = self._arm(loop, at)
                break
            del self._waiting[key]
            fallen.append(key)
        for key in fallen:  # after the timer is set again: one that fails leaves the rest waiting as they should
            try:
                self._due(key)
            except Exception:
                logger.exception("a deadline's action failed")
