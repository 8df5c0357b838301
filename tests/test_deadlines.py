"""`Deadlines`: many waits of one length behind one timer (real event loop, short waits)."""

from __future__ import annotations

import contextvars

import anyio
import pytest

from master_mcp.deadlines import Deadlines

pytestmark = pytest.mark.anyio


async def test_each_key_falls_due_once_in_order_unless_removed() -> None:
    fallen: list[str] = []
    waits = Deadlines(0.5, fallen.append)
    first = waits.add("a")
    await anyio.sleep(0.05)
    waits.add("b")
    await anyio.sleep(0.05)
    waits.add("c")
    waits.remove("a", first)  # ended before it fell due: never reported
    await anyio.sleep(0.8)
    assert fallen == ["b", "c"] and len(waits) == 0


async def test_a_key_added_again_waits_from_then_and_keeps_its_own_wait() -> None:
    fallen: list[str] = []
    waits = Deadlines(2.0, fallen.append)
    stale = waits.add("id")
    await anyio.sleep(0.6)
    fresh = waits.add("id")  # the same key again (a reused request id)
    waits.add("other")
    waits.remove("id", stale)  # the first wait's end leaves the second alone
    await anyio.sleep(1.45)  # ends just past the first wait's time: a late loop has 0.55 s before the second's
    assert fallen == []  # the first wait's time has passed, the second's not
    await anyio.sleep(0.8)
    assert fallen == ["id", "other"]
    waits.remove("id", fresh)  # after it fell due: nothing left to remove
    assert len(waits) == 0


async def test_an_action_that_fails_leaves_the_others_to_fall_due(caplog: pytest.LogCaptureFixture) -> None:
    fallen: list[str] = []

    def due(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        fallen.append(key)

    waits = Deadlines(0.05, due)
    waits.add("bad")
    waits.add("good")
    await anyio.sleep(0.02)
    waits.add("later")
    await anyio.sleep(0.15)
    assert fallen == ["good", "later"]
    assert "a deadline's action failed" in caplog.text


async def test_actions_run_in_a_context_of_their_own_not_the_one_that_armed_the_timer() -> None:
    # The first key's adder armed the timer; its context (a request's trace, its log fields) is not the others'.
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[str] = []
    waits = Deadlines(0.05, lambda key: seen.append(request.get()))
    request.set("first")
    waits.add("a")
    waits.add("b")
    await anyio.sleep(0.2)
    assert seen == ["none", "none"]
