"""Hot reload of `servers.yaml` against a real `master-mcp serve` process: servers come, go and change while
clients stay connected; unchanged backends keep their sessions; a bad file changes nothing; no child is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client

from master_mcp.config import load_config
from master_mcp.reload import ConfigWatcher
from master_mcp.server import MasterServer
from tests.conftest import free_port, processes_with, stdio_server, text, wait_for_port, wait_until, write_config
from tests.test_cli import MASTER
from tests.test_relay import Inbox

pytestmark = pytest.mark.anyio

SECRET = "reload-secret-value-4f1c2a"


class Master:
    """`master-mcp serve` on a config file that the test rewrites; its log goes to a file the test reads."""

    def __init__(self, folder: Path, *servers: dict[str, Any], **master: Any) -> None:
        self.folder = folder
        self.port = free_port()
        self.settings = {"port": self.port, **master}
        self.config = write_config(folder / "servers.yaml", *servers, **self.settings)
        self.log = folder / "master.log"
        env = {**os.environ, "RELOAD_SECRET": SECRET}
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [MASTER, "serve", "--config", str(self.config)], stdout=subprocess.DEVNULL, stderr=sink, env=env
            )
        wait_for_port(self.port, timeout=30)
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def rewrite(self, *servers: dict[str, Any]) -> None:
        write_config(self.config, *servers, **self.settings)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def master_in(tmp_path: Path) -> Iterator[list[Master]]:
    started: list[Master] = []
    yield started
    for master in started:
        master.stop()


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def test_servers_come_go_and_change_while_clients_stay(tmp_path: Path, master_in: list[Master]) -> None:
    mark = f"reload-{tmp_path.name}"
    keep, drop, added = (stdio_server(sid, "--name", f"{mark}-{sid}") for sid in ("keep", "drop", "added"))
    master = Master(tmp_path, keep, drop)
    master_in.append(master)
    inbox = Inbox()
    async with Client(master.url, mode="legacy", message_handler=inbox.on_message) as client:
        names = await tool_names(client)
        assert "keep__echo" in names and "drop__echo" in names
        kept_pids = processes_with(f"{mark}-keep")
        assert len(kept_pids) == 1 and len(processes_with(f"{mark}-drop")) == 1

        master.rewrite(keep, added)
        await wait_until(lambda: "added" in master.text() and "removed drop" in master.text(), timeout=30)
        names = await tool_names(client)
        assert "added__echo" in names and "drop__echo" not in names
        await wait_until(lambda: inbox.of(types.ToolListChangedNotification) != [], timeout=10)
        await wait_until(lambda: processes_with(f"{mark}-drop") == [], timeout=20)
        # The unchanged backend kept its process and its one session: a single initialize, ever.
        assert processes_with(f"{mark}-keep") == kept_pids
        counts = json.loads(text(await client.call_tool("keep__request_counts", {})))
        assert counts["initialize"] == 1

        # A changed server (here its environment, which holds a secret) reconnects: a new child replaces the old.
        old_pids = processes_with(f"{mark}-added")
        changed = {**added, "env": {"TOKEN": "${RELOAD_SECRET}"}}
        master.rewrite(keep, changed)
        await wait_until(lambda: "changed added (env)" in master.text(), timeout=30)
        await wait_until(lambda: processes_with(f"{mark}-added") not in ([], old_pids), timeout=20)
        assert text(await client.call_tool("added__echo", {"text": "hi"})) == "hi"
        assert text(await client.call_tool("keep__echo", {"text": "still"})) == "still"
        assert processes_with(f"{mark}-keep") == kept_pids
    master.stop()
    assert processes_with(mark) == []
    assert SECRET not in master.text()


async def test_an_invalid_file_changes_nothing(tmp_path: Path, master_in: list[Master]) -> None:
    master = Master(tmp_path, stdio_server("one"))
    master_in.append(master)
    async with Client(master.url, mode="legacy") as client:
        assert "one__echo" in await tool_names(client)
        master.config.write_text(
            f"master: {{port: {master.port}}}\nservers:\n  - id: two\n    type: stdio\n    url: http://x\n"
        )
        await wait_until(lambda: "config reload rejected" in master.text(), timeout=30)
        assert "servers[0]" in master.text()  # the error names the key
        master.config.write_text("servers: [oops\n")
        await wait_until(lambda: master.text().count("config reload rejected") == 2, timeout=30)
        assert await tool_names(client) >= {"one__echo"}
        assert text(await client.call_tool("one__echo", {"text": "alive"})) == "alive"
        # An unknown auth strategy is caught by the auth layer, also before anything changes.
        master.rewrite(stdio_server("one"), stdio_server("two", auth_strategy="no_such_strategy"))
        await wait_until(lambda: master.text().count("config reload rejected") == 3, timeout=30)
        assert "two__echo" not in await tool_names(client)
    async with httpx2.AsyncClient() as http:
        metrics = (await http.get(master.url.replace("/mcp", "/metrics"))).text
    assert 'master_mcp_config_reloads_total{outcome="rejected"} 3.0' in metrics


async def test_sighup_reloads_when_watching_is_off(tmp_path: Path, master_in: list[Master]) -> None:
    master = Master(tmp_path, stdio_server("one"), watch_config=False)
    master_in.append(master)
    async with Client(master.url, mode="legacy") as client:
        master.rewrite(stdio_server("one"), stdio_server("two"))
        master.process.send_signal(signal.SIGHUP)
        await wait_until(lambda: "(SIGHUP)" in master.text() and "added two" in master.text(), timeout=30)
        assert "two__echo" in await tool_names(client)


async def test_a_reload_during_load_loses_no_call(tmp_path: Path, master_in: list[Master]) -> None:
    """Calls keep flowing to a backend that stays and to one that changes while the file is rewritten: every
    call gets exactly one answer, and it is the right one (the changed server is replaced make-before-break)."""
    mark = f"load-{tmp_path.name}"
    steady = stdio_server("steady", "--name", f"{mark}-steady")
    moving = stdio_server("moving", "--name", f"{mark}-moving")
    master = Master(tmp_path, steady, moving)
    master_in.append(master)
    answers: dict[str, list[str]] = {"steady": [], "moving": []}
    sent = dict.fromkeys(answers, 0)
    reloaded = anyio.Event()

    async def caller(client: Client, server_id: str, lane: int) -> None:
        # Until the reload is done and then some: the calls span the whole replacement of `moving`.
        after = 0
        while after < 10:
            after += reloaded.is_set()
            sent[server_id] += 1
            result = await client.call_tool(f"{server_id}__echo", {"text": f"{lane}-{sent[server_id]}"})
            answers[server_id].append(text(result) if not result.is_error else f"error: {text(result)}")

    async with Client(master.url, mode="legacy") as client:
        await client.list_tools()
        old_moving = processes_with(f"{mark}-moving")
        async with anyio.create_task_group() as tg:
            for server_id in answers:
                for lane in range(4):
                    tg.start_soon(caller, client, server_id, lane)
            await anyio.sleep(0.2)
            master.rewrite(steady, {**moving, "timeout_s": 20}, stdio_server("extra", "--name", f"{mark}-extra"))
            await wait_until(lambda: "config reloaded" in master.text(), timeout=30)
            reloaded.set()
        assert "extra__echo" in await tool_names(client)
        assert processes_with(f"{mark}-moving") not in ([], old_moving)
    for server_id, got in answers.items():
        assert len(got) == sent[server_id] > 40
        assert not [answer for answer in got if answer.startswith("error")], server_id
    master.stop()
    assert processes_with(mark) == []


async def test_what_the_process_hooks_on_a_reload_runs_only_for_an_applied_one(tmp_path: Path) -> None:
    """The serving process thaws its heap after an applied reload (heap.py): retired connections were frozen."""
    path = write_config(tmp_path / "servers.yaml", stdio_server("one"))
    master = MasterServer(load_config(path))
    applied: list[str] = []
    on_applied = lambda: applied.append("applied")  # noqa: E731
    watcher = ConfigWatcher(master, path, lambda: load_config(path), poll=False, on_applied=on_applied)
    async with master.running():
        write_config(path, stdio_server("one"), stdio_server("two"))
        assert await watcher.reload("a test")
        path.write_text("servers:\n  - id: two\n    type: stdio\n")  # no command: invalid
        assert not await watcher.reload("a test")
    assert applied == ["applied"]
