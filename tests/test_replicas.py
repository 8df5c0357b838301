"""Several masters sharing one real Redis (`master.store.type: redis`), as behind a load balancer with no affinity.

Each test starts its own `redis-server` on a loopback port (conftest `redis_server`) and two masters on two ports.
The masters run in this process (conftest `serve_master`), each with its own Redis client, stores and instance id,
exactly as two processes would; the start-up failure is checked on a real `master-mcp serve` process.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from redis.asyncio import Redis

from master_mcp.auth.crypto import Sealer, new_key
from master_mcp.auth.flow_state import PendingFlow, PendingState
from master_mcp.auth.principal import Principal
from master_mcp.auth.redis_store import RedisBlobStore, RedisConsentStore, RedisFlowStore
from master_mcp.auth.store import StoredToken, TokenKey, TokenStore
from master_mcp.cli import build_parser
from master_mcp.config import ConfigError, parse_config
from master_mcp.redis_link import RedisLink, StoreUnavailable
from master_mcp.server import MasterServer
from tests.conftest import (
    ROOT,
    HttpBackend,
    OAuthBackend,
    RedisServer,
    free_port,
    http_server,
    make_config,
    serve_master,
    stdio_server,
    text,
    wait_until,
    write_config,
)
from tests.test_auth import delegated, delegation_of, error_text

pytestmark = pytest.mark.anyio

CALL_BOUND_S = 30  # no call of these tests may take longer, Redis up or down
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO}


@pytest.fixture(autouse=True)
def _token_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every replica seals and opens tokens with the same key: the deployment's one MASTER_MCP_TOKEN_KEY.
    monkeypatch.setenv("MASTER_MCP_TOKEN_KEY", new_key())


@pytest.fixture
def backend() -> Iterator[HttpBackend]:
    """A backend of its own (its tools change in these tests), shared by both replicas."""
    server = HttpBackend("--name", "shared")
    yield server
    server.stop()


def redis_store(redis: RedisServer) -> dict[str, Any]:
    return {"type": "redis", "url": redis.url, "timeout_s": 1.0}


@asynccontextmanager
async def replicas(config: Any, *, stateless: bool = False) -> AsyncIterator[tuple[str, str]]:
    """Two masters with one public address (A's, as a load balancer's would be); yields their /mcp URLs."""
    async with serve_master(config, stateless=stateless) as (a, url_a):
        base = a.config.master.public_base_url
        async with serve_master(config, stateless=stateless, base_url=base) as (_, url_b):
            yield url_a, url_b


def on(url: str, target: str) -> str:
    """`url` as the load balancer would send it to the replica at `target` (same path and query)."""
    return str(httpx2.URL(url).copy_with(port=urlsplit(target).port))


def delegation_link(result: types.CallToolResult) -> str:
    return str(delegation_of(result)["authorization_url"])


SEALER = Sealer(b"k" * 32)

# ---- the stores themselves, against the real server ---------------------------------------------------------------


@pytest.fixture
async def link(redis_server: RedisServer) -> AsyncIterator[RedisLink]:
    shared = RedisLink(redis_server.url, "test:", timeout_s=1.0)
    await shared.open()
    yield shared
    await shared.aclose()


async def keys(redis: RedisServer) -> list[str]:
    client = Redis.from_url(redis.url)
    try:
        return sorted(key.decode() for key in await client.keys("*"))
    finally:
        await client.aclose()


async def test_redis_blob_store_seals_like_sqlite(link: RedisLink, redis_server: RedisServer) -> None:
    blobs = RedisBlobStore(link)
    store = TokenStore(blobs, Sealer(b"k" * 32))
    key = TokenKey("https://issuer", "alice", "cloud")
    token = StoredToken("access-secret-123456", refresh_token="refresh-secret-123456", scopes=("read",))
    await store.put(key, token)
    assert await store.get(key) == token
    [name] = await keys(redis_server)
    assert name == f"test:token:{key.name}"
    raw = await blobs.get(key.name)
    assert raw is not None and b"access-secret" not in raw  # sealed, not plain
    # Another key (another deployment's) cannot open it: fail closed, and the blob is dropped.
    assert await TokenStore(blobs, Sealer(b"x" * 32)).get(key) is None
    assert await blobs.get(key.name) is None
    await store.put(key, token)
    await store.delete(key)
    assert await store.get(key) is None


async def test_redis_flow_store_single_use_across_clients(link: RedisLink, redis_server: RedisServer) -> None:
    other = RedisLink(redis_server.url, "test:", timeout_s=1.0)  # a second replica's client
    await other.open()
    try:
        principal = Principal("local", "alice", frozenset({"read"}), token="client-bearer-token-xyz")
        mine, theirs = RedisFlowStore(link, SEALER), RedisFlowStore(other, SEALER)
        await mine.put_flow("flow-id-1", PendingFlow(principal, "cloud"))
        taken = await theirs.take_flow("flow-id-1")
        assert taken is not None and taken.principal == principal and taken.server_id == "cloud"
        assert taken.principal.token is None  # the client's bearer token is never written to Redis
        assert await mine.take_flow("flow-id-1") is None

        pending = PendingState(principal, "cloud", "verifier-abc", "browser-digest", "/back", "flow-id-1")
        await mine.put_state("state-1", pending)
        assert await theirs.peek_state("state-1") == pending  # peek leaves it in place
        # What the master's own login and consent need of a record survives the trip too.
        oauth_user = Principal("https://as", "bob", audiences=frozenset({"https://m/mcp"}), client_id="ide")
        login = PendingState(oauth_user, "", "v", "b", None, "", purpose="login", scope="mcp")
        await mine.put_state("state-login", login)
        back = await theirs.take_state("state-login")
        assert back is not None and (back.purpose, back.scope) == ("login", "mcp")
        assert (back.principal.audiences, back.principal.client_id) == (oauth_user.audiences, "ide")
        assert await theirs.peek_state("state-1") == pending
        names = await keys(redis_server)
        assert not any("state-1" in name or "flow-id-1" in name for name in names)  # ids are stored as digests
        raw = Redis.from_url(redis_server.url)
        try:
            values = [await raw.get(name) for name in names]
        finally:
            await raw.aclose()
        assert not any(b"verifier-abc" in value or b"alice" in value for value in values if value)  # sealed
        # Another deployment's key (or a tampered record) opens nothing.
        assert await RedisFlowStore(other, Sealer(b"x" * 32)).peek_state("state-1") is None
        # Both replicas take at once: exactly one of them gets it.
        results: list[PendingState | None] = []

        async def take(store: RedisFlowStore) -> None:
            results.append(await store.take_state("state-1"))

        async with anyio.create_task_group() as tg:
            for store in (mine, theirs, mine, theirs):
                tg.start_soon(take, store)
        assert [r for r in results if r is not None] == [pending]
    finally:
        await other.aclose()


async def test_redis_consent_records_are_shared(link: RedisLink, redis_server: RedisServer) -> None:
    other = RedisLink(redis_server.url, "test:", timeout_s=1.0)
    await other.open()
    try:
        mine, theirs = RedisConsentStore(link), RedisConsentStore(other)
        key = ("https://as", "alice", "ide-client")
        assert await theirs.get(key) is None
        await mine.put(key, 1234.5)
        assert await theirs.get(key) == 1234.5
        assert await theirs.get(("https://as", "alice", "other-client")) is None
        assert not any("alice" in name for name in await keys(redis_server))  # stored under a digest
    finally:
        await other.aclose()


async def test_redis_flow_records_expire_by_ttl(link: RedisLink, redis_server: RedisServer) -> None:
    store = RedisFlowStore(link, SEALER, ttl_s=1.5)  # long enough to be seen on a loaded machine
    principal = Principal("local", "alice")
    await store.put_flow("f", PendingFlow(principal, "cloud"))
    await store.put_state("s", PendingState(principal, "cloud", "v", "b", None, "f"))
    names = await keys(redis_server)
    assert len(names) == 2
    for name in names:
        assert 0 < await link.run(lambda client, name=name: client.pttl(name)) <= 1500  # Redis expires them
    await anyio.sleep(2.0)
    assert await store.take_flow("f") is None
    assert await store.peek_state("s") is None


async def test_unreachable_redis_is_a_clear_bounded_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    closed = RedisLink(url, "test:", timeout_s=0.5)
    with anyio.fail_after(CALL_BOUND_S), pytest.raises(StoreUnavailable) as info:
        await closed.open()
    assert f"127.0.0.1:{port}" in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(StoreUnavailable, match="not open"):
        await RedisBlobStore(closed).get("x")


# ---- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"type": "redis"}, "master.store: type 'redis' requires 'url'"),
        ({"type": "redis", "url": "http://:pw-secret-1@host:6379"}, "master.store.url: must start with redis://"),
        ({"type": "redis", "url": "redis://:pw-secret-1@host:port/0"}, "master.store.url: has a malformed port"),
        ({"type": "sqlite", "url": "redis://127.0.0.1:6379"}, "master.store: 'url' is only used with type 'redis'"),
        ({"type": "redis", "url": "redis://h:1", "timeout_s": 0}, "master.store.timeout_s"),
        ({"type": "redis", "url": "redis://h:1", "key_prefix": ""}, "master.store.key_prefix"),
    ],
)
def test_bad_store_config_names_the_key_and_hides_the_url(store: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"master": {"store": store}})
    assert message in str(info.value)
    assert "pw-secret-1" not in str(info.value)


def test_the_redis_url_and_its_password_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASS", "s3cr%40t-pass")
    config = parse_config({"master": {"store": {"type": "redis", "url": "rediss://:${REDIS_PASS}@cache:6380/1"}}})
    assert {"rediss://:s3cr%40t-pass@cache:6380/1", "s3cr%40t-pass", "s3cr@t-pass"} <= config.secrets
    assert "s3cr" not in repr(config.master.store)
    link = MasterServer(config).stores.link
    assert link is not None and link.where == "cache:6380"  # what logs and errors may name


# ---- two replicas ------------------------------------------------------------------------------------------------


async def test_flow_started_on_a_completes_on_b(redis_server: RedisServer, oauth: OAuthBackend) -> None:
    config = make_config(delegated(oauth), store=redis_store(redis_server))
    async with (
        replicas(config) as (url_a, url_b),
        Client(url_a, mode="legacy") as on_a,
        Client(url_b, mode="legacy") as on_b,
    ):
        link = delegation_link(await on_a.call_tool("cloud__authorize", {}))
        async with httpx2.AsyncClient() as browser:
            to_provider = await browser.get(link)  # A keeps the state (and the PKCE verifier) in Redis
            assert to_provider.status_code == 302, to_provider.text
            back = await browser.get(to_provider.headers["location"])
            callback = str(back.headers["location"])
            done = await browser.get(on(callback, url_b))  # ... and the provider's answer lands on B
            assert done.status_code == 303 and done.headers["location"].startswith("/oauth/success")
            replayed = await browser.get(callback, follow_redirects=True)  # the same answer again, on A
            assert "unknown, used or expired state" in error_text(replayed)
        # The token B stored is the one both replicas use.
        who_b = json.loads(text(await on_b.call_tool("cloud__whoami", {})))
        who_a = json.loads(text(await on_a.call_tool("cloud__whoami", {})))
        assert who_a["subject"] == who_b["subject"] and who_a["subject"].startswith("user-")

        # A link A issued, opened through B: the flow record crosses too, and is single use everywhere.
        link = delegation_link(await on_a.call_tool("cloud__authorize", {"force": True}))
        async with httpx2.AsyncClient(follow_redirects=True) as browser:
            page = await browser.get(on(link, url_b))
            assert page.status_code == 200 and "Authorized" in page.text
            assert "used already" in error_text(await browser.get(link))


async def test_list_changed_on_a_reaches_clients_of_b(redis_server: RedisServer, backend: HttpBackend) -> None:
    heard: list[Any] = []

    async def on_message(message: Any) -> None:
        heard.append(message)

    config = make_config(http_server("shared", backend.url), store=redis_store(redis_server))
    async with (
        replicas(config) as (url_a, url_b),
        Client(url_a, mode="legacy") as on_a,
        Client(url_b, mode="legacy", message_handler=on_message) as on_b,
    ):
        assert "shared__fresh" not in {tool.name for tool in (await on_b.list_tools()).tools}
        # The backend tells only the session that asked (A's); B hears it through Redis.
        await on_a.call_tool("shared__add_tool_later", {"name": "fresh"})
        await wait_until(lambda: any(isinstance(m, types.ToolListChangedNotification) for m in heard))
        assert "shared__fresh" in {tool.name for tool in (await on_b.list_tools()).tools}


async def subscribers(redis: RedisServer, channel: str) -> int:
    client = Redis.from_url(redis.url)
    try:
        counts = await client.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0
    finally:
        await client.aclose()


async def test_redis_lost_mid_run_fails_clearly_and_masters_reconnect(
    redis_server: RedisServer, oauth: OAuthBackend, backend: HttpBackend
) -> None:
    heard: list[Any] = []

    async def on_message(message: Any) -> None:
        heard.append(message)

    where = f"Redis store at 127.0.0.1:{redis_server.port}"
    config = make_config(delegated(oauth), http_server("shared", backend.url), store=redis_store(redis_server))
    async with (
        replicas(config) as (url_a, url_b),
        Client(url_a, mode="legacy") as on_a,
        Client(url_b, mode="legacy", message_handler=on_message) as on_b,
        httpx2.AsyncClient(follow_redirects=True) as browser,
    ):
        readyz = url_a.removesuffix("/mcp") + "/readyz"
        store = (await browser.get(readyz)).json()["store"]
        assert store == {"type": "redis", "at": f"127.0.0.1:{redis_server.port}", "up": True, "error": None}
        assert "Authorized" in (await browser.get(delegation_link(await on_a.call_tool("cloud__authorize", {})))).text
        assert json.loads(text(await on_a.call_tool("cloud__whoami", {})))["subject"].startswith("user-")

        # Redis hangs (stopped, not gone: connections stay open, nothing answers). B has never read the token, so
        # its call needs the store: it fails with an error result that names the store, in bounded time.
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(CALL_BOUND_S):
                hung = await on_b.call_tool("cloud__whoami", {})
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert hung.is_error and where in text(hung)

        redis_server.stop()  # now gone
        with anyio.fail_after(CALL_BOUND_S):
            gone = await on_b.call_tool("cloud__whoami", {})
            forced = await on_a.call_tool("cloud__authorize", {"force": True})
            callback = await browser.get(on(f"{url_a.removesuffix('/mcp')}/oauth/callback?state=s&code=c", url_b))
            echoed = await on_b.call_tool("shared__echo", {"text": "no store needed"})
        assert gone.is_error and where in text(gone)
        assert forced.is_error and where in text(forced)
        assert callback.status_code == 503 and where in callback.json()["error_description"]
        assert text(echoed) == "no store needed"  # what needs no store is not affected
        with anyio.fail_after(CALL_BOUND_S):
            ready = await browser.get(readyz)
        assert ready.status_code == 200 and not ready.json()["store"]["up"]  # shown, not counted
        assert where in ready.json()["store"]["error"]

        redis_server.start()  # same port, empty (no persistence): the tokens are gone, the masters reconnect
        with anyio.fail_after(CALL_BOUND_S):
            again = await on_b.call_tool("cloud__whoami", {})
        assert again.structured_content is not None and again.structured_content["type"] == "oauth_delegation"
        channel = "master-mcp:catalog"
        await wait_until_async(lambda: subscribers(redis_server, channel), 2)
        await on_a.call_tool("shared__add_tool_later", {"name": "after_restart"})
        await wait_until(lambda: any(isinstance(m, types.ToolListChangedNotification) for m in heard))
        await wait_until_async(lambda: tool_names(on_b), "shared__after_restart", contains=True)


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def wait_until_async(probe: Any, expected: Any, *, contains: bool = False, timeout: float = 20.0) -> None:
    """Poll an async probe (bounded) until it returns `expected` (or, with `contains`, a collection holding it)."""
    with anyio.fail_after(timeout):
        while True:
            value = await probe()
            if (expected in value) if contains else (value == expected):
                return
            await anyio.sleep(0.1)


def test_redis_down_at_start_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{port}/0"
    config = write_config(tmp_path / "servers.yaml", store={"type": "redis", "url": url, "timeout_s": 1})
    env = {**os.environ, "REDIS_PASSWORD": "pw-never-shown-4711"}
    # uvicorn ends a failed start with status 3; `check` says 1.
    for command, status in ((["serve", "--port", str(free_port())], 3), (["check"], 1)):
        done = subprocess.run(
            [sys.executable, "-m", "master_mcp", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
        )
        assert done.returncode == status, done.stderr
        assert f"Redis store at 127.0.0.1:{port} cannot be used" in done.stderr
        assert "pw-never-shown" not in done.stderr + done.stdout


class RoundRobin(httpx2.AsyncBaseTransport):
    """A load balancer with no affinity: each request goes to the next replica (same path, Host kept)."""

    def __init__(self, *urls: str) -> None:
        self._ports = itertools.cycle([urlsplit(url).port for url in urls])
        self._inner = httpx2.AsyncHTTPTransport()
        self.sent: Counter[int | None] = Counter()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._ports)
        self.sent[port] += 1
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def balanced(url_a: str, url_b: str, mode: str = "legacy") -> tuple[Client, RoundRobin]:
    balancer = RoundRobin(url_a, url_b)
    http = httpx2.AsyncClient(transport=balancer, timeout=CALL_BOUND_S)
    return Client(streamable_http_client(url_a, http_client=http), mode=mode), balancer


async def test_stateless_replicas_take_alternating_requests_without_errors(
    redis_server: RedisServer, oauth: OAuthBackend, backend: HttpBackend
) -> None:
    config = make_config(delegated(oauth), http_server("shared", backend.url), store=redis_store(redis_server))
    failures: list[str] = []
    balancers: list[RoundRobin] = []

    async def worker(url_a: str, url_b: str, number: int, calls: int) -> None:
        client, balancer = balanced(url_a, url_b)
        balancers.append(balancer)
        async with client:
            for index in range(calls):
                if index % 5 == 0:  # a per-user call: its token comes from Redis on whichever replica
                    result = await client.call_tool("cloud__whoami", {})
                    ok = not result.is_error and json.loads(text(result))["subject"].startswith("user-")
                else:
                    result = await client.call_tool("shared__echo", {"text": f"{number}-{index}"})
                    ok = not result.is_error and text(result) == f"{number}-{index}"
                if not ok:
                    failures.append(str(result.content))

    async with replicas(config, stateless=True) as (url_a, url_b):
        client, _ = balanced(url_a, url_b)
        async with client, httpx2.AsyncClient(follow_redirects=True) as browser:
            link = delegation_link(await client.call_tool("cloud__authorize", {}))
            assert "Authorized" in (await browser.get(on(link, url_b))).text
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for number in range(4):  # 4 clients at once, 50 calls each: 200 calls
                    tg.start_soon(worker, url_a, url_b, number, 50)
    assert failures == []
    sent = sum((balancer.sent for balancer in balancers), Counter())
    ports = [urlsplit(url_a).port, urlsplit(url_b).port]
    assert all(sent[port] >= 100 for port in ports), sent  # both replicas took their half


async def test_a_session_this_replica_does_not_hold_gets_404(redis_server: RedisServer) -> None:
    config = make_config(store=redis_store(redis_server))
    async with replicas(config) as (url_a, url_b), httpx2.AsyncClient(timeout=CALL_BOUND_S) as http:
        opened = await http.post(url_a, json=INITIALIZE, headers=HEADERS)
        session = opened.headers["mcp-session-id"]
        held = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        # B never saw that session: 404, so the client knows to initialize again (against whichever replica).
        assert (await http.post(url_b, json=ping, headers=held)).status_code == 404
        assert (await http.get(url_b, headers=held)).status_code == 404
        assert (await http.delete(url_b, headers=held)).status_code == 404
        assert (await http.post(url_a, json=ping, headers=held)).status_code == 200  # A still holds it


async def test_2026_clients_need_no_affinity(redis_server: RedisServer, backend: HttpBackend) -> None:
    config = make_config(http_server("shared", backend.url), store=redis_store(redis_server))
    async with replicas(config) as (url_a, url_b):
        client, balancer = balanced(url_a, url_b, mode="2026-07-28")
        async with client:
            for index in range(6):
                assert text(await client.call_tool("shared__echo", {"text": str(index)})) == str(index)
        assert len(balancer.sent) == 2


async def test_stateless_from_the_config_and_the_command_line() -> None:
    assert build_parser().parse_args(["serve"]).stateless is None  # the config decides
    assert build_parser().parse_args(["serve", "--stateless"]).stateless is True
    for stateless in (False, True):
        async with serve_master(make_config(stateless=stateless)) as (_, url), httpx2.AsyncClient() as http:
            opened = await http.post(url, json=INITIALIZE, headers=HEADERS)
            assert opened.status_code == 200
            assert ("mcp-session-id" in opened.headers) is not stateless


def test_replicas_with_master_login_need_the_shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login cookie signed by one replica must be accepted by the others: no key, no start."""
    monkeypatch.delenv("MASTER_MCP_TOKEN_KEY", raising=False)
    inbound = {"mode": "master_oauth", "issuer": "http://127.0.0.1:9", "jwks_uri": "http://127.0.0.1:9/jwks"}
    config = make_config(stdio_server("one"), auth=inbound, store={"type": "redis", "url": "redis://127.0.0.1:9/0"})
    with pytest.raises(ConfigError, match=r"master\.store: .*MASTER_MCP_TOKEN_KEY"):
        MasterServer(config)
