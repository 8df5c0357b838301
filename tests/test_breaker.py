"""The circuit breaker's own bookkeeping: its trial calls are given back when they tell nothing."""

from __future__ import annotations

import time

import pytest

from master_mcp.backends.breaker import BreakerState, CircuitBreaker, CircuitOpen
from master_mcp.config.models import CircuitBreakerSettings


def opened(recovery_timeout_s: float = 0.01) -> CircuitBreaker:
    breaker = CircuitBreaker(CircuitBreakerSettings(failure_threshold=1, recovery_timeout_s=recovery_timeout_s))
    breaker.record(ok=False)
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_a_trial_that_told_nothing_gives_its_place_back() -> None:
    breaker = opened()
    time.sleep(0.02)
    assert breaker.check() is True  # the one trial call
    with pytest.raises(CircuitOpen, match="trial calls are under way"):
        breaker.check()
    breaker.release()  # its caller went away
    assert breaker.check() is True  # the next call is the trial now
    breaker.record(ok=True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.check() is False  # a closed breaker's calls are no trials


def test_a_failed_trial_opens_it_again_and_a_release_after_that_changes_nothing() -> None:
    breaker = opened(recovery_timeout_s=60)
    breaker._opened_at -= 61  # as if the pause had passed
    assert breaker.check() is True
    breaker.record(ok=False)
    assert breaker.state is BreakerState.OPEN
    breaker.release()
    with pytest.raises(CircuitOpen, match="failures in a row"):
        breaker.check()
