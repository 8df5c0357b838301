"""Backend HTTP connections are reused from call to call, and a response body that does not end is still closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession

from master_mcp.backends.keepalive import KeepAliveTransport
from master_mcp.backends.transports import open_transport
from tests.conftest import HttpBackend, make_config

pytestmark = pytest.mark.anyio


async def test_calls_to_an_http_backend_share_one_connection(http_backend: HttpBackend, tmp_path: Path) -> None:
    server = make_config({"id": "remote", "type": "http", "url": http_backend.url}).servers[0]
    streams: list[Any] = []  # held, so an id is never reused by a later object

    async def seen(response: httpx2.Response) -> None:
        if response.request.method == "POST":
            streams.append(response.extensions["network_stream"])

    async with open_transport(server, tmp_path, on_response=seen) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        before = len(streams)
        for i in range(10):
            result = await s.call_tool("echo", {"text": str(i)})
            assert not result.is_error
    calls = streams[before:]
    assert len(calls) >= 10  # the SDK client lists the tools once, to validate results against their schema
    # Without reading each event stream to its end, every call opened a connection of its own. Two at most: the
    # `initialized` notice may go out while the first connection is still busy opening the standalone stream.
    assert len({id(stream) for stream in calls}) <= 2


async def test_a_response_that_does_not_end_is_closed_anyway(http_backend: HttpBackend) -> None:
    """A POST whose event stream stays open (a slow tool) is closed when its reader stops, after a short drain."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    async with httpx2.AsyncClient(transport=KeepAliveTransport(), timeout=10) as http:
        opened = await http.post(
            http_backend.url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
        )
        headers["mcp-session-id"] = opened.headers["mcp-session-id"]
        await http.post(
            http_backend.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
        )
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 30}},
        }
        with anyio.fail_after(5):
            async with http.stream("POST", http_backend.url, headers=headers, json=call) as response:
                assert response.status_code == 200
            # The next request still gets through (on a new connection: the unfinished one was closed).
            pong = await http.post(
                http_backend.url, headers=headers, json={"jsonrpc": "2.0", "id": 3, "method": "ping"}
            )
            assert pong.status_code == 200
