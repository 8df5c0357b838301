"""Namespacing modes through a real master: names and URIs as a client sees them, and collisions."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import make_config, serve_master, stdio_server

pytestmark = pytest.mark.anyio


async def test_conditional_mode_passes_names_through_and_prefixes_collisions() -> None:
    config = make_config(
        stdio_server("alpha", "--name", "alpha"),
        stdio_server("beta", "--name", "beta", "--extra-tools", "1"),
        namespacing={"mode": "conditional"},
    )
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        # Every fixture tool exists on both, so all collide, except beta's extra tool.
        assert "extra_0" in names and "alpha__search" in names and "beta__search" in names
        assert "search" not in names
        assert (await client.call_tool("extra_0", {"value": 4})).content[0].text == "extra 0: 4"  # type: ignore[union-attr]
        uris = {r.uri for r in (await client.list_resources()).resources}
        assert uris == {"alpha+fixture://static", "beta+fixture://static"}
        assert master.catalog.problems("alpha") == master.catalog.problems("beta") == []


async def test_none_mode_keeps_backend_names_and_reports_collisions() -> None:
    config = make_config(
        stdio_server("alpha", "--name", "alpha"),
        stdio_server("beta", "--name", "beta"),
        namespacing={"mode": "none"},
    )
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert len(names) == len(set(names)) and "search" in names
        # The first server in config order keeps a colliding name.
        assert (await client.call_tool("search", {"query": "q"})).content[0].text == "alpha:q"  # type: ignore[union-attr]
        problems = master.catalog.problems("beta")
        assert any("tool 'search'" in p and "server 'alpha'" in p for p in problems)
        _, servers = master.readiness()
        assert [p for s in servers for p in s["problems"]] == problems
        with pytest.raises(MCPError, match="beta__search"):
            await client.call_tool("beta__search", {"query": "q"})


async def test_single_backend_in_none_mode_is_transparent() -> None:
    config = make_config(stdio_server("only"), namespacing={"mode": "none"})
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        read = await client.read_resource("fixture://item/3")
        assert read.contents[0].uri == "fixture://item/3"
        link = (await client.call_tool("links", {})).content[0]
        assert link.uri == "fixture://static"  # type: ignore[union-attr]
