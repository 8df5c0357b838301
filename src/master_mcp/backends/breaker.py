"""A circuit breaker per backend: after enough consecutive failures, calls fail at once (and say why) instead of
each waiting for a timeout; after a pause a few trial calls decide whether the backend is back."""

from __future__ import annotations

import time
from enum import StrEnum

from master_mcp.config.models import CircuitBreakerSettings


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpen(Exception):
    """Refused without trying: the backend failed too often just now."""


class CircuitBreaker:
    def __init__(self, settings: CircuitBreakerSettings) -> None:
        self._settings = settings
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._trials = 0

    def check(self) -> bool:
        """Raise `CircuitOpen` when a call must not be tried now; otherwise let it through, and say whether it is a
        trial call (one of `half_open_max_calls`: it must end in `record`, or give its place back with `release`)."""
        if self.state is BreakerState.OPEN:
            waited = time.monotonic() - self._opened_at
            if waited < self._settings.recovery_timeout_s:
                remaining = self._settings.recovery_timeout_s - waited
                raise CircuitOpen(f"{self.failures} failures in a row; next try in {remaining:.0f}s")
            self.state, self._trials = BreakerState.HALF_OPEN, 0
        if self.state is BreakerState.HALF_OPEN:
            if self._trials >= self._settings.half_open_max_calls:
                raise CircuitOpen("trial calls are under way")
            self._trials += 1
            return True
        return False

    def release(self) -> None:
        """A trial call ended telling nothing of the backend (it was cancelled): its place goes to the next call."""
        if self.state is BreakerState.HALF_OPEN and self._trials > 0:
            self._trials -= 1

    def record(self, *, ok: bool) -> None:
        if ok:
            self.state, self.failures = BreakerState.CLOSED, 0
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self._settings.failure_threshold:
            self.state, self._opened_at = BreakerState.OPEN, time.monotonic()
