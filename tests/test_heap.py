"""The serving master's collector settings (heap.py) keep collecting what calls leave in reference cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from master_mcp import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def settled() -> Iterator[None]:
    before = gc.get_threshold()
    heap.settle()
    try:
        yield
    finally:  # this test process goes on with its own settings
        gc.unfreeze()
        gc.set_threshold(*before)


def test_settling_freezes_the_start_up_heap(settled: None) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD


def test_cycles_made_after_settling_are_still_collected_without_being_asked(settled: None) -> None:
    first = _Node()
    gone = weakref.ref(first)
    del first
    # No gc.collect() here: the young generation's own threshold must come round.
    for _ in range(2 * heap.YOUNG_THRESHOLD):
        _Node()
        if gone() is None:
            break
    assert gone() is None


def test_thawing_hands_the_frozen_heap_back_to_the_collector(settled: None) -> None:
    heap.thaw()
    assert gc.get_freeze_count() == 0
