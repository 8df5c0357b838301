"""The master over streamable HTTP, in front of a stdio backend and an HTTP backend, in both protocol eras."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.shared.exceptions import MCPError

from master_mcp import front_http
from tests.conftest import PAGED, TESTS, HttpBackend, make_config, serve_master, stdio_server, text, wait_until

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]


@pytest.fixture
def config(http_backend: HttpBackend) -> Any:
    return make_config(
        stdio_server("local"),
        {"id": "remote", "type": "http", "url": http_backend.url},
    )


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_are_namespaced_and_calls_route(config: Any, mode: str) -> None:
    async with serve_master(config) as (_, url), Client(url, mode=mode) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert {"local__search", "remote__search", "local__echo", "remote__add"} <= set(names)
        assert text(await client.call_tool("local__search", {"query": "q"})) == "fixture:q"
        assert text(await client.call_tool("remote__search", {"query": "q"})) == "remote:q"
        assert text(await client.call_tool("remote__add", {"a": 2, "b": 3})) == "5"


async def test_tool_definitions_pass_unchanged(config: Any) -> None:
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    async with Client(config.servers[1].url, mode="legacy") as direct:
        original = {tool.name: tool for tool in (await direct.list_tools()).tools}
    for name, tool in original.items():
        front = tools[f"remote__{name}"]
        assert front.model_dump(exclude={"name"}) == tool.model_dump(exclude={"name"})


@pytest.mark.parametrize("mode", ERAS)
async def test_resources_templates_prompts_completion(config: Any, mode: str) -> None:
    async with serve_master(config) as (_, url), Client(url, mode=mode) as client:
        uris = {r.uri for r in (await client.list_resources()).resources}
        assert uris == {"local+fixture://static", "remote+fixture://static"}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"local+fixture://item/{item_id}", "remote+fixture://item/{item_id}"}

        static = await client.read_resource("remote+fixture://static")
        assert static.contents[0].uri == "remote+fixture://static"
        assert isinstance(static.contents[0], types.TextResourceContents)
        assert static.contents[0].text == "static text from remote"
        templated = await client.read_resource("local+fixture://item/42")
        assert isinstance(templated.contents[0], types.TextResourceContents)
        assert templated.contents[0].text == "item 42 from fixture"

        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == {"local__greet", "remote__greet"}
        prompt = await client.get_prompt("remote__greet", {"name": "Ada"})
        assert isinstance(prompt.messages[0].content, types.TextContent)
        assert prompt.messages[0].content.text == "Hello, Ada! (from remote)"

        prompt_ref = types.PromptReference(type="ref/prompt", name="local__greet")
        done = await client.complete(prompt_ref, {"name": "name", "value": "al"})
        assert done.completion.values == ["alice", "albert"]
        ref = types.ResourceTemplateReference(type="ref/resource", uri="remote+fixture://item/{item_id}")
        done = await client.complete(ref, {"name": "item_id", "value": "7"})
        assert done.completion.values == ["7"]


async def test_resource_uris_inside_results_are_mapped(config: Any) -> None:
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        result = await client.call_tool("remote__links", {})
        link, embedded = result.content
        assert isinstance(link, types.ResourceLink) and link.uri == "remote+fixture://static"
        assert isinstance(embedded, types.EmbeddedResource) and embedded.resource.uri == "remote+fixture://item/7"
        # and the mapped URIs read back through the master
        read = await client.read_resource(link.uri)
        assert isinstance(read.contents[0], types.TextResourceContents)
        assert read.contents[0].text == "static text from remote"


async def test_ping_and_set_level(config: Any) -> None:
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        await client.send_ping()
        await client.set_logging_level("warning")
        counts = json.loads(text(await client.call_tool("local__request_counts", {})))
        assert counts.get("logging/setLevel") == 1


async def test_front_hop_meta_is_not_forwarded(config: Any) -> None:
    async with serve_master(config) as (_, url), Client(url, mode="2026-07-28") as client:
        seen = json.loads(text(await client.call_tool("remote__show_meta", {}, meta={"trace": "abc"})))
    assert seen == {"trace": "abc"}


async def test_progress_reaches_the_caller(config: Any) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        result = await client.call_tool("local__progress", {}, progress_callback=on_progress)
    assert text(result) == "done"
    assert updates == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


async def test_one_backend_session_and_no_listing_per_call() -> None:
    backend = HttpBackend("--name", "counted")
    try:
        config = make_config({"id": "counted", "type": "http", "url": backend.url})
        async with serve_master(config) as (master, url):
            for mode in ERAS:
                for _ in range(3):
                    async with Client(url, mode=mode) as client:
                        for n in range(5):
                            await client.call_tool("counted__echo", {"text": str(n)})
            await wait_until(lambda: master.pool.get("counted").has_lane)
            async with Client(url, mode="legacy") as client:
                counts = json.loads(text(await client.call_tool("counted__request_counts", {})))
    finally:
        backend.stop()
    # Six front sessions and 30 calls: the backend saw one initialize, one discovery, the 2026-07-28 lane opened
    # once (one discover, one listen stream), and only the calls.
    discovery = {"tools/list": 1, "resources/list": 1, "resources/templates/list": 1, "prompts/list": 1}
    lane = {"server/discover": 1, "subscriptions/listen": 1}
    assert counts == {"initialize": 1, **discovery, **lane, "tools/call": 31}


@pytest.mark.parametrize("mode", ERAS)
async def test_unknown_names_are_named_in_the_error(config: Any, mode: str) -> None:
    async with serve_master(config) as (_, url), Client(url, mode=mode) as client:
        with pytest.raises(MCPError, match="nope__tool"):
            await client.call_tool("nope__tool", {})
        with pytest.raises(MCPError, match="local__nothing"):
            await client.get_prompt("local__nothing", {})
        with pytest.raises(MCPError, match="zzz://missing"):
            await client.read_resource("zzz://missing")


async def test_backend_rejections_come_back_as_the_backend_said(config: Any) -> None:
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        bad_args = await client.call_tool("remote__add", {"a": "not a number"})
        assert bad_args.is_error and "validation error" in text(bad_args).lower()
        failed = await client.call_tool("local__fail", {"reason": "because"})
        assert failed.is_error and "failed: because" in text(failed)
        assert isinstance(failed.content, list)


async def test_dead_backend_gives_an_error_result_naming_it() -> None:
    config = make_config(stdio_server("alive"), {"id": "ghost", "type": "http", "url": "http://127.0.0.1:9/mcp"})
    async with serve_master(config) as (master, url):
        ready, servers = master.readiness()
        assert not ready
        ghost = next(s for s in servers if s["id"] == "ghost")
        assert ghost["state"] == "down" and ghost["last_error"]
        async with httpx2.AsyncClient() as http:
            response = await http.get(url.replace("/mcp", "/readyz"))
        assert response.status_code == 503
        assert response.json()["servers"][1]["id"] == "ghost"
        assert response.json()["store"] == {"type": master.config.master.store.type}  # nothing to ping
        async with Client(url, mode="legacy") as client:
            assert text(await client.call_tool("alive__echo", {"text": "still here"})) == "still here"
            # Its names were never listed, but they say whose they would be: the caller hears why, not "unknown".
            called = await client.call_tool("ghost__echo", {"text": "x"})
            assert called.is_error and "'ghost' is down" in text(called)
            for ask in (client.get_prompt("ghost__greet", {"name": "x"}), client.read_resource("ghost+fixture://a")):
                with pytest.raises(MCPError, match="'ghost' is down"):
                    await ask


async def test_backend_crash_mid_call_is_an_error_result_and_it_comes_back() -> None:
    config = make_config(stdio_server("fragile"))
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        crashed = await client.call_tool("fragile__crash", {})
        assert crashed.is_error and "fragile" in text(crashed)
        fragile = master.pool.get("fragile")
        await wait_until(lambda: fragile.connects == 2 and fragile.state.value == "up")
        assert text(await client.call_tool("fragile__echo", {"text": "back"})) == "back"


async def test_slow_backend_times_out_with_a_clear_error() -> None:
    config = make_config(stdio_server("sloth", timeout_s=0.5), stdio_server("quick"))
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        slow = await client.call_tool("sloth__slow", {"seconds": 5})
        assert slow.is_error and "sloth" in text(slow) and "0.5s" in text(slow)
        assert text(await client.call_tool("quick__echo", {"text": "fine"})) == "fine"


async def test_front_pages_large_lists_and_follows_backend_pages() -> None:
    paged = {
        "id": "paged",
        "type": "stdio",
        "command": sys.executable,
        "args": [PAGED, "--tools", "25", "--page", "10"],
    }
    config = make_config(paged, stdio_server("many", "--extra-tools", "30"), page_size=16)
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        first = await client.list_tools()
        assert len(first.tools) == 16 and first.next_cursor is not None
        names = [t.name for t in first.tools]
        cursor = first.next_cursor
        while cursor is not None:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
        assert len(names) == len(set(names)) == 25 + 50  # 25 paged + 20 fixture tools + 30 extra
        assert {f"paged__t{i}" for i in range(25)} <= set(names)
        assert text(await client.call_tool("paged__t24", {})) == "called t24"
        with pytest.raises(MCPError, match="cursor"):
            await client.list_tools(cursor="bogus")


async def test_host_and_origin_are_validated(config: Any) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with serve_master(config) as (_, url), httpx2.AsyncClient() as http:
        evil_host = await http.post(url, json=body, headers={**headers, "host": "evil.example:80"})
        assert evil_host.status_code in (400, 403, 421)
        evil_origin = await http.post(url, json=body, headers={**headers, "origin": "http://evil.example"})
        assert evil_origin.status_code in (400, 403)


async def test_stateless_and_json_response_front(config: Any) -> None:
    async with serve_master(config, stateless=True, json_response=True) as (_, url):
        for mode in ERAS:
            async with Client(url, mode=mode) as client:
                assert text(await client.call_tool("remote__echo", {"text": mode})) == mode


ACCEPT_BOTH = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def _handshake_session(http: httpx2.AsyncClient, url: str, capabilities: dict[str, Any]) -> dict[str, str]:
    """A handshake-era session opened by hand; the headers its requests carry."""
    init = {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "0"}}
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}
    opened = await http.post(url, json=body, headers=ACCEPT_BOTH)
    ids = {**ACCEPT_BOTH, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=ids)
    return ids


async def test_each_request_is_answered_as_a_stream_only_when_it_needs_one() -> None:
    """A handshake-era call is answered as a JSON body unless something besides its answer comes first (progress,
    log lines), which opens a stream that carries it and then the answer, in a session whose client can be asked
    things (sampling) too. A 2026-07-28 call streams only where its request asks for more than the answer. A client
    that takes only JSON gets the answer, and nothing stands in for it."""
    headers = ACCEPT_BOTH

    def call(number: int, tool: str = "quiet__echo", meta: dict[str, Any] | None = None) -> dict[str, Any]:
        arguments = {"tag": str(number)} if tool.endswith("log_lines") else {"text": str(number)}
        arguments = {} if tool.endswith("progress") else arguments
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        return {
            "jsonrpc": "2.0",
            "id": number,
            "method": "tools/call",
            "params": params | ({"_meta": meta} if meta else {}),
        }

    def kind(response: httpx2.Response) -> str:
        assert response.status_code == 200 and '"result"' in response.text
        assert '"isError":true' not in response.text.replace(" ", "")
        return response.headers["content-type"].split(";")[0]

    def events(response: httpx2.Response) -> list[dict[str, Any]]:
        lines = response.text.splitlines()
        return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ") and line[6:].strip()]

    # `quiet` declares no logging capability; the fixture backend (`loud`) does.
    quiet = {
        "id": "quiet",
        "type": "stdio",
        "command": sys.executable,
        "args": [str(TESTS / "backends" / "faulty_stdio.py")],
    }
    config = make_config(quiet, stdio_server("loud"))
    async with serve_master(config) as (_, url), httpx2.AsyncClient(headers=headers) as http:
        plain = await _handshake_session(http, url, {})
        assert kind(await http.post(url, json=call(1), headers=plain)) == "application/json"
        listed = await http.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=plain)
        assert listed.headers["content-type"].startswith("application/json")
        # It may log, and did not: the answer alone.
        assert kind(await http.post(url, json=call(4, "loud__echo"), headers=plain)) == "application/json"
        # It logged: the lines, in order, then the answer, on the stream the first line opened.
        logged_call = await http.post(url, json=call(6, "loud__log_lines"), headers=plain)
        assert kind(logged_call) == "text/event-stream"
        sent = events(logged_call)
        # (the fixture logs `info` and up until a session sets a level)
        assert [e["params"]["data"] for e in sent[:-1]] == ["6:info", "6:warning"]
        assert sent[-1]["id"] == 6 and sent[-1]["result"]["content"][0]["text"] == "logged 6"
        reported = await http.post(url, json=call(3, "loud__progress", {"progressToken": "p"}), headers=plain)
        assert kind(reported) == "text/event-stream"
        assert [e["params"]["progress"] for e in events(reported)[:-1]] == [1, 2, 3]
        # A progress token alone opens nothing: the quiet backend reports none.
        assert (
            kind(await http.post(url, json=call(7, meta={"progressToken": "q"}), headers=plain)) == "application/json"
        )
        # A session whose client can be asked things: a call that asks nothing is a JSON body too (the backend's
        # requests to such a client open a stream as they come: `test_relay`).
        sampling = await _handshake_session(http, url, {"sampling": {}})
        assert kind(await http.post(url, json=call(5), headers=sampling)) == "application/json"
        assert kind(await http.post(url, json=call(8, "loud__log_lines"), headers=sampling)) == "text/event-stream"
        # A client that takes no stream: the answer, never a log line or progress in its place.
        json_only = {**plain, "accept": "application/json"}
        for number, tool, meta in ((20, "loud__log_lines", None), (21, "loud__progress", {"progressToken": "r"})):
            answer = await http.post(url, json=call(number, tool, meta), headers=json_only)
            assert kind(answer) == "application/json" and answer.json()["id"] == number
        # Wildcards take a stream, as the SDK reads them; each Accept value is read for what it says, after others.
        for number, accept in ((22, "*/*"), (23, "application/json, text/*"), (24, "application/json")):
            answer = await http.post(url, json=call(number, "loud__log_lines"), headers={**plain, "accept": accept})
            assert kind(answer) == ("application/json" if accept == "application/json" else "text/event-stream")

        # 2026-07-28: no back-channel; log lines only to a request that asks for them in its `_meta`.
        envelope = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }

        async def modern(number: int, tool: str, **meta: Any) -> str:
            body = call(number, tool, {**envelope, **meta})
            routing = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": tool}
            return kind(await http.post(url, json=body, headers={**headers, **routing}))

        assert await modern(7, "quiet__echo") == "application/json"
        assert await modern(8, "loud__echo", progressToken="p") == "application/json"  # it sent no progress
        assert await modern(9, "loud__log_lines") == "application/json"
        logged = {"io.modelcontextprotocol/logLevel": "info"}
        assert await modern(10, "loud__log_lines", **logged) == "text/event-stream"
        bad_level = {"io.modelcontextprotocol/logLevel": "loudest"}
        refused = await http.post(
            url,
            json=call(11, "loud__log_lines", {**envelope, **bad_level}),
            headers={
                **headers,
                "mcp-protocol-version": "2026-07-28",
                "mcp-method": "tools/call",
                "mcp-name": "loud__log_lines",
            },
        )
        assert refused.status_code == 400 and refused.json()["error"]["message"] == "Invalid request parameters"
        # A client that cannot take a stream is refused the same whatever its request asks for.
        json_only = {**headers, "accept": "application/json", "mcp-protocol-version": "2026-07-28"}
        for number, tool in ((12, "quiet__echo"), (13, "loud__log_lines")):
            routed = {**json_only, "mcp-method": "tools/call", "mcp-name": tool}
            answer = await http.post(url, json=call(number, tool, {**envelope, **logged}), headers=routed)
            assert answer.status_code == 406


async def test_a_stream_its_client_leaves_is_let_go() -> None:
    """A request whose first progress notification opened its stream, and whose client then went away: the
    session keeps nothing of it, and serves the next call."""
    call = {
        "jsonrpc": "2.0",
        "id": 30,
        "method": "tools/call",
        "params": {"name": "loud__progress", "arguments": {"pause": 30}, "_meta": {"progressToken": "p"}},
    }
    async with serve_master(make_config(stdio_server("loud"))) as (_, url), httpx2.AsyncClient() as http:
        ids = await _handshake_session(http, url, {})
        (transport,) = [
            o
            for o in gc.get_objects()
            if isinstance(o, StreamableHTTPServerTransport) and o.mcp_session_id == ids["mcp-session-id"]
        ]
        async with http.stream("POST", url, json=call, headers=ids) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            async for line in streamed.aiter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["params"]["progress"] == 1
                    break
            assert "30" in transport._request_streams
        # The client is gone, the backend's call is not over: nothing of the request stays with the session.
        await wait_until(lambda: "30" not in transport._request_streams and "30" not in transport._sse_stream_writers)
        assert not transport._opened  # type: ignore[attr-defined]
        params = {"name": "loud__echo", "arguments": {"text": "still here"}}
        echo = {"jsonrpc": "2.0", "id": 31, "method": "tools/call", "params": params}
        answered = await http.post(url, json=echo, headers=ids)
        assert answered.json()["result"]["content"][0]["text"] == "still here"


async def test_a_silent_long_call_gets_its_stream_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that sends nothing for a while is answered on a stream opened before a client or proxy would give
    up on a silent response (the wait is shortened here from its 10 s), and the stream ends with the answer."""
    monkeypatch.setattr(front_http._AdaptiveTransport, "open_after_s", 0.3)
    params = {"name": "loud__slow", "arguments": {"seconds": 3}}
    call = {"jsonrpc": "2.0", "id": 40, "method": "tools/call", "params": params}
    async with serve_master(make_config(stdio_server("loud"))) as (_, url), httpx2.AsyncClient() as http:
        ids = await _handshake_session(http, url, {})
        async with http.stream("POST", url, json=call, headers=ids) as streamed:
            lines = streamed.aiter_lines()
            with anyio.fail_after(2.5):  # long before the answer: the stream is open, with a comment on it
                assert streamed.headers["content-type"].startswith("text/event-stream")
                assert (await anext(lines)).startswith(":")
            received = [line async for line in lines]
        data = [json.loads(line[6:]) for line in received if line.startswith("data: ")]
        assert [d["id"] for d in data] == [40] and data[0]["result"]["content"][0]["text"] == "slept 3.0"
        # A quick call in the same session is still a JSON body.
        quick = {**call, "id": 41, "params": {"name": "loud__echo", "arguments": {"text": "q"}}}
        assert (await http.post(url, json=quick, headers=ids)).headers["content-type"] == "application/json"


async def test_silent_calls_started_at_different_times_each_get_their_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One timer per session watches its silent calls: it fires for a call already answered, and for calls that
    are not due yet it waits again, so each of them gets its stream."""
    monkeypatch.setattr(front_http._AdaptiveTransport, "open_after_s", 0.3)
    opened: dict[int, float] = {}
    async with serve_master(make_config(stdio_server("loud"))) as (_, url), httpx2.AsyncClient() as http:
        ids = await _handshake_session(http, url, {})
        quick = {"name": "loud__echo", "arguments": {"text": "q"}}
        await http.post(url, json={"jsonrpc": "2.0", "id": 50, "method": "tools/call", "params": quick}, headers=ids)
        # The timer the quick call armed fires while neither call below is due yet, and then once for each.
        await anyio.sleep(0.1)

        async def slow(request_id: int) -> None:
            params = {"name": "loud__slow", "arguments": {"seconds": 2}}
            call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
            async with http.stream("POST", url, json=call, headers=ids) as streamed:
                assert streamed.headers["content-type"].startswith("text/event-stream")
                opened[request_id] = anyio.current_time()
                received = [line async for line in streamed.aiter_lines()]
            assert any(f'"id":{request_id}' in line.replace(" ", "") for line in received)

        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow, 51)
            await anyio.sleep(0.1)
            tg.start_soon(slow, 52)
    # Both streams opened long before their answers (2 s), each about `open_after_s` after its own start.
    assert set(opened) == {51, 52}
    assert all(at - started < 1.9 for at in opened.values())


async def test_sse_and_local_backends(http_backend: HttpBackend) -> None:
    sse = HttpBackend("--name", "legacy-sse", sse=True)
    try:
        config = make_config(
            {"id": "old", "type": "sse", "url": sse.url},
            {"id": "near", "type": "local", "config": {"port": http_backend.port}},
        )
        async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
            assert master.readiness()[0]
            assert text(await client.call_tool("old__search", {"query": "q"})) == "legacy-sse:q"
            assert text(await client.call_tool("near__search", {"query": "q"})) == "remote:q"
            read = await client.read_resource("old+fixture://item/5")
            assert isinstance(read.contents[0], types.TextResourceContents)
            assert read.contents[0].text == "item 5 from legacy-sse"
    finally:
        sse.stop()


async def test_a_restarted_http_backend_gets_a_new_session() -> None:
    backend = HttpBackend("--name", "phoenix")
    try:
        config = make_config({"id": "phoenix", "type": "http", "url": backend.url})
        async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
            assert text(await client.call_tool("phoenix__echo", {"text": "before"})) == "before"
            backend.restart()
            # A read is safe to repeat: the master opens a new session and sends it again, unnoticed.
            read = await client.read_resource("phoenix+fixture://static")
            assert isinstance(read.contents[0], types.TextResourceContents)
            assert master.pool.get("phoenix").connects == 2
            backend.restart()
            # A tool call is not repeated behind the caller's back: it fails clearly, and the next one works.
            lost = await client.call_tool("phoenix__add", {"a": 1, "b": 2})
            assert lost.is_error and "lost the session" in text(lost)
            await wait_until(lambda: master.pool.get("phoenix").state.value == "up")
            assert text(await client.call_tool("phoenix__add", {"a": 1, "b": 2})) == "3"
    finally:
        backend.stop()


async def test_a_crash_loop_marks_the_backend_failed_and_the_rest_keeps_serving() -> None:
    dying = {
        "id": "dying",
        "type": "stdio",
        "command": sys.executable,
        "args": ["-c", "import sys; sys.exit(3)"],
        "crash_loop": {"crashes": 2, "window_s": 60},
    }
    async with serve_master(make_config(dying, stdio_server("steady"))) as (master, url):
        await wait_until(lambda: master.pool.get("dying").state.value == "failed")
        ready, servers = master.readiness()
        assert not ready
        failed = next(s for s in servers if s["id"] == "dying")
        assert failed["last_error"].startswith("crash loop (2 failures within 60s)")
        async with Client(url, mode="legacy") as client:
            assert text(await client.call_tool("steady__echo", {"text": "fine"})) == "fine"


async def test_metrics_count_what_happened(config: Any) -> None:
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        await client.call_tool("remote__echo", {"text": "m"})
        await client.call_tool("local__fail", {})
        async with httpx2.AsyncClient() as http:
            page = (await http.get(url.replace("/mcp", "/metrics"))).text
    assert 'master_mcp_requests_total{method="tools/call",outcome="ok",server="remote"} 1.0' in page
    assert 'master_mcp_requests_total{method="tools/call",outcome="tool_error",server="local"} 1.0' in page
    assert 'master_mcp_backend_up{server="local"} 1.0' in page
    assert 'master_mcp_backend_request_seconds_count{method="tools/call",server="remote"} 1.0' in page
    assert "master_mcp_front_sessions 1.0" in page


async def test_circuit_breaker_opens_fails_fast_and_recovers() -> None:
    breaker = {"circuit_breaker": {"failure_threshold": 2, "recovery_timeout_s": 1}}
    # timeout_s bounds discovery and the recovering call too: long enough for a loaded machine.
    config = make_config(stdio_server("flaky", timeout_s=2)).model_copy(
        update={"routing": make_config().routing.model_validate(breaker)}
    )
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        for _ in range(2):
            assert (await client.call_tool("flaky__slow", {"seconds": 10})).is_error
        refused = await client.call_tool("flaky__echo", {"text": "now?"})
        assert refused.is_error and "is not being called for now: 2 failures in a row" in text(refused)
        assert master.readiness()[1][0]["breaker"] == "open"
        await anyio.sleep(1.1)
        assert text(await client.call_tool("flaky__echo", {"text": "back"})) == "back"
        assert master.readiness()[1][0]["breaker"] == "closed"
