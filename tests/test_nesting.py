"""The depth bound on forwarded params (`relay.nesting_depth`), against a plain recursive count."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from master_mcp.relay import MAX_DEPTH, forward_params, nesting_depth

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@given(json_values)
def test_the_depth_is_the_deepest_path(value: Any) -> None:
    assert nesting_depth(value) == depth_of(value)


@given(json_values, st.integers(min_value=0, max_value=6))
def test_counting_stops_one_level_past_the_bound(value: Any, beyond: int) -> None:
    assert nesting_depth(value, beyond) == min(depth_of(value), beyond + 1)


def test_a_value_far_deeper_than_the_stack_is_refused_without_recursing() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert nesting_depth({"arguments": {"x": deep}}) == MAX_DEPTH + 1
    wide_and_shallow = {"arguments": {str(n): [n, {"n": n}] for n in range(1_000)}}
    assert forward_params(wide_and_shallow) == wide_and_shallow
