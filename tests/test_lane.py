"""The 2026-07-28 lane (`backends/lane.py`): 2026-07-28 front requests whose client can answer nothing reach a
streamable-HTTP backend in their own era, and what the backend announces only to 2026-07-28 listeners still
reaches every front session. Real backend processes over HTTP, a real master on loopback, the SDK `Client`."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from master_mcp.server import MasterServer
from tests.conftest import HttpBackend, OAuthBackend, make_config, serve_master, text, wait_until
from tests.test_faults import FaultyHttp

pytestmark = pytest.mark.anyio

MODERN = "io.modelcontextprotocol/protocolVersion"


@pytest.fixture(scope="module")
def backend() -> Any:
    process = HttpBackend("--name", "remote")
    yield process
    process.stop()


def lanes_open(master: MasterServer, server_id: str) -> bool:
    connections = [c for c in master.pool.live() if c.server_id == server_id]
    return bool(connections) and all(c.has_lane for c in connections)


async def on_the_lane(master: MasterServer, client: Client, tool: str) -> None:
    """The first call that could take the lane opens it (that call takes the session): wait until it is open."""
    await client.call_tool(tool, {})
    await wait_until(lambda: lanes_open(master, tool.split("__")[0]))


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)

    def of(self, kind: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]


async def test_a_2026_client_is_served_in_its_era_and_a_handshake_client_on_the_session(backend: HttpBackend) -> None:
    async with (
        serve_master(make_config({"id": "remote", "type": "http", "url": backend.url})) as (master, url),
        Client(url, mode="2026-07-28") as modern,
        Client(url, mode="legacy") as legacy,
    ):
        await on_the_lane(master, modern, "remote__show_meta")
        seen = json.loads(text(await modern.call_tool("remote__show_meta", {})))
        assert seen[MODERN] == "2026-07-28"
        assert seen["io.modelcontextprotocol/clientInfo"]["name"] == "master-mcp"  # the lane's, not the client's
        assert seen["io.modelcontextprotocol/clientCapabilities"] == {}
        assert MODERN not in json.loads(text(await legacy.call_tool("remote__show_meta", {})))
        # An argument the tool's schema mirrors into a header goes in it: the backend checks that it does.
        assert text(await modern.call_tool("remote__regional", {"region": "eu-west"})) == "eu-west"
        # An input-required result passes through, and the retry with its requestState goes back to the backend.
        assert text(await modern.call_tool("remote__two_rounds", {})) == "second round after round-1"
        # Resources, prompts and completions take the lane too; lists stay the master's.
        read = await modern.read_resource("remote+fixture://item/7")
        assert (
            isinstance(read.contents[0], types.TextResourceContents) and read.contents[0].text == "item 7 from remote"
        )
        prompt = await modern.get_prompt("remote__greet", {"name": "Ada"})
        assert prompt.messages
        counts = json.loads(text(await modern.call_tool("remote__request_counts", {})))
    # One handshake session and one lane: no session per call, one discover, one listen stream.
    assert counts["initialize"] == 1 and counts["server/discover"] == 1 and counts["subscriptions/listen"] == 1


async def test_the_client_log_level_and_progress_travel_on_the_lane(backend: HttpBackend) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []
    steps: list[float] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(progress)

    async with (
        serve_master(make_config({"id": "remote", "type": "http", "url": backend.url})) as (master, url),
        Client(url, mode="2026-07-28", logging_callback=on_log) as modern,
    ):
        await on_the_lane(master, modern, "remote__show_meta")
        meta = {"io.modelcontextprotocol/logLevel": "info"}
        assert text(await modern.call_tool("remote__log_lines", {"tag": "t"}, meta=meta)) == "logged t"
        assert text(await modern.call_tool("remote__progress", {}, progress_callback=on_progress)) == "done"
        assert text(await modern.call_tool("remote__log_lines", {"tag": "quiet"})) == "logged quiet"
    # The backend logs at the level this request asked for, and to nobody who did not ask.
    assert [line.data for line in logs] == ["t:info", "t:warning"]
    assert steps == [1, 2, 3]


async def test_changes_made_on_the_lane_reach_handshake_sessions(backend: HttpBackend) -> None:
    inbox = Inbox()
    async with (
        serve_master(make_config({"id": "live", "type": "http", "url": backend.url})) as (master, url),
        Client(url, mode="2026-07-28") as modern,
        Client(url, mode="legacy", message_handler=inbox.on_message) as legacy,
    ):
        await legacy.subscribe_resource("live+fixture://static")
        await on_the_lane(master, modern, "live__show_meta")
        # The backend announces to the calling session (none: a lane request has no session) and to its listen
        # streams; the lane's stream is the master's only way to hear of these.
        await modern.call_tool("live__touch_resource", {"uri": "fixture://static"})
        await wait_until(lambda: bool(inbox.of(types.ResourceUpdatedNotification)))
        assert str(inbox.of(types.ResourceUpdatedNotification)[0].params.uri) == "live+fixture://static"
        await modern.call_tool("live__touch_resource", {"uri": "fixture://item/1"})  # nobody subscribed to this
        await modern.call_tool("live__add_tool_later", {"name": "grown"})
        await wait_until(lambda: bool(inbox.of(types.ToolListChangedNotification)))
        assert "live__grown" in {t.name for t in (await legacy.list_tools()).tools}
        updates = {str(note.params.uri) for note in inbox.of(types.ResourceUpdatedNotification)}
        assert updates == {"live+fixture://static"}
        # A subscription made after the lane opened is listened for too (the stream is opened anew).
        await legacy.subscribe_resource("live+fixture://item/2")
        await modern.call_tool("live__touch_resource", {"uri": "fixture://item/2"})

        def updated() -> set[str]:
            return {str(note.params.uri) for note in inbox.of(types.ResourceUpdatedNotification)}

        await wait_until(lambda: "live+fixture://item/2" in updated())
        assert updated() == {"live+fixture://static", "live+fixture://item/2"}


async def test_protocol_handshake_keeps_every_call_on_the_session(backend: HttpBackend) -> None:
    server = {"id": "remote", "type": "http", "url": backend.url, "protocol": "handshake"}
    async with serve_master(make_config(server)) as (master, url), Client(url, mode="2026-07-28") as modern:
        for _ in range(3):
            assert MODERN not in json.loads(text(await modern.call_tool("remote__show_meta", {})))
        assert master.pool.get("remote").lane is None


async def test_a_backend_without_the_2026_era_is_served_on_its_session(caplog: pytest.LogCaptureFixture) -> None:
    # faulty_http.py answers `server/discover` with an empty result (no versions): no lane, said once, and its
    # calls go on as before. An SSE backend, or one with several instances, has no lane at all.
    caplog.set_level("INFO", logger="master_mcp.backends.lane")
    odd, sse = FaultyHttp(), HttpBackend("--name", "old", sse=True)

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "no 2026-07-28 lane" in r.getMessage()]

    try:
        servers = [
            {"id": "odd", "type": "http", "url": odd.url},
            {"id": "old", "type": "sse", "url": sse.url},
            {"id": "many", "type": "http", "urls": [odd.url, f"{odd.url}?again=1"]},
        ]
        async with serve_master(make_config(*servers)) as (master, url), Client(url, mode="2026-07-28") as modern:
            assert text(await modern.call_tool("odd__echo", {"text": "hi"})) == "hi"
            await wait_until(lambda: bool(refusals()))
            for _ in range(3):
                assert text(await modern.call_tool("odd__echo", {"text": "hi"})) == "hi"
                assert text(await modern.call_tool("old__echo", {"text": "hi"})) == "hi"
            assert not lanes_open(master, "odd")
            assert master.pool.get("old").lane is None and master.pool.get("many").lane is None
    finally:
        odd.stop()
        sse.stop()
    [refused] = refusals()
    assert refused.startswith("server odd: no 2026-07-28 lane (server/discover: ")


async def test_a_backend_request_state_goes_back_only_for_its_own_caller(backend: HttpBackend) -> None:
    tokens = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
    auth = {"mode": "static_tokens", "tokens": [{"token": t, "subject": s} for s, t in tokens.items()]}
    config = make_config({"id": "remote", "type": "http", "url": backend.url}, auth=auth)
    envelope = {
        MODERN: "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }

    async def two_rounds(http: httpx2.AsyncClient, url: str, who: str, state: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"name": "remote__two_rounds", "arguments": {}, "_meta": envelope}
        if state is not None:
            params["requestState"] = state
        headers = {
            "authorization": f"Bearer {tokens[who]}",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call",
            "mcp-name": "remote__two_rounds",
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
        answer = await http.post(url, json=body, headers=headers)
        return dict(answer.json())

    async with serve_master(config) as (master, url), httpx2.AsyncClient(timeout=30) as http:
        await two_rounds(http, url, "alice", None)  # opens the lane (this one goes on the session)
        await wait_until(lambda: lanes_open(master, "remote"))
        first = (await two_rounds(http, url, "alice", None))["result"]
        assert first["resultType"] == "input_required"
        token = first["requestState"]
        assert token != "round-1"  # the backend's state stays with the master
        stolen = await two_rounds(http, url, "bob", token)
        assert "unknown or expired requestState" in json.dumps(stolen)
        done = (await two_rounds(http, url, "alice", token))["result"]
        assert done["content"][0]["text"] == "second round after round-1"


async def test_each_user_lane_carries_that_user_credential(oauth: OAuthBackend) -> None:
    tokens = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
    server = {
        "id": "cloud",
        "type": "http",
        "url": oauth.url,
        "auth_strategy": "delegate_oauth",
        "auth_config": {"client_id": "master-client", "client_secret": "master-client-secret-1234"},
    }
    auth = {"mode": "static_tokens", "tokens": [{"token": t, "subject": s} for s, t in tokens.items()]}
    config = make_config(server, store={"type": "memory"}, auth=auth)

    def as_user(url: str, name: str) -> Client:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {tokens[name]}"}, timeout=30)
        return Client(streamable_http_client(url, http_client=http), mode="2026-07-28")

    async with serve_master(config) as (master, url):
        subjects: dict[str, str] = {}
        for name in tokens:
            async with as_user(url, name) as client:
                delegation = (await client.call_tool("cloud__authorize", {})).structured_content
                assert delegation is not None
                async with httpx2.AsyncClient(follow_redirects=True) as browser:
                    await browser.get(delegation["authorization_url"])
                await on_the_lane(master, client, "cloud__whoami")
                subjects[name] = json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"]
        assert master.pool.sessions_of("cloud") == 2 and subjects["alice"] != subjects["bob"]
        for name in tokens:  # later calls, on each user's lane, still as that user
            async with as_user(url, name) as client:
                assert json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"] == subjects[name]


async def test_the_lane_comes_back_when_its_backend_restarts() -> None:
    phoenix = HttpBackend("--name", "phoenix")
    try:
        async with (
            serve_master(make_config({"id": "phoenix", "type": "http", "url": phoenix.url})) as (master, url),
            Client(url, mode="2026-07-28") as modern,
            Client(url, mode="legacy") as legacy,
        ):
            await legacy.list_tools()  # known to the master before the change
            await on_the_lane(master, modern, "phoenix__show_meta")
            phoenix.restart()
            # Calls made while it is away may fail, naming the server; the session and the lane then come back.
            connection = master.pool.get("phoenix")
            with anyio.fail_after(60):
                while not (connection.connects >= 2 and connection.has_lane):
                    for client, tool in ((legacy, "phoenix__echo"), (modern, "phoenix__show_meta")):
                        result = await client.call_tool(tool, {"text": "x"} if tool.endswith("echo") else {})
                        assert not result.is_error or "phoenix" in text(result)
                    await anyio.sleep(0.2)
            assert MODERN in json.loads(text(await modern.call_tool("phoenix__show_meta", {})))
            # The new lane listens as the first did: a change made on it reaches the handshake session.
            await modern.call_tool("phoenix__add_tool_later", {"name": "reborn"})
            await wait_until(lambda: any(tool.get("name") == "phoenix__reborn" for tool in master.catalog.tools))
            assert "phoenix__reborn" in {t.name for t in (await legacy.list_tools()).tools}
    finally:
        phoenix.stop()


async def test_a_lane_call_times_out_and_fails_as_a_session_call_would(backend: HttpBackend) -> None:
    # timeout_s bounds the start-up listing too: long enough for a loaded machine.
    server = {"id": "remote", "type": "http", "url": backend.url, "timeout_s": 2}
    async with serve_master(make_config(server)) as (master, url), Client(url, mode="2026-07-28") as modern:
        await on_the_lane(master, modern, "remote__show_meta")
        slow = await modern.call_tool("remote__slow", {"seconds": 5})
        assert slow.is_error and text(slow) == "server 'remote' did not answer tools/call within 2s"
        failed = await modern.call_tool("remote__fail", {"reason": "on purpose"})
        assert failed.is_error and "on purpose" in text(failed)
        assert text(await modern.call_tool("remote__echo", {"text": "still here"})) == "still here"
        assert master.pool.get("remote").has_lane
