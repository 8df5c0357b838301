"""Namespacing and reverse routing, on the catalog alone (pure data: no backend needed)."""

from __future__ import annotations

from typing import Any

import pytest

from master_mcp.catalog import Catalog, Listing, Route, uri_key
from master_mcp.config import Namespacing, ServerConfig


def server(sid: str, **extra: Any) -> ServerConfig:
    return ServerConfig(id=sid, type="stdio", command="x", **extra)


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object"}, **extra}


def build(mode: str, *servers: tuple[ServerConfig, Listing], separator: str = "__") -> Catalog:
    catalog = Catalog(Namespacing(mode=mode, separator=separator), [s for s, _ in servers])  # type: ignore[arg-type]
    for config, listing in servers:
        catalog.update(config.id, listing)
    return catalog


def names(catalog: Catalog) -> list[str]:
    return [t["name"] for t in catalog.tools]


def test_prefix_mode_keeps_everything_but_the_name() -> None:
    original = tool("search", title="Search", annotations={"readOnlyHint": True}, _meta={"k": 1}, icons=[])
    catalog = build("prefix", (server("a"), Listing(tools=[original])), (server("b"), Listing(tools=[tool("search")])))
    assert names(catalog) == ["a__search", "b__search"]
    assert catalog.tools[0] == {**original, "name": "a__search"}
    assert catalog.resolve_tool("b__search") == Route("b", "search")
    assert catalog.resolve_tool("search") is None


def test_custom_prefix_separator_and_empty_prefix() -> None:
    catalog = build(
        "prefix",
        (server("alpha", prefix="A"), Listing(tools=[tool("x")])),
        (server("beta", prefix=""), Listing(tools=[tool("y")])),
        separator="-",
    )
    assert names(catalog) == ["A-x", "y"]


def test_conditional_prefixes_only_collisions() -> None:
    catalog = build(
        "conditional",
        (server("a"), Listing(tools=[tool("search"), tool("only_a")])),
        (server("b"), Listing(tools=[tool("search"), tool("only_b")])),
    )
    assert names(catalog) == ["a__search", "only_a", "b__search", "only_b"]
    assert catalog.problems("a") == catalog.problems("b") == []


def test_none_mode_collision_is_an_error_naming_server_and_tool() -> None:
    catalog = build(
        "none",
        (server("a"), Listing(tools=[tool("search")])),
        (server("b"), Listing(tools=[tool("search"), tool("other")])),
    )
    assert names(catalog) == ["search", "other"]
    assert catalog.resolve_tool("search") == Route("a", "search")
    [problem] = catalog.problems("b")
    assert "tool 'search'" in problem and "server 'a'" in problem


def test_conditional_prefixed_name_that_is_already_taken() -> None:
    catalog = build(
        "conditional",
        (server("a"), Listing(tools=[tool("x"), tool("b__x")])),
        (server("b"), Listing(tools=[tool("x")])),
    )
    assert catalog.problems("b") and "front name 'b__x' is already taken" in catalog.problems("b")[0]


@pytest.mark.parametrize("bad", ["has.dot", "has space", "x" * 70])
def test_invalid_front_names_are_errors_naming_server_and_tool(bad: str) -> None:
    catalog = build("prefix", (server("a"), Listing(tools=[tool(bad), tool("fine")])))
    assert names(catalog) == ["a__fine"]
    [problem] = catalog.problems("a")
    assert repr(bad) in problem and "^[a-zA-Z0-9_-]{1,64}$" in problem


def test_filters_allow_then_deny() -> None:
    rules = {"allow": ["read_*", "list"], "deny": ["read_secret*"]}
    listing = Listing(tools=[tool(n) for n in ("read_file", "read_secret_key", "list", "write_file")])
    catalog = build("prefix", (server("fs", tools=rules), listing))
    assert names(catalog) == ["fs__read_file", "fs__list"]


def test_uri_mapping_is_reversible_and_templates_match() -> None:
    listing = Listing(
        resources=[{"uri": "file:///etc/hosts", "name": "hosts"}],
        templates=[{"uriTemplate": "file:///logs/{day}.txt", "name": "log"}],
    )
    catalog = build("prefix", (server("my_fs"), listing), (server("9lives"), listing))
    front = [r["uri"] for r in catalog.resources]
    assert front == ["my-fs+file:///etc/hosts", "s9lives+file:///etc/hosts"]
    assert catalog.resolve_resource(front[1]) == Route("9lives", "file:///etc/hosts")
    assert catalog.resolve_resource("my-fs+file:///logs/monday.txt") == Route("my_fs", "file:///logs/monday.txt")
    assert catalog.resolve_resource("my-fs+file:///not/listed") == Route("my_fs", "file:///not/listed")
    assert catalog.resolve_resource("other+file:///x") is None
    assert catalog.uri_to_front("my_fs", "file:///a b") == "my-fs+file:///a b"
    assert uri_key("Git_Hub") == "git-hub"


def test_conditional_uris_pass_through_unless_they_collide() -> None:
    a = Listing(resources=[{"uri": "test://static", "name": "s"}, {"uri": "a://own", "name": "o"}])
    b = Listing(resources=[{"uri": "test://static", "name": "s"}])
    catalog = build("conditional", (server("a"), a), (server("b"), b))
    assert [r["uri"] for r in catalog.resources] == ["a+test://static", "a://own", "b+test://static"]
    assert catalog.resolve_resource("a://own") == Route("a", "a://own")
    assert catalog.resolve_resource("b+test://static") == Route("b", "test://static")


def test_a_dropped_backend_leaves_the_catalog() -> None:
    catalog = build("prefix", (server("a"), Listing(tools=[tool("x")])), (server("b"), Listing(tools=[tool("y")])))
    catalog.update("a", None)
    assert names(catalog) == ["b__y"]
    assert catalog.resolve_tool("a__x") is None
