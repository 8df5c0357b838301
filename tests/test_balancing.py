"""Several instances of one HTTP backend (`urls:`): requests are spread (or kept on the first healthy instance),
a dead instance is skipped and every call still gets its answer; sessions stay on the instance that issued them.

Each instance is a real fixture backend process; what each one served is read from it directly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientSession

from master_mcp.backends.balancer import Instances, Policy
from master_mcp.backends.http_wire import HttpWire
from master_mcp.backends.transports import open_transport
from master_mcp.backends.watched import WatchedDispatcher
from tests.conftest import HttpBackend, make_config, serve_master, text
from tests.test_backend_http import Handler, scripted

pytestmark = pytest.mark.anyio


@pytest.fixture
def instances(request: pytest.FixtureRequest) -> Iterator[list[HttpBackend]]:
    count, *flags = request.param
    started = [HttpBackend("--name", f"instance-{i}", *flags) for i in range(count)]
    yield started
    for backend in started:
        if backend.process.poll() is None:
            backend.stop()


_ASKED: dict[str, int] = {}


async def calls_served(backend: HttpBackend) -> int:
    """The tools/call requests an instance served, less those this function made to ask it."""
    _ASKED[backend.url] = _ASKED.get(backend.url, 0) + 1
    async with Client(backend.url, mode="legacy") as direct:
        counts = json.loads(text(await direct.call_tool("request_counts", {})))
    return int(counts.get("tools/call", 0)) - _ASKED[backend.url]


async def echo_all(client: Client, count: int) -> None:
    for i in range(count):
        result = await client.call_tool("lb__echo", {"text": str(i)})
        assert not result.is_error, text(result)
        assert text(result) == str(i)


@pytest.mark.parametrize("instances", [(3, "--stateless")], indirect=True)
async def test_round_robin_spreads_and_skips_a_dead_instance(instances: list[HttpBackend]) -> None:
    config = make_config({"id": "lb", "type": "http", "urls": [b.url for b in instances], "timeout_s": 10})
    async with serve_master(config) as (_master, url), Client(url, mode="legacy") as client:
        await echo_all(client, 30)
        served = [await calls_served(b) for b in instances]
        assert sum(served) == 30 and all(n >= 5 for n in served), served

        instances[1].stop()
        await echo_all(client, 20)  # nothing lost: a refused connection moves the request to the next instance
        async with httpx2.AsyncClient() as http:
            ready = (await http.get(url.replace("/mcp", "/readyz"))).json()
        row = next(s for s in ready["servers"] if s["id"] == "lb")
        assert [i["up"] for i in row["instances"]] == [True, False, True]
        assert row["instances"][1]["url"] == instances[1].url
        after = [await calls_served(instances[i]) for i in (0, 2)]
        assert sum(after) - served[0] - served[2] == 20


@pytest.mark.parametrize("instances", [(2, "--stateless")], indirect=True)
async def test_health_keeps_to_the_first_live_instance(instances: list[HttpBackend]) -> None:
    urls = [b.url for b in instances]
    config = make_config({"id": "lb", "type": "http", "urls": urls, "load_balancing": "health", "timeout_s": 10})
    async with serve_master(config) as (_master, url), Client(url, mode="legacy") as client:
        await echo_all(client, 10)
        assert [await calls_served(b) for b in instances] == [10, 0]
        instances[0].stop()
        await echo_all(client, 10)
        assert await calls_served(instances[1]) == 10


@pytest.mark.parametrize("instances", [(2,)], indirect=True)
async def test_a_session_stays_on_the_instance_that_issued_it(instances: list[HttpBackend]) -> None:
    config = make_config({"id": "lb", "type": "http", "urls": [b.url for b in instances], "timeout_s": 10})
    async with serve_master(config) as (_master, url), Client(url, mode="legacy") as client:
        await echo_all(client, 12)
        served = sorted([await calls_served(b) for b in instances])
        assert served == [0, 12]


async def test_each_instance_gets_its_own_path_and_query() -> None:
    """Which URL each request is sent to (three loopback servers that answer anything with `{}`). An instance's
    query may carry its own key; no other instance sees it."""
    seen: list[str] = []

    async def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        seen.append(f"{headers['host']}{path}")
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    async with scripted(answer) as a, scripted(answer) as b, scripted(answer) as c:
        urls = [f"http://127.0.0.1:{a}/a/mcp?key=A", f"http://127.0.0.1:{b}/b/mcp?key=B", f"http://127.0.0.1:{c}/mcp"]
        instances = Instances("lb", urls, "round_robin")
        async with HttpWire(urls[0], headers={}, auth=None, instances=instances) as wire:
            for _ in urls:
                reply = await wire.request("POST", {"content-type": "application/json"}, b"{}")
                await reply.finish()
    assert sorted(seen) == sorted(url.removeprefix("http://") for url in urls)


@asynccontextmanager
async def two_instances(first: Handler, second: Handler, policy: Policy) -> AsyncIterator[tuple[HttpWire, Instances]]:
    """A wire to two scripted loopback instances of one backend, spread by `policy`."""
    async with scripted(first) as a, scripted(second) as b:
        urls = [f"http://127.0.0.1:{a}/mcp", f"http://127.0.0.1:{b}/mcp"]
        instances = Instances("lb", urls, policy)
        async with HttpWire(urls[0], headers={}, auth=None, instances=instances) as wire:
            yield wire, instances


async def posted(wire: HttpWire, *, repeatable: bool = False) -> int:
    """The status of the answer to a POST through `wire`."""
    reply = await wire.request("POST", {"content-type": "application/json"}, b"{}", repeatable=repeatable)
    await reply.finish()
    return reply.status


async def test_an_instance_that_answers_502_is_skipped_even_when_it_was_the_last_hope() -> None:
    """A gateway's 502-504 means the instance behind it is not there: each one that answers so is marked down and
    skipped for a while, the last one tried included (its answer still reaches the caller, there being no other).
    The request is one safe to repeat, so it is tried on each."""

    async def unavailable(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        return b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"

    async with two_instances(unavailable, unavailable, "round_robin") as (wire, instances):
        assert await posted(wire, repeatable=True) == 502
    assert [row["up"] for row in instances.status()] == [False, False]


async def test_a_session_opens_on_the_next_instance_when_a_gateway_says_the_first_is_not_there() -> None:
    """An `initialize` is safe to send again (at worst a session is left unused), so a gateway's 502 for the first
    instance sends it on to the next, where the session then stays."""

    async def gateway(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        return b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    backend = HttpBackend("--name", "second")
    try:
        async with scripted(gateway) as port:
            urls = [f"http://127.0.0.1:{port}/mcp", backend.url]
            server = make_config({"id": "lb", "type": "http", "urls": urls, "load_balancing": "health"}).servers[0]
            instances = Instances("lb", urls, "health")
            async with (
                open_transport(server, Path("."), instances=instances) as (read, write),
                ClientSession(dispatcher=WatchedDispatcher(read, write, lambda context: None)) as session,
            ):
                with anyio.fail_after(10):
                    assert (await session.initialize()).server_info.name == "second"
                    assert text(await session.call_tool("echo", {"text": "on"})) == "on"
        assert [row["up"] for row in instances.status()] == [False, True]
    finally:
        backend.stop()


@pytest.mark.parametrize(
    ("status", "repeatable", "sent_on"),
    [
        (504, False, False),
        (502, False, False),
        (504, True, True),
        (502, True, True),
        (503, False, True),
        (500, False, False),
        (500, True, False),
    ],
)
async def test_a_failing_instance_is_skipped_and_the_request_sent_on_only_when_that_is_safe(
    status: int, repeatable: bool, sent_on: bool
) -> None:
    """A gateway's 502 or 504 may come after the instance behind it got the request and carried it out: a request
    that is not safe to repeat (a tool call) gets that answer rather than running twice; one safe to repeat goes to
    the next instance. A 503 says the request was not taken: it goes on either way. A 500 comes from the instance
    itself, which got the request: its answer goes to the caller. Whatever it answered, the instance is skipped for
    a while, so `health` sends the next request to the next one."""
    served: dict[str, int] = {"failing": 0, "fine": 0}

    async def failing(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        served["failing"] += 1
        return f"HTTP/1.1 {status} Failed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()

    async def fine(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        served["fine"] += 1
        return b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    async with two_instances(failing, fine, "health") as (wire, instances):
        first = await posted(wire, repeatable=repeatable)
        assert (first, served) == ((202, {"failing": 1, "fine": 1}) if sent_on else (status, {"failing": 1, "fine": 0}))
        assert [row["up"] for row in instances.status()] == [False, True]
        second = await posted(wire)
    assert (second, served["failing"]) == (202, 1)
