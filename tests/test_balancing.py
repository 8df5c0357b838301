"""Several instances of one HTTP backend (`urls:`): requests are spread (or kept on the first healthy instance),
a dead instance is skipped and every call still gets its answer; sessions stay on the instance that issued them.

Each instance is a real fixture backend process; what each one served is read from it directly."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from mcp import Client

from master_mcp.backends.balancer import BalancedTransport, Instances
from tests.conftest import HttpBackend, make_config, serve_master, text

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
    """Unit test of the URL rewrite alone (httpx2's MockTransport stands in for the network: what is checked is
    only which URL each request is sent to). An instance's query may carry its own key; no other instance sees it."""
    seen: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return httpx2.Response(200, json={})

    urls = ["http://127.0.0.1:1/a/mcp?key=A", "http://127.0.0.1:2/b/mcp?key=B", "http://127.0.0.1:3/mcp"]
    transport = BalancedTransport(Instances("lb", urls, "round_robin"), httpx2.MockTransport(answer))
    async with httpx2.AsyncClient(transport=transport) as http:
        for _ in urls:
            await http.post(urls[0], json={})
    assert sorted(seen) == sorted(urls)
