"""The master's client side of streamable HTTP (`backends/http_wire.py`, `backends/streamable.py`, `sse_events.py`).

Against the fixture backend where it can show the behaviour, and otherwise against a scripted HTTP server on
loopback (a real socket server whose answers each test writes, for what no SDK server does on request: a
redirect, an event stream that breaks off and is resumed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.client._probe import negotiate_auto
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, JSONRPCNotification, JSONRPCRequest

from master_mcp.backends import legacy_sse
from master_mcp.backends.http_wire import HttpWire
from master_mcp.backends.sse_events import Event, EventParser, EventTooLarge
from master_mcp.backends.transports import open_transport
from master_mcp.backends.watched import WatchedDispatcher
from tests.conftest import HttpBackend, make_config, text, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["master", "sdk"])
def dispatcher(request: pytest.FixtureRequest) -> str:
    """Whose dispatcher a transport-level test's session has: the master's, which makes a call in its caller's own
    task (`SessionWrites.call`), or the SDK's, which writes it to the session's stream."""
    return str(request.param)


def session_over(read: Any, write: Any, dispatcher: str, **kwargs: Any) -> ClientSession:
    if dispatcher == "master":
        return ClientSession(dispatcher=WatchedDispatcher(read, write, lambda context: None), **kwargs)
    return ClientSession(read, write, **kwargs)


INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[bytes]]


def connections_to(port: int) -> int:
    """Sockets of this machine connected to loopback `port`, open or in TIME_WAIT: one per connection made."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        remote = line.split()[2]
        if remote.endswith(f":{port:04X}"):
            count += 1
    return count


async def test_a_2026_07_28_session_goes_over_the_transport_as_it_is(http_backend: HttpBackend, tmp_path: Path) -> None:
    """The master's backend sessions begin with `initialize`, but the transport carries a 2026-07-28 session as well
    (discover, then sessionless POSTs with the headers the session sets); the benchmark's floor hops over it so."""
    server = make_config({"id": "remote", "type": "http", "url": http_backend.url}).servers[0]
    async with open_transport(server, tmp_path) as (read, write), ClientSession(read, write) as session:
        await negotiate_auto(session)
        assert session.discover_result is not None and session.initialize_result is None  # no handshake fallback
        assert text(await session.call_tool("echo", {"text": "modern"})) == "modern"
        assert text(await session.call_tool("echo", {"text": "again"})) == "again"


async def test_calls_to_an_http_backend_share_one_connection(http_backend: HttpBackend, tmp_path: Path) -> None:
    server = make_config({"id": "remote", "type": "http", "url": http_backend.url}).servers[0]
    port = int(http_backend.url.split(":")[2].split("/")[0])
    async with open_transport(server, tmp_path) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("echo", {"text": "warm"})  # by now the standalone stream has its own connection
        before = connections_to(port)
        for i in range(20):
            result = await session.call_tool("echo", {"text": str(i)})
            assert text(result) == str(i)
        # A connection per call would leave twenty sockets behind (TIME_WAIT); reused, there is no new one.
        assert connections_to(port) - before <= 1


@asynccontextmanager
async def _relay(target_port: int, watch: Callable[[], Callable[[bool], bool]]) -> AsyncIterator[int]:
    """A relay to `target_port`. `watch()` makes each connection's judge, which sees every chunk (True: from the
    client) and says when to close the connection there, the chunk unsent and unanswered. Once the backend is
    gone the relay still accepts connections, and closes them unanswered, as a TCP proxy does."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        drops = watch()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, from_client: bool) -> None:
            while data := await source.read(65536):
                if drops(from_client):
                    break
                sink.write(data)
                await sink.drain()
            writer.close()
            backend_writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(pipe(reader, backend_writer, True), pipe(backend_reader, writer, False))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def closing_idle_connections(target_port: int, idle_s: float) -> AsyncIterator[int]:
    """A relay that drops a connection whose next request comes after `idle_s` without traffic: what a server does
    whose keep-alive timer fires as the request arrives, made certain."""

    def watch() -> Callable[[bool], bool]:
        last = time.monotonic()

        def drops(from_client: bool) -> bool:
            nonlocal last
            if from_client and time.monotonic() - last > idle_s:
                return True
            last = time.monotonic()
            return False

        return drops

    async with _relay(target_port, watch) as port:
        yield port


@asynccontextmanager
async def dropping_when_armed(target_port: int) -> AsyncIterator[tuple[int, Callable[[], None]]]:
    """A relay, and a function that arms it: the first request to arrive once armed has its connection closed
    unread and unanswered, what a backend does that closes a kept-alive connection just as a request goes out on
    it. Each call of the function arms it for one request."""
    armed = [False]

    def drops(from_client: bool) -> bool:
        if from_client and armed[0]:
            armed[0] = False
            return True
        return False

    def arm() -> None:
        armed[0] = True

    async with _relay(target_port, lambda: drops) as port:
        yield port, arm


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_an_idle_connection_is_let_go_before_the_backend_closes_it(kind: str, tmp_path: Path) -> None:
    # The SDK's server (uvicorn) closes an idle connection after 5 s; a relay stands in for it, closing after 4.5 s
    # only when a request arrives, so that the race the master must not run is lost every time it is run.
    backend = HttpBackend(sse=kind == "sse")
    try:
        port = int(backend.url.split(":")[2].split("/")[0])
        async with closing_idle_connections(port, idle_s=4.5) as relay_port:
            url = backend.url.replace(f":{port}/", f":{relay_port}/")
            server = make_config({"id": "remote", "type": kind, "url": url}).servers[0]
            async with open_transport(server, tmp_path) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                assert text(await session.call_tool("echo", {"text": "before"})) == "before"
                await anyio.sleep(4.8)
                with anyio.fail_after(10):
                    assert text(await session.call_tool("echo", {"text": "after"})) == "after"
    finally:
        backend.stop()


async def test_a_response_that_does_not_end_is_closed_anyway(http_backend: HttpBackend) -> None:
    """A POST whose event stream stays open (a slow tool) is released when its reader stops, after a short drain,
    and the next request still gets through."""
    async with HttpWire(http_backend.url, headers={}, auth=None, instances=None) as wire:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        opened = await wire.request("POST", headers, json.dumps(_request(1, "initialize", INIT)).encode())
        await opened.read()
        await opened.finish()
        headers["mcp-session-id"] = opened.headers["mcp-session-id"]
        notice = await wire.request("POST", headers, b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        await notice.finish()
        slow = _request(2, "tools/call", {"name": "slow", "arguments": {"seconds": 30}})
        with anyio.fail_after(5):
            reply = await wire.request("POST", headers, json.dumps(slow).encode())
            assert reply.status == 200
            await reply.finish()
            pong = await wire.request("POST", headers, json.dumps(_request(3, "ping")).encode())
            events = EventParser(limit=1 << 20).feed(await pong.read())
            assert json.loads(events[-1].data)["result"] == {}
            await pong.finish()


EVENTS = [
    Event("message", '{"a": 1}', "1"),
    Event("message", "line one\nline two", "2"),
    Event("ping", "", "2"),
    Event("message", "", "3"),
]
WIRE = (
    b'\xef\xbb\xbf: a comment after a byte order mark\r\nid: 1\r\ndata: {"a": 1}\r\n\r\n'
    b"id: 2\nretry: 3000\ndata: line one\ndata:line two\n\n"
    b"event: ping\rdata\r\r"
    b"event: nothing\n\n"  # no data: no event
    b"id: 3\ndata: \n\n"
    b"id: 4\n\n"
)


@given(st.lists(st.integers(min_value=1, max_value=len(WIRE)), max_size=12))
def test_events_are_the_same_however_the_stream_is_cut(cuts: list[int]) -> None:
    parser = EventParser(limit=1024)
    seen: list[Event] = []
    last = 0
    for cut in [*sorted(cuts), len(WIRE)]:
        seen += parser.feed(WIRE[last:cut])
        last = max(last, cut)
    assert seen == EVENTS
    assert parser.last_id == "4" and parser.retry_ms == 3000  # from the block with no data at the end


def test_a_retry_that_is_not_a_number_is_ignored() -> None:
    parser = EventParser(limit=1024)
    assert parser.feed("retry: \u00b2\nretry: 1x\ndata: ok\n\n".encode()) == [Event("message", "ok", None)]
    assert parser.retry_ms is None


def test_a_large_event_in_many_chunks_arrives_whole() -> None:
    data = b"x" * (4 << 20)
    wire = b"id: big\r\ndata: " + data + b"\r\n\r\n"
    parser = EventParser(limit=8 << 20)
    seen = [event for start in range(0, len(wire), 65536) for event in parser.feed(wire[start : start + 65536])]
    assert seen == [Event("message", data.decode(), "big")]


def test_an_event_over_the_limit_is_refused() -> None:
    parser = EventParser(limit=100)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 60 + b"\n")
    with pytest.raises(EventTooLarge):
        EventParser(limit=100).feed(b"data: " + b"z" * 200)  # no line end yet: still bounded


def _request(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}


def _http(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), f"content-length: {len(body)}"]
    lines.append("connection: close")  # the scripted server answers once per connection
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Held(bytes):
    """An answer left unfinished: its connection stays open until the client closes it, then `closed` is set."""

    closed: anyio.Event


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ", 2)
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    return method, path, headers, await reader.readexactly(int(headers.get("content-length", "0")))


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[int]:
    """An HTTP/1.1 server on a loopback port whose every answer comes from `handler` (method, path, headers,
    body); the connection is closed after each answer, so an answer may be cut short on purpose, or, for a `Held`
    answer, once the client closes it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, headers, body = await read_request(reader)
            answer = await handler(method, path, headers, body)
            writer.write(answer)
            await writer.drain()
            if isinstance(answer, Held):
                await reader.read()  # until the client closes its end
                answer.closed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def backend_script(call: Handler) -> Handler:
    """A backend that opens a session, answers pings, offers no standalone stream and leaves everything else to
    `call`."""

    async def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "GET" and "last-event-id" not in headers:
            return _http("405 Method Not Allowed", {})
        if method == "DELETE":
            return _http("200 OK", {})
        message = json.loads(body) if body else {}
        if message.get("method") == "initialize":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted", "version": "1"},
            }
            answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
            return _http("200 OK", {"content-type": "application/json", "mcp-session-id": "s-1"}, answer)
        if "id" not in message and method == "POST":
            return _http("202 Accepted", {})
        if message.get("method") == "ping":
            answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}}).encode()
            return _http("200 OK", {"content-type": "application/json"}, answer)
        if message.get("method") == "tools/list":
            tool = {"name": "echo", "inputSchema": {"type": "object"}}
            answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [tool]}}).encode()
            return _http("200 OK", {"content-type": "application/json"}, answer)
        return await call(method, path, headers, body)

    return handler


def _tool_result(request_id: Any, words: str) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": words}]}})


def _innermost(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):  # the session's task groups wrap what its call raised
        exc = exc.exceptions[0]
    return str(exc)


async def _call_through(port: int, dispatcher: str, path: str = "/mcp") -> str:
    server = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}{path}"}).servers[0]
    async with open_transport(server, Path(".")) as (read, write), session_over(read, write, dispatcher) as session:
        with anyio.fail_after(10):
            await session.initialize()
            return text(await session.call_tool("echo", {"text": "x"}))


async def test_a_redirect_within_the_origin_is_followed_and_one_elsewhere_is_a_clear_error(dispatcher: str) -> None:
    paths: list[str] = []

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        paths.append(path)
        if path == "/mcp":  # the trailing-slash normalisation a mounted app does
            return _http("307 Temporary Redirect", {"location": "/mcp/"})
        if path == "/away":
            return _http("307 Temporary Redirect", {"location": "http://user:PASSWORD@127.0.0.2:1/mcp?key=SECRET"})
        answer = _tool_result(json.loads(body)["id"], "ok").encode()
        return _http("200 OK", {"content-type": "application/json"}, answer)

    async with scripted(backend_script(call)) as port:
        assert await _call_through(port, dispatcher) == "ok"
        assert paths[-2:] == ["/mcp", "/mcp/"]
        with pytest.raises(Exception) as refused:
            await _call_through(port, dispatcher, "/away")
    message = _innermost(refused.value)
    assert "http://127.0.0.2:1/mcp" in message and "not followed" in message
    assert "SECRET" not in message and "PASSWORD" not in message


async def test_an_event_stream_cut_after_an_event_id_is_resumed_from_it(dispatcher: str) -> None:
    resumed: list[str] = []

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        sse = {"content-type": "text/event-stream"}
        if method == "POST":
            # The answer is not there yet: a priming event, then the connection closes.
            return _http("200 OK", sse, b"id: ev-1\ndata: \n\n")
        resumed.append(headers["last-event-id"])
        return _http("200 OK", sse, f"id: ev-2\ndata: {_tool_result(2, 'resumed')}\n\n".encode())

    async with scripted(backend_script(call)) as port:
        assert await _call_through(port, dispatcher) == "resumed"
    assert resumed == ["ev-1"]


async def test_the_standalone_stream_reconnects_from_its_last_event_id() -> None:
    """What a backend sends outside any request arrives across a reconnect: the new GET names the last event
    seen, after the delay the backend asked for."""
    asked: list[str | None] = []

    def notice(method: str) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "method": method}).encode()

    async def stream(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "GET":
            asked.append(headers.get("last-event-id"))
            sse = {"content-type": "text/event-stream"}
            if len(asked) == 1:
                return _http(
                    "200 OK", sse, b"id: g-1\nretry: 10\ndata: " + notice("notifications/tools/list_changed") + b"\n\n"
                )
            if len(asked) == 2:
                return _http("200 OK", sse, b"id: g-2\ndata: " + notice("notifications/prompts/list_changed") + b"\n\n")
            return _http("405 Method Not Allowed", {})
        return await backend_script(_no_calls)(method, path, headers, body)

    seen: list[str] = []
    both = anyio.Event()

    async def collect(message: Any) -> None:
        if hasattr(message, "method"):
            seen.append(message.method)
        if len(seen) == 2:
            both.set()

    async with scripted(stream) as port:
        server = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        async with open_transport(server, Path(".")) as (read, write):
            async with ClientSession(read, write, message_handler=collect) as session:
                with anyio.fail_after(10):
                    await session.initialize()
                    await both.wait()
    assert seen == ["notifications/tools/list_changed", "notifications/prompts/list_changed"]
    assert asked[:2] == [None, "g-1"]


async def _no_calls(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    return _http("500 Internal Server Error", {})


async def test_a_proxy_named_by_the_environment_is_used_unless_no_proxy_excludes_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As httpx2 did: `HTTP_PROXY` (here without a scheme) carries backend requests (the proxy is a scripted
    loopback server that sees the absolute URL), `NO_PROXY` sends a host's requests straight to it, and a proxy
    kind the backend hop cannot use is refused without its credentials in the message."""
    through: list[str] = []

    async def proxy(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        through.append(path)
        return _http("200 OK", {"content-type": "application/json"}, b"{}")

    async with scripted(proxy) as port:
        for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{port}")  # no scheme: taken as http, as httpx2 takes it
        async with HttpWire("http://backend.invalid:9/mcp", headers={}, auth=None, instances=None) as wire:
            reply = await wire.request("POST", {"content-type": "application/json"}, b"{}")
            await reply.finish()
        assert through == ["http://backend.invalid:9/mcp"]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with HttpWire(f"http://127.0.0.1:{port}/direct", headers={}, auth=None, instances=None) as wire:
            reply = await wire.request("POST", {"content-type": "application/json"}, b"{}")
            await reply.finish()
        assert through[1:] == ["/direct"]

    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTP_PROXY", "socks5://user:PASSWORD@127.0.0.1:1080")
    with pytest.raises(ValueError, match="socks5 proxy") as refused:
        HttpWire("http://backend.invalid:9/mcp", headers={}, auth=None, instances=None)
    assert "PASSWORD" not in str(refused.value)


@pytest.mark.parametrize("kind", ["application/json", "text/event-stream"])
async def test_an_answer_that_is_not_json_rpc_is_a_clear_error_for_that_call(kind: str, dispatcher: str) -> None:
    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        garbage = b'{"not": "json-rpc"}'
        answer = b"data: " + garbage + b"\n\n" if kind == "text/event-stream" else garbage
        return _http("200 OK", {"content-type": kind}, answer)

    async with scripted(backend_script(call)) as port:
        with pytest.raises(Exception) as refused:
            await _call_through(port, dispatcher)
    assert "is not a JSON-RPC message" in _innermost(refused.value)


async def test_a_call_given_up_on_closes_its_post_even_when_the_backend_hangs(dispatcher: str) -> None:
    """The session times a call out and tells the backend; a backend that never answers must not keep the POST
    (a connection and a task of the master) open until the read timeout."""
    hung = Held(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    hung.closed = anyio.Event()

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        return hung

    async with scripted(backend_script(call)) as port:
        config = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        async with open_transport(config, Path(".")) as (read, write), session_over(read, write, dispatcher) as session:
            with anyio.fail_after(10):
                await session.initialize()
                with pytest.raises(Exception, match=r"(?i)timed out"):
                    await session.call_tool("echo", {"text": "x"}, read_timeout_seconds=0.5)
                await hung.closed.wait()


async def test_a_call_goes_out_after_what_the_session_wrote_before_it(dispatcher: str) -> None:
    """The first listing follows `notifications/initialized`, even when the backend takes a while over that
    notification (a backend may add tools when it gets it): a call made in its caller's own task must not overtake
    what was written to the session's stream before it."""
    order: list[str] = []

    async def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        message = json.loads(body) if body else {}
        if message.get("method") == "notifications/initialized":
            await anyio.sleep(0.3)  # makes overtaking likely; nothing here waits for it to pass
            order.append("initialized")
        elif message.get("method") == "tools/list":
            order.append("tools/list")
        return await backend_script(_no_calls)(method, path, headers, body)

    async with scripted(handler) as port:
        config = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        async with open_transport(config, Path(".")) as (read, write), session_over(read, write, dispatcher) as session:
            with anyio.fail_after(10):
                await session.initialize()
                await session.list_tools()
    assert order == ["initialized", "tools/list"]


async def test_a_write_given_up_on_holds_up_no_call(dispatcher: str) -> None:
    """A message written to the session's stream and given up on before it was taken (a courtesy cancel's bounded
    write, while the stream's writer is busy sending a slow notification) must not hold up the calls made after it
    was written, once what was taken has been sent."""
    slow_taken = anyio.Event()

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        message = json.loads(body)
        words = message["params"]["arguments"]["text"]
        return _http("200 OK", {"content-type": "application/json"}, _tool_result(message["id"], words).encode())

    async def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if body and json.loads(body).get("method") == "notifications/slow":
            slow_taken.set()
            await anyio.sleep(1)
        return await backend_script(call)(method, path, headers, body)

    def note(method: str) -> SessionMessage:
        return SessionMessage(JSONRPCNotification(jsonrpc="2.0", method=method))

    async def given_up(write: Any) -> None:
        with anyio.move_on_after(0.5):
            await write.send(note("notifications/given-up"))

    async with scripted(handler) as port:
        config = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        async with open_transport(config, Path(".")) as (read, write), session_over(read, write, dispatcher) as session:
            with anyio.fail_after(10):
                await session.initialize()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(write.send, note("notifications/slow"))
                    await slow_taken.wait()  # the stream's writer is busy with it for a second
                    tg.start_soon(given_up, write)
                    # The SDK's stream wrapper keeps the anyio stream it wraps private; its statistics say when the
                    # write is waiting.
                    await wait_until(lambda: write._inner.statistics().tasks_waiting_send == 1)
                    assert text(await session.call_tool("echo", {"text": "after"})) == "after"


async def test_a_call_in_flight_ends_when_its_session_closes(dispatcher: str) -> None:
    """A session that closes (retired after a reload, or its transport failed) ends the calls on it, and closes their
    POSTs, before it tells the backend with a DELETE (which may take a while): even one whose backend never answers,
    and one made in its caller's own task (a front request's, as the master makes them), which the session's own
    tasks ending would not reach."""
    hung = Held(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    hung.closed = anyio.Event()
    called = anyio.Event()
    close = anyio.Event()
    closed_before_delete: list[bool] = []

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        called.set()
        return hung

    async def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "DELETE":
            with anyio.move_on_after(3):  # ample: the call's POST is closed within moments, or only after this
                await hung.closed.wait()
            closed_before_delete.append(hung.closed.is_set())
        return await backend_script(call)(method, path, headers, body)

    async def hold(port: int, *, task_status: anyio.abc.TaskStatus[ClientSession]) -> None:
        config = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        async with open_transport(config, Path(".")) as (read, write), session_over(read, write, dispatcher) as session:
            await session.initialize()
            task_status.started(session)
            await close.wait()

    async def caller(session: ClientSession) -> None:
        with pytest.raises(MCPError) as failed:
            await session.call_tool("echo", {"text": "x"})
        assert failed.value.error.code == CONNECTION_CLOSED

    async with scripted(handler) as port:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                session = await tasks.start(hold, port)
                tasks.start_soon(caller, session)  # not one of the session's tasks, as a front request's is not
                await called.wait()
                close.set()
    assert closed_before_delete == [True]


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(b"", id="closed-unanswered"),
        pytest.param(
            b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"jsonrpc": "2.0", ',
            id="body-cut-short",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-len", id="head-cut-short"),
    ],
)
async def test_a_request_whose_connection_breaks_is_lost_alone(broken: bytes, dispatcher: str) -> None:
    """A connection that breaks under one request (the backend closed it as it was reused, a proxy cut the body)
    costs that request, not the session: the next call goes out on a new connection of the same session, and
    nothing is opened again. The scripted server closes the connection once `broken` is written."""
    calls: list[str] = []

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        message = json.loads(body)
        words = message["params"]["arguments"]["text"]
        calls.append(words)
        if words == "break":
            return broken
        return _http("200 OK", {"content-type": "application/json"}, _tool_result(message["id"], words).encode())

    async with scripted(backend_script(call)) as port:
        config = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        async with open_transport(config, Path(".")) as (read, write), session_over(read, write, dispatcher) as session:
            with anyio.fail_after(10):
                init = await session.initialize()
                with pytest.raises(MCPError) as lost:
                    await session.call_tool("echo", {"text": "break"})
                assert lost.value.error.code == CONNECTION_CLOSED
                assert "connection failed" in lost.value.error.message
                assert text(await session.call_tool("echo", {"text": "after"})) == "after"
    assert calls == ["break", "after"]
    assert init.server_info.name == "scripted"


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_a_message_whose_connection_is_closed_unread_is_lost_alone(kind: str, tmp_path: Path) -> None:
    # The session (for SSE: its one event stream) must not go with it, nor stop sending.
    backend = HttpBackend(sse=kind == "sse")
    try:
        async with dropping_when_armed(backend.port) as (relay_port, arm):
            url = backend.url.replace(f":{backend.port}/", f":{relay_port}/")
            server = make_config({"id": "remote", "type": kind, "url": url}).servers[0]
            async with open_transport(server, tmp_path) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                assert text(await session.call_tool("echo", {"text": "before"})) == "before"
                arm()
                with anyio.fail_after(10):
                    with pytest.raises(MCPError) as lost:
                        await session.call_tool("echo", {"text": "lost"})
                    assert lost.value.error.code == CONNECTION_CLOSED
                    assert text(await session.call_tool("echo", {"text": "after"})) == "after"
    finally:
        backend.stop()


async def test_an_sse_backend_whose_url_holds_credentials_is_reached() -> None:
    # A URL's user info goes as Basic credentials; the endpoint, joined to that URL, carries the same.
    backend = HttpBackend(sse=True)
    try:
        url = backend.url.replace("http://", "http://user:pass@")
        server = make_config({"id": "old", "type": "sse", "url": url}).servers[0]
        async with open_transport(server, Path(".")) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(10):
                await session.initialize()
                assert text(await session.call_tool("echo", {"text": "in"})) == "in"
    finally:
        backend.stop()


@pytest.mark.parametrize(
    ("ping_answer", "gone"),
    [("502 Bad Gateway", True), ("504 Gateway Timeout", True), ("503 Service Unavailable", False), ("401", False)],
)
async def test_after_a_call_gets_no_answer_a_ping_decides_whether_the_backend_is_gone(
    ping_answer: str, gone: bool, dispatcher: str
) -> None:
    """A call whose connection is closed unanswered is followed by a ping on a new connection. A gateway's 502 or
    504 to it means nothing is behind the gateway: the session ends (its supervisor reconnects) rather than staying
    up and failing every call. Any other answer, a busy 503 or a 401 included, is the backend still there: the
    session goes on."""
    pings: list[str] = []

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        message = json.loads(body)
        words = message["params"]["arguments"]["text"]
        if words == "drop":
            return b""
        return _http("200 OK", {"content-type": "application/json"}, _tool_result(message["id"], words).encode())

    answer = _http(ping_answer.replace("401", "401 Unauthorized"), {"content-type": "text/plain"}, b"no")
    async with scripted(_pinged(backend_script(call), answer, pings)) as port:
        server = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        with anyio.fail_after(10), pytest.raises(Exception) if gone else contextlib.nullcontext() as ended:
            async with (
                open_transport(server, Path(".")) as (read, write),
                session_over(read, write, dispatcher) as session,
            ):
                await session.initialize()
                with pytest.raises(MCPError):
                    await session.call_tool("echo", {"text": "drop"})
                assert text(await session.call_tool("echo", {"text": "still"})) == "still"
    assert pings == ["s-1"]
    if gone:
        assert f"stopped answering (a ping on a new connection: HTTP {ping_answer[:3]})" in _innermost(ended.value)


async def test_a_ping_answered_404_tells_that_the_backend_forgot_the_session(dispatcher: str) -> None:
    # A backend restarted at the same address breaks the calls in flight, then answers 404 for the old session: the
    # connection is told, so it opens a new session rather than sending on the dead one.
    forgotten: list[bool] = []
    pings: list[str] = []

    async def call(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        return b""

    async with scripted(_pinged(backend_script(call), _http("404 Not Found", {}), pings)) as port:
        server = make_config({"id": "s", "type": "http", "url": f"http://127.0.0.1:{port}/mcp"}).servers[0]
        transport = open_transport(server, Path("."), on_forgotten=lambda: forgotten.append(True))
        async with transport as (read, write), session_over(read, write, dispatcher) as session:
            with anyio.fail_after(10):
                await session.initialize()
                with pytest.raises(MCPError):
                    await session.call_tool("echo", {"text": "x"})
    assert forgotten == [True] and pings == ["s-1"]


def _pinged(script: Handler, answer: bytes, pings: list[str]) -> Handler:
    """`script`, except that a ping is recorded (its session id) and answered with `answer`."""

    async def handler(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "POST" and json.loads(body).get("method") == "ping":
            pings.append(headers.get("mcp-session-id", ""))
            return answer
        return await script(method, path, headers, body)

    return handler


async def test_an_sse_result_over_a_mebibyte_arrives_whole(tmp_path: Path) -> None:
    # One answer is one event; an event limit of the SDK's 1 MiB would fail every larger result.
    backend = HttpBackend(sse=True)
    try:
        server = make_config({"id": "old", "type": "sse", "url": backend.url}).servers[0]
        words = "0123456789abcdef" * (3 * 2**16)  # 3 MiB
        async with open_transport(server, tmp_path) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(30):
                await session.initialize()
                assert text(await session.call_tool("echo", {"text": words})) == words
    finally:
        backend.stop()


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([b"event: endpoint\ndata: http://127.0.0.2:1/messages?session_id=SECRET\n\n"], "elsewhere than"),
        ([b"event: endpoint\ndata: https://127.0.0.1/messages\n\n"], "elsewhere than"),
        ([b"event: endpoint\ndata: //user:SECRET@127.0.0.1:{port}/messages\n\n"], "elsewhere than"),
        ([b"event: endpoint\ndata: mailto:SECRET\n\n"], "does not hold a URL"),
        ([b": a comment\n\n", b"event: message\ndata: {}\n\n"], "ended before it named an endpoint"),
    ],
)
async def test_an_sse_backend_is_posted_to_on_its_own_origin_only(events: list[bytes], expected: str) -> None:
    """Whatever is POSTed carries the backend's credentials: an endpoint elsewhere is refused before anything is
    sent, and the error names its origin, never its path or query."""
    posted: list[str] = []

    async def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "GET":  # a stream with these events, which ends as the connection closes
            sent = b"".join(events).replace(b"{port}", headers["host"].split(":")[1].encode())
            return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + sent
        posted.append(path)
        return _http("202 Accepted", {})

    async with scripted(answer) as port:
        server = make_config({"id": "old", "type": "sse", "url": f"http://127.0.0.1:{port}/sse"}).servers[0]
        with anyio.fail_after(10), pytest.raises(Exception) as refused:
            async with open_transport(server, Path(".")):
                pass
    message = _innermost(refused.value)
    assert expected in message and "SECRET" not in message and "messages" not in message
    assert posted == []


def _sse_backend(endpoint: bytes, post_status: str, posted: list[tuple[str, bytes]]) -> Handler:
    """A scripted HTTP+SSE backend: its stream names `endpoint` and stays open; every POST is recorded (path and
    body) and answered with `post_status`, except one whose body says "stall", which is never answered; nothing
    ever comes on the stream."""

    async def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "GET":
            opening = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\ndata: "
            held = Held(opening + endpoint + b"\n\n")
            held.closed = anyio.Event()
            return held
        posted.append((path, body))
        if b'"stall"' in body:  # a POST the backend never answers (its event loop is blocked, say)
            stalled = Held(b"")
            stalled.closed = anyio.Event()
            return stalled
        return _http(post_status, {})

    return answer


async def test_an_sse_endpoint_is_posted_to_exactly_as_named() -> None:
    # A query signed over its bytes (%2F is not /) must reach the backend as the backend wrote it; what cannot
    # stand in a URL at all (a space) is escaped.
    posted: list[tuple[str, bytes]] = []
    endpoint = b"/messages/?session_id=abc&sig=a%2Fb%3D&note=a b"
    async with scripted(_sse_backend(endpoint, "202 Accepted", posted)) as port:
        server = make_config({"id": "old", "type": "sse", "url": f"http://127.0.0.1:{port}/sse"}).servers[0]
        async with open_transport(server, Path(".")) as (_, write):
            with anyio.fail_after(10):
                await write.send(SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/x")))
                while not posted:  # noqa: ASYNC110 - the scripted backend's own record
                    await anyio.sleep(0.01)
    assert posted[0][0] == "/messages/?session_id=abc&sig=a%2Fb%3D&note=a%20b"  # only the space is escaped


async def test_an_sse_backend_that_forgets_the_session_ends_it() -> None:
    # A 404 to a POST: the backend no longer knows the session (it restarted, or a balancer sent the POST to
    # another replica). The session ends, so the supervisor opens a new one, rather than failing every call.
    posted: list[tuple[str, bytes]] = []
    async with scripted(_sse_backend(b"/messages/?session_id=gone", "404 Not Found", posted)) as port:
        server = make_config({"id": "old", "type": "sse", "url": f"http://127.0.0.1:{port}/sse"}).servers[0]
        with anyio.fail_after(10), pytest.raises(Exception) as ended:
            async with open_transport(server, Path(".")) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
    assert "no longer knows the session (HTTP 404)" in _innermost(ended.value)
    assert len(posted) == 1


async def test_an_sse_backend_that_fails_a_post_fails_that_request_only() -> None:
    # A 5xx to a POST is the backend failing that message, not forgetting the session (that is a 404, above): the
    # request is answered with an error naming the status, and the session goes on taking requests.
    posted: list[tuple[str, bytes]] = []
    async with scripted(_sse_backend(b"/messages/?session_id=abc", "503 Service Unavailable", posted)) as port:
        server = make_config({"id": "old", "type": "sse", "url": f"http://127.0.0.1:{port}/sse"}).servers[0]
        async with open_transport(server, Path(".")) as (read, write), ClientSession(read, write) as session:
            for attempt in (session.initialize, session.send_ping):
                with anyio.fail_after(10), pytest.raises(MCPError) as refused:
                    await attempt()
                assert "the backend refused the message: HTTP 503" in refused.value.error.message
    assert [path for path, _ in posted] == ["/messages/?session_id=abc"] * 2


async def test_an_sse_session_opens_with_credentials_that_read_response_bodies(tmp_path: Path) -> None:
    """A credential flow that reads response bodies (as the SDK's OAuth provider does) is never handed an event
    stream to read to its end: the session's stream never ends."""

    class Stamping(httpx2.Auth):
        requires_response_body = True

        def auth_flow(self, request: httpx2.Request) -> Any:
            request.headers["x-stamp"] = "1"
            yield request

    backend = HttpBackend(sse=True)
    try:
        server = make_config({"id": "old", "type": "sse", "url": backend.url}).servers[0]
        with anyio.fail_after(20):
            async with (
                open_transport(server, tmp_path, auth=Stamping()) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                assert text(await session.call_tool("echo", {"text": "hi"})) == "hi"
    finally:
        backend.stop()


async def _call_tools(write: Any, *names: str) -> None:
    """Send a `tools/call` request for each name, numbered from 0, as a session would."""
    for number, name in enumerate(names):
        request = JSONRPCRequest(jsonrpc="2.0", id=number, method="tools/call", params={"name": name})
        await write.send(SessionMessage(request))


async def test_an_sse_post_the_backend_never_takes_holds_up_no_other() -> None:
    posted: list[tuple[str, bytes]] = []
    async with scripted(_sse_backend(b"/messages/?session_id=s", "202 Accepted", posted)) as port:
        server = make_config({"id": "old", "type": "sse", "url": f"http://127.0.0.1:{port}/sse"}).servers[0]
        async with open_transport(server, Path(".")) as (_, write):
            with anyio.fail_after(5):
                await _call_tools(write, "stall", "next")
                while len(posted) < 2:  # noqa: ASYNC110 - the scripted backend's own record
                    await anyio.sleep(0.01)
    assert b'"next"' in posted[1][1]


async def test_an_sse_cancellation_follows_its_request_and_gives_up_one_never_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancellation is POSTed only once its request's POST has been taken, so the backend never hears of it
    first; a request the backend never takes is given up after `_POST_WITHIN_S` (shortened here from 10 s), its
    connection closed, and its cancellation POSTed then."""
    monkeypatch.setattr(legacy_sse, "_POST_WITHIN_S", 0.3)
    posted: list[tuple[str, bytes]] = []
    stalled: list[Held] = []
    answer = _sse_backend(b"/messages/?session_id=s", "202 Accepted", posted)

    async def keeping(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        reply = await answer(method, path, headers, body)
        if method == "POST" and isinstance(reply, Held):
            stalled.append(reply)
        return reply

    async with scripted(keeping) as port:
        server = make_config({"id": "old", "type": "sse", "url": f"http://127.0.0.1:{port}/sse"}).servers[0]
        async with open_transport(server, Path(".")) as (_, write):
            with anyio.fail_after(5):
                await _call_tools(write, "stall", "quick")
                sent = anyio.current_time()
                for number in (1, 0):
                    cancel = {"requestId": number, "reason": "the caller gave up"}
                    await write.send(
                        SessionMessage(
                            JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled", params=cancel)
                        )
                    )
                while len(posted) < 4:  # noqa: ASYNC110 - the scripted backend's own record
                    await anyio.sleep(0.01)
                waited = anyio.current_time() - sent
                await stalled[0].closed.wait()  # the POST never taken was given up: its connection is closed
    seen = [
        (m.get("method"), m.get("id", m.get("params", {}).get("requestId"))) for m in (json.loads(b) for _, b in posted)
    ]
    assert seen.index(("notifications/cancelled", 1)) > seen.index(("tools/call", 1))
    assert seen[-1] == ("notifications/cancelled", 0)  # after the stalled request's wait ran out
    assert waited >= 0.3


class _Bearer(httpx2.Auth):
    def auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["authorization"] = "Bearer from-the-flow"
        yield request


@pytest.mark.parametrize(
    ("headers", "auth", "expected"),
    [
        ({}, None, "Basic dXNlcjpwYSBzcw=="),  # user:pa ss, as the URL gave them
        ({"Authorization": "Bearer configured"}, None, "Bearer configured"),
        ({}, _Bearer(), "Bearer from-the-flow"),
    ],
)
async def test_a_url_with_user_info_gives_basic_credentials_unless_others_are_given(
    headers: dict[str, str], auth: httpx2.Auth | None, expected: str
) -> None:
    # User info in the URL gives Basic credentials, unless an Authorization header is configured or a flow's.
    seen: list[str] = []

    async def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        seen.append(headers.get("authorization", ""))
        return _http("200 OK", {"content-type": "application/json"}, b"{}")

    async with scripted(answer) as port:
        url = f"http://user:pa%20ss@127.0.0.1:{port}/mcp"
        async with HttpWire(url, headers=headers, auth=auth, instances=None) as wire:
            reply = await wire.request("POST", {"content-type": "application/json"}, b"{}")
            await reply.finish()
    assert seen == [expected]
