"""A real third-party backend behind the master: the npm package @modelcontextprotocol/server-everything, over
stdio and over streamable HTTP. Its progress, sampling, elicitation, roots, logging and the tools it registers
after `initialize` (for clients with those capabilities) all reach an SDK client of the master."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

from tests.conftest import ServerProcess, free_port, make_config, node_in, npm_install, serve_master, wait_until

pytestmark = pytest.mark.anyio

PACKAGE = "@modelcontextprotocol/server-everything@2026.8.31"


@pytest.fixture(scope="module")
def everything() -> tuple[str, str]:
    folder = npm_install("server-everything", PACKAGE)
    return node_in(folder), str(
        folder / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    )


@pytest.fixture(params=["stdio", "http"])
def backend(request: pytest.FixtureRequest, everything: tuple[str, str]) -> Iterator[dict[str, Any]]:
    node, entry = everything
    if request.param == "stdio":
        yield {"id": "everything", "type": "stdio", "command": node, "args": [entry, "stdio"], "timeout_s": 30}
        return
    port = free_port()
    process = ServerProcess([node, entry, "streamableHttp"], port, env={**os.environ, "PORT": str(port)})
    try:
        yield {"id": "everything", "type": "http", "url": f"http://127.0.0.1:{port}/mcp", "timeout_s": 30}
    finally:
        process.stop()


class Capable:
    """A client that can do everything server-everything asks of one, recording what it was asked."""

    def __init__(self) -> None:
        self.sampled: list[str] = []
        self.elicited: list[str] = []
        self.logs: list[Any] = []
        self.progress: list[float] = []

    async def sampling(self, ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        self.sampled.append(content.text if isinstance(content, types.TextContent) else "?")
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="m")

    async def elicitation(self, ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicited.append(params.mode or "form")
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace"})

    async def roots(self, ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///home/ada/project", name="project")])

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(progress)

    def client(self, url: str) -> Client:
        return Client(
            url,
            mode="legacy",
            sampling_callback=self.sampling,
            elicitation_callback=self.elicitation,
            list_roots_callback=self.roots,
            logging_callback=self.log,
        )


def joined(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def test_server_everything_through_the_master(backend: dict[str, Any]) -> None:
    me = Capable()
    async with serve_master(make_config(backend)) as (_, url), me.client(url) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "everything__echo" in names
        # registered after initialize, for clients that can answer such requests
        assert {"everything__trigger-sampling-request", "everything__get-roots-list"} <= names
        assert "everything__trigger-elicitation-request" in names

        long_run = await client.call_tool(
            "everything__trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=me.on_progress,
        )
        assert not long_run.is_error and me.progress == [1, 2, 3]

        sampled = await client.call_tool("everything__trigger-sampling-request", {"prompt": "meaning of life?"})
        assert "42" in joined(sampled) and me.sampled

        elicited = await client.call_tool("everything__trigger-elicitation-request", {})
        assert "Ada Lovelace" in joined(elicited) and "form" in me.elicited

        roots = await client.call_tool("everything__get-roots-list", {})
        assert "file:///home/ada/project" in joined(roots)

        if "everything__trigger-url-elicitation" in names:
            url_elicited = await client.call_tool(
                "everything__trigger-url-elicitation", {"url": "https://example.com/consent", "message": "please"}
            )
            assert not url_elicited.is_error and "url" in me.elicited

        await client.set_logging_level("debug")
        await client.call_tool("everything__toggle-simulated-logging", {})
        await wait_until(lambda: len(me.logs) > 0, timeout=30)
