"""The commands a user runs: serve, stdio, check, tools, and the SDK's own `mcp run`, as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import (
    ROOT,
    backend_counted,
    free_port,
    processes_with,
    stdio_server,
    wait_for_port,
    write_config,
)

pytestmark = pytest.mark.anyio

BIN = Path(sys.executable).parent
MASTER = str(BIN / "master-mcp")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MASTER, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "servers.yaml", stdio_server("one"), stdio_server("two", "--name", "two"))


def test_check_prints_a_table_and_exits_zero_when_all_are_up(config_path: Path) -> None:
    result = run("check", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["server", "transport", "state", "tools", "resources", "templates", "prompts", "error"]
    assert lines[1].split()[:7] == ["one", "stdio", "up", "20", "1", "1", "1"]


def test_check_fails_and_names_the_broken_backend(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "servers.yaml",
        stdio_server("good"),
        {"id": "broken", "type": "stdio", "command": "/nonexistent/bin/server"},
        {"id": "off", "type": "stdio", "command": "/nonexistent", "enabled": False},
    )
    result = run("check", "--config", str(path))
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "up" in rows["good"]
    assert "down" in rows["broken"] and "/nonexistent/bin/server" in rows["broken"]
    assert "disabled" in rows["off"]


def test_invalid_config_exits_two_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "servers.yaml"
    path.write_text("servers:\n  - id: a\n    type: http\n")
    for command in ("check", "tools", "serve", "stdio"):
        result = run(command, "--config", str(path))
        assert result.returncode == 2
        assert "servers[0]: type 'http' requires 'url'" in result.stderr
        assert result.stdout == ""


def test_tools_prints_the_catalog(config_path: Path) -> None:
    result = run("tools", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["tool", "server", "backend", "name", "title"]
    assert ["one__search", "one", "search"] in rows and ["two__search", "two", "search"] in rows


def test_config_comes_from_the_environment(config_path: Path) -> None:
    result = run("tools", env={"MASTER_MCP_CONFIG": str(config_path)})
    assert result.returncode == 0 and "one__echo" in result.stdout


def test_stdio_front_speaks_only_json_rpc_on_stdout(tmp_path: Path) -> None:
    marker = f"child-of-{tmp_path.name}"
    config_path = write_config(tmp_path / "servers.yaml", stdio_server("one", "--name", marker))
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "one__echo", "arguments": {"text": "hi"}},
        },
    ]
    process = subprocess.Popen(
        [MASTER, "stdio", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout
    for message in messages[:2]:
        process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()
    first = json.loads(process.stdout.readline())
    assert first["id"] == 1 and first["result"]["serverInfo"]["name"] == "master-mcp"
    assert len(processes_with(marker)) == 1
    process.stdin.write(json.dumps(messages[2]) + "\n")
    process.stdin.flush()
    second = json.loads(process.stdout.readline())
    assert second["result"]["content"][0]["text"] == "hi"
    stdout, stderr = process.communicate(timeout=30)  # EOF on stdin shuts the master down
    assert process.returncode == 0
    for line in stdout.splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "server one is up" in stderr
    assert processes_with(marker) == []  # the stdio child ended with the master


async def test_stdio_front_with_the_sdk_client(config_path: Path) -> None:
    params = StdioServerParameters(command=MASTER, args=["stdio", "--config", str(config_path)])
    for mode in ("legacy", "2026-07-28"):
        async with Client(params, mode=mode) as client:
            result = await client.call_tool("two__search", {"query": "x"})
            assert result.content[0].text == "two:x"  # type: ignore[union-attr]


async def test_mcp_run_serves_the_master(config_path: Path) -> None:
    entry = ROOT / "src" / "master_mcp" / "mcp_entry.py"
    params = StdioServerParameters(
        command=str(BIN / "mcp"), args=["run", str(entry)], env={"MASTER_MCP_CONFIG": str(config_path)}
    )
    async with Client(params, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"one__echo", "two__echo"} <= names
        result = await client.call_tool("one__add", {"a": 1, "b": 2})
        assert result.content[0].text == "3"  # type: ignore[union-attr]


async def test_serve_answers_health_readiness_and_mcp(config_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - the master under test runs beside this event loop
        [MASTER, "serve", "--config", str(config_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient() as http:
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 200
            assert [s["state"] for s in ready.json()["servers"]] == ["up", "up"]
        async with Client(f"{base}/mcp") as client:
            assert (await client.call_tool("one__echo", {"text": "http"})).content[0].text == "http"  # type: ignore[union-attr]
        # the parser in C that the package depends on is the one serving (imported only when chosen)
        assert "/httptools/parser/parser." in await anyio.Path(f"/proc/{process.pid}/maps").read_text()
        await _idle_connection_is_kept(port, idle_s=5.5)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is the signal's.
    assert process.returncode in (0, -15), stderr
    assert stderr.count("is up") == 2 and "Application shutdown complete" in stderr


async def _idle_connection_is_kept(port: int, idle_s: float) -> None:
    """A connection idle past the 5 s after which the SDK's client lets its own go still serves: the client, not
    the master, is the one to close it, so it never sends a request on a connection the master is closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        for idle in (0.0, idle_s):
            await anyio.sleep(idle)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            assert length is not None
            await reader.readexactly(int(length.group(1)))
    finally:
        writer.close()


def test_serve_refuses_a_public_interface_without_the_flag(config_path: Path) -> None:
    result = run("serve", "--config", str(config_path), "--host", "0.0.0.0")
    assert result.returncode == 2 and "--allow-remote" in result.stderr


def test_default_config_works_from_the_repository_root() -> None:
    result = subprocess.run(
        [MASTER, "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MASTER_MCP_CONFIG": ""},
    )
    assert result.returncode == 0, result.stderr
    assert [line.split()[:3] for line in result.stdout.splitlines()[1:]] == [
        ["notes", "stdio", "up"],
        ["docs", "stdio", "up"],
    ]


async def test_sigterm_lets_the_call_in_flight_finish_and_leaves_no_child(tmp_path: Path) -> None:
    marker = f"graceful-{tmp_path.name}"
    port = free_port()
    config = write_config(tmp_path / "servers.yaml", stdio_server("one", "--name", marker), port=port)
    process = subprocess.Popen(  # noqa: ASYNC220 - the master under test runs beside this event loop
        [MASTER, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, timeout=30)
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
            await client.list_tools()  # so the client's own check of the result needs no request after SIGTERM
            results: list[str] = []

            async def call() -> None:
                result = await client.call_tool("one__slow", {"seconds": 1.0})
                results.append(result.content[0].text)  # type: ignore[union-attr]

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await backend_counted(client, "one__request_counts", "sleeping")  # SIGTERM once it is there
                process.terminate()
        assert results == ["slept 1.0"]
    finally:
        with anyio.fail_after(30):
            while process.poll() is None:  # noqa: ASYNC110 - a process seen from outside
                await anyio.sleep(0.05)
    assert processes_with(marker) == []
