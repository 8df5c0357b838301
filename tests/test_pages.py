"""List pages are served in their wire form from memory, per protocol era, and never outlive a catalog change."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from mcp import Client

from tests.conftest import make_config, serve_master, stdio_server, wait_until

pytestmark = pytest.mark.anyio


async def names(client: Client) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        found |= {tool.name for tool in page.tools}
        if (cursor := page.next_cursor) is None:
            return found


async def test_pages_are_the_same_in_both_eras_and_follow_changes() -> None:
    config = make_config(stdio_server("live", "--extra-tools", "20"), page_size=10)
    async with (
        serve_master(config) as (master, url),
        Client(url, mode="legacy") as legacy,
        Client(url, mode="2026-07-28") as modern,
    ):
        first = await names(legacy)
        assert await names(legacy) == first  # served again from the kept pages
        assert await names(modern) == first  # the other era's pages are its own
        version = master.catalog.version
        await legacy.call_tool("live__add_tool_later", {"name": "fresh"})
        with_new = first | {"live__fresh"}
        # Both eras had pages kept from before the change; none of them may be served after it.
        await wait_until(lambda: master.catalog.version != version)
        assert await names(legacy) == with_new
        assert await names(modern) == with_new


async def test_a_list_request_with_bad_params_is_still_refused() -> None:
    """Only a plain request (a string cursor at most) is answered from the kept pages; the rest is validated."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}

    async def post(http: httpx2.AsyncClient, url: str, body: dict[str, Any]) -> str:
        response = await http.post(url, headers=headers, json={"jsonrpc": "2.0", **body})
        headers.setdefault("mcp-session-id", response.headers.get("mcp-session-id", ""))
        return response.text

    async with serve_master(make_config(stdio_server("live"))) as (_, url), httpx2.AsyncClient(timeout=10) as http:
        await post(http, url, {"id": 1, "method": "initialize", "params": init})
        await post(http, url, {"method": "notifications/initialized"})
        assert "live__echo" in await post(http, url, {"id": 2, "method": "tools/list", "params": {}})
        assert "live__echo" in await post(http, url, {"id": 3, "method": "tools/list", "params": {}})
        refused = await post(http, url, {"id": 4, "method": "tools/list", "params": {"cursor": 5}})
        assert '"error"' in refused and "live__echo" not in refused
