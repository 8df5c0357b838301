"""What backends send on their own reaches the right front sessions: list changes, resource updates, log lines;
and a front cancellation reaches the backend."""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from master_mcp import front_http
from tests.conftest import (
    FIXTURE,
    TESTS,
    HttpBackend,
    ServerProcess,
    backend_counted,
    free_port,
    make_config,
    serve_master,
    stdio_server,
    text,
    wait_until,
)

pytestmark = pytest.mark.anyio


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logs: list[types.LoggingMessageNotificationParams] = []

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    def of(self, kind: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]


@pytest.fixture(params=["stdio", "http"])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "stdio":
        yield stdio_server("live")
        return
    process = HttpBackend("--name", "live")
    yield {"id": "live", "type": "http", "url": process.url}
    process.stop()


async def test_list_changed_reaches_every_session_and_the_catalog(backend: dict[str, Any]) -> None:
    first, second = Inbox(), Inbox()
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(url, mode="legacy", message_handler=first.on_message) as a,
        Client(url, mode="legacy", message_handler=second.on_message) as b,
    ):
        await b.list_tools()  # b is known to the master before the change
        assert a.server_capabilities.tools is not None and a.server_capabilities.tools.list_changed
        assert text(await a.call_tool("live__add_tool_later", {"name": "fresh"})) == "added fresh"
        await wait_until(lambda: bool(first.of(types.ToolListChangedNotification)))
        await wait_until(lambda: bool(second.of(types.ToolListChangedNotification)))
        assert "live__fresh" in {t.name for t in (await b.list_tools()).tools}
        assert text(await b.call_tool("live__fresh", {"value": 2})) == "extra 5: 2"


async def test_list_changed_reaches_a_2026_listener() -> None:
    async with (
        serve_master(make_config(stdio_server("live"))) as (_, url),
        Client(url, mode="2026-07-28") as modern,
        Client(url, mode="legacy") as other,
    ):
        # The listen stream opening is waited for too: a listen answered like any other request never opens.
        with anyio.fail_after(10):
            async with modern.listen(tools_list_changed=True) as subscription:
                await other.call_tool("live__add_tool_later", {"name": "later"})
                async for event in subscription:
                    assert event is not None
                    break
        assert "live__later" in {t.name for t in (await modern.list_tools(cache_mode="bypass")).tools}


async def test_resource_updates_reach_only_subscribers(backend: dict[str, Any]) -> None:
    subscribed, bystander = Inbox(), Inbox()
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(url, mode="legacy", message_handler=subscribed.on_message) as a,
        Client(url, mode="legacy", message_handler=bystander.on_message) as b,
    ):
        await a.subscribe_resource("live+fixture://static")
        await b.list_tools()
        await b.call_tool("live__touch_resource", {"uri": "fixture://static"})
        await wait_until(lambda: bool(subscribed.of(types.ResourceUpdatedNotification)))
        [update] = subscribed.of(types.ResourceUpdatedNotification)
        assert str(update.params.uri) == "live+fixture://static"
        await a.unsubscribe_resource("live+fixture://static")
        counts = json.loads(text(await a.call_tool("live__request_counts", {})))
    assert bystander.of(types.ResourceUpdatedNotification) == []
    assert counts["subscribe fixture://static"] == 1 and counts["unsubscribe fixture://static"] == 1


async def test_log_lines_reach_the_caller_at_its_level(backend: dict[str, Any]) -> None:
    quiet, chatty = Inbox(), Inbox()
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(url, mode="legacy", logging_callback=quiet.on_log) as a,
        Client(url, mode="legacy", logging_callback=chatty.on_log) as b,
    ):
        await a.set_logging_level("warning")
        await b.set_logging_level("debug")
        assert text(await a.call_tool("live__log_lines", {"tag": "a"})) == "logged a"
        assert text(await b.call_tool("live__log_lines", {"tag": "b"})) == "logged b"
        await wait_until(lambda: len(chatty.logs) >= 3)
    assert [(p.level, p.data) for p in quiet.logs] == [("warning", "a:warning")]
    assert [p.data for p in chatty.logs] == ["b:debug", "b:info", "b:warning"]
    assert {p.logger for p in chatty.logs} == {"fixture"}


async def test_2026_callers_get_log_lines_only_when_they_ask_and_at_their_level(backend: dict[str, Any]) -> None:
    """2026-07-28 logging is opted into per request (`_meta` log level): a call without it gets no line."""
    silent, asked = Inbox(), Inbox()
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(url, mode="2026-07-28", logging_callback=silent.on_log) as a,
        Client(url, mode="2026-07-28", logging_callback=asked.on_log, log_level="info") as b,
    ):
        assert text(await a.call_tool("live__log_lines", {"tag": "a"})) == "logged a"
        assert text(await b.call_tool("live__log_lines", {"tag": "b"})) == "logged b"
        await wait_until(lambda: len(asked.logs) >= 2)
        assert text(await a.call_tool("live__log_lines", {"tag": "a2"})) == "logged a2"
    assert silent.logs == []
    assert [p.data for p in asked.logs] == ["b:info", "b:warning"]


async def test_a_session_opened_after_set_level_logs_at_that_level(backend: dict[str, Any]) -> None:
    """A client that can answer sampling gets a backend session of its own, opened on its first call: that
    session must be told the level the client asked for before it existed."""
    inbox = Inbox()
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(url, mode="legacy", logging_callback=inbox.on_log, sampling_callback=sample) as client,
    ):
        await client.set_logging_level("debug")
        assert text(await client.call_tool("live__log_lines", {"tag": "late"})) == "logged late"
        await wait_until(lambda: len(inbox.logs) >= 3)
    assert [p.data for p in inbox.logs] == ["late:debug", "late:info", "late:warning"]


async def a_cancellation_reaches_the_backend(client: Client) -> None:
    await backend_counted(client, "live__request_counts", "cancelled")


async def cancel_once_sleeping(client: Client) -> None:
    """Call `slow` and cancel the call once the backend is running it (a cancel that came sooner would find no
    call to cancel there: not what these tests are about)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(client.call_tool, "live__slow", {"seconds": 30}))
        await backend_counted(client, "live__request_counts", "sleeping")
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_cancellation_reaches_the_backend(backend: dict[str, Any], era: str) -> None:
    """A handshake-era client cancels with `notifications/cancelled`; a 2026-07-28 client by closing its request
    (the master answers that call as plain JSON: nothing else can come back)."""
    async with serve_master(make_config(backend)) as (_, url), Client(url, mode=era) as client:
        await cancel_once_sleeping(client)
        await a_cancellation_reaches_the_backend(client)


async def test_a_2026_call_abandoned_before_it_is_watched_is_cancelled_too(
    backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-line 2026-07-28 call is watched for its client going away only once it has run a moment (0.2 s; 2 s
    here, so that the call surely reaches the backend before its client goes); a client that goes away before that
    is noticed as the watch begins."""
    monkeypatch.setattr(front_http, "_WATCH_AFTER_S", 2.0)
    async with serve_master(make_config(backend)) as (_, url), Client(url, mode="2026-07-28") as client:
        assert text(await client.call_tool("live__echo", {"text": "warm"})) == "warm"  # the path is up
        await cancel_once_sleeping(client)  # well before the watch begins
        await a_cancellation_reaches_the_backend(client)


# ---- a backend's requests to its client, relayed to the client whose call it is ---------------------------------


async def sample(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked = params.messages[0].content
    prompt = asked.text if isinstance(asked, types.TextContent) else "?"
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"model says: {prompt}"), model="test-model"
    )


async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def roots(ctx: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


async def test_sampling_elicitation_and_roots_are_relayed(backend: dict[str, Any]) -> None:
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(
            url, mode="legacy", sampling_callback=sample, elicitation_callback=elicit, list_roots_callback=roots
        ) as client,
    ):
        assert text(await client.call_tool("live__ask_llm", {"prompt": "hi"})) == "model says: hi"
        assert json.loads(text(await client.call_tool("live__ask_user", {}))) == {
            "action": "accept",
            "content": {"name": "Ada"},
        }
        assert json.loads(text(await client.call_tool("live__client_roots", {}))) == ["file:///work/project"]
        declared = json.loads(text(await client.call_tool("live__client_capabilities", {})))
        assert {"sampling", "elicitation", "roots"} <= set(declared)


async def test_the_master_never_promises_what_the_client_lacks(backend: dict[str, Any]) -> None:
    async with serve_master(make_config(backend)) as (_, url), Client(url, mode="legacy") as plain:
        declared = json.loads(text(await plain.call_tool("live__client_capabilities", {})))
        assert not {"sampling", "elicitation", "roots"} & set(declared)
        with pytest.raises(MCPError, match="Sampling not supported"):
            await plain.call_tool("live__ask_llm", {"prompt": "hi"})
        async with Client(url, mode="legacy", list_roots_callback=roots) as rooted:
            declared = json.loads(text(await rooted.call_tool("live__client_capabilities", {})))
            assert "roots" in declared and "sampling" not in declared


async def test_capability_dependent_tools_show_for_capable_clients() -> None:
    async with serve_master(make_config(stdio_server("live"))) as (_, url):
        async with Client(url, mode="legacy") as plain:
            assert "live__summarize_with_llm" not in {t.name for t in (await plain.list_tools()).tools}
        async with Client(url, mode="legacy", sampling_callback=sample) as capable:
            names = {t.name for t in (await capable.list_tools()).tools}
            assert "live__summarize_with_llm" in names
            assert text(await capable.call_tool("live__summarize_with_llm", {"value": 1})) == "extra 0: 1"


async def test_a_client_that_never_answers_costs_only_its_call() -> None:
    async def never(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        await anyio.sleep_forever()
        raise AssertionError

    config = make_config(stdio_server("live", timeout_s=1))
    async with serve_master(config) as (_, url), Client(url, mode="legacy", sampling_callback=never) as client:
        stuck = await client.call_tool("live__ask_llm", {"prompt": "hello?"})
        assert stuck.is_error and "did not answer tools/call within 1s" in text(stuck)
        assert text(await client.call_tool("live__echo", {"text": "still fine"})) == "still fine"


# tests/backends/rogue_server.py: raw JSON-RPC over stdio that breaks the protocol on purpose.
ROGUE = {
    "id": "rogue",
    "type": "stdio",
    "command": sys.executable,
    "args": [str(TESTS / "backends" / "rogue_server.py")],
}


async def test_a_misbehaving_backend_is_contained() -> None:
    inbox = Inbox()
    config = make_config(ROGUE, stdio_server("fine"))
    async with (
        serve_master(config) as (_, url),
        Client(url, mode="legacy", logging_callback=inbox.on_log, sampling_callback=sample) as client,
    ):
        for _ in range(3):
            assert text(await client.call_tool("rogue__misbehave", {})) == "survived"
        assert text(await client.call_tool("fine__echo", {"text": "ok"})) == "ok"
    # The flood was this call's own log lines: they reached its caller, and nothing else broke.
    assert len(inbox.logs) > 0


async def test_a_malformed_result_is_an_error_and_nothing_else_breaks() -> None:
    async with serve_master(make_config(ROGUE, stdio_server("fine"))) as (_, url), Client(url, mode="legacy") as client:
        for _ in range(2):
            with pytest.raises(MCPError, match="invalid result") as raised:
                await client.call_tool("rogue__malformed", {})
            assert raised.value.error.code == types.INTERNAL_ERROR
            assert "not a list" not in raised.value.error.message  # the body stays out of the error
        assert text(await client.call_tool("rogue__misbehave", {})) == "survived"
        assert text(await client.call_tool("fine__echo", {"text": "ok"})) == "ok"


async def test_a_2026_client_answers_through_input_required_rounds(backend: dict[str, Any]) -> None:
    async with (
        serve_master(make_config(backend)) as (_, url),
        Client(
            url, mode="2026-07-28", sampling_callback=sample, elicitation_callback=elicit, list_roots_callback=roots
        ) as client,
    ):
        assert text(await client.call_tool("live__ask_llm", {"prompt": "hi"})) == "model says: hi"
        answered = json.loads(text(await client.call_tool("live__ask_user", {})))
        assert answered == {"action": "accept", "content": {"name": "Ada"}}
        assert json.loads(text(await client.call_tool("live__client_roots", {}))) == ["file:///work/project"]
        with pytest.raises(MCPError, match="requestState"):
            await client.session.call_tool(
                "live__ask_llm", {"prompt": "x"}, request_state="forged", allow_input_required=True
            )


@pytest.mark.parametrize("when", ["up at the swap", "up later"])
async def test_a_reloaded_server_gets_the_subscriptions_and_log_level_of_the_old(when: str) -> None:
    """A reload that changes a server replaces its connection; the new backend session must be told what the front
    sessions asked of the old one, whether it is up when the reload swaps it in or only comes up afterwards."""
    first = HttpBackend("--name", "first")
    second: ServerProcess | None = None
    port = free_port()
    url_after = f"http://127.0.0.1:{port}/mcp"

    def start_second() -> ServerProcess:
        return ServerProcess([sys.executable, FIXTURE, "--http", str(port), "--name", "second"], port)

    try:
        async with (
            serve_master(make_config({"id": "live", "type": "http", "url": first.url})) as (master, url),
            Client(url, mode="legacy") as client,
        ):
            await client.subscribe_resource("live+fixture://static")
            await client.set_logging_level("warning")
            if when == "up at the swap":
                second = start_second()
            await master.reload(make_config({"id": "live", "type": "http", "url": url_after}))
            assert (master.pool.get("live").state.value == "up") == (when == "up at the swap")
            if second is None:
                second = start_second()
            await wait_until(lambda: master.pool.get("live").state.value == "up", timeout=30)

            async def told() -> dict[str, int]:
                return dict(json.loads(text(await client.call_tool("live__request_counts", {}))))

            with anyio.fail_after(10):
                while (await told()).get("logging/setLevel") != 1:  # noqa: ASYNC110 - the backend's own count
                    await anyio.sleep(0.05)
            counts = await told()
            assert counts["subscribe fixture://static"] == 1 and counts["logging/setLevel"] == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_subscriptions_survive_a_backend_restart() -> None:
    inbox = Inbox()
    async with (
        serve_master(make_config(stdio_server("live"))) as (master, url),
        Client(url, mode="legacy", message_handler=inbox.on_message) as client,
    ):
        await client.subscribe_resource("live+fixture://static")
        await client.call_tool("live__crash", {})
        live = master.pool.get("live")
        await wait_until(lambda: live.connects == 2 and live.state.value == "up")
        # the new process was told about the subscription again

        async def subscribed() -> bool:
            counts = json.loads(text(await client.call_tool("live__request_counts", {})))
            return counts.get("subscribe fixture://static", 0) == 1

        with anyio.fail_after(10):
            while not await subscribed():  # noqa: ASYNC110 - the backend's own count, polled over MCP
                await anyio.sleep(0.05)
        await client.call_tool("live__touch_resource", {"uri": "fixture://static"})
        await wait_until(lambda: bool(inbox.of(types.ResourceUpdatedNotification)))
