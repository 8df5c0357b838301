"""No token, secret or Authorization value reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

from master_mcp.logs import MASK, RedactingFilter
from tests.conftest import HttpBackend, free_port, stdio_server, wait_for_port, write_config

pytestmark = pytest.mark.anyio

SECRET = "sk-live-7f3a9c2e4b1d"


def test_filter_masks_known_secrets_and_credential_shapes() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([SECRET]))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("header value %s", SECRET)
        log.warning("Authorization: Bearer abc.def.ghi")
        log.warning("sent {'authorization': 'Basic dXNlcjpwYXNz'}")
        log.warning("redirect to /cb?code=AUTHCODE123&state=xyz and refresh_token=RT-999")
        try:
            raise ValueError(f"backend said no to {SECRET}")
        except ValueError:
            log.exception("failure")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    for leaked in (SECRET, "abc.def.ghi", "dXNlcjpwYXNz", "AUTHCODE123", "RT-999"):
        assert leaked not in out
    assert out.count(MASK) >= 6
    assert "state=xyz" not in out and "state=***" in out  # a state or flow id is a one-time capability


def test_a_debug_run_never_prints_a_configured_secret(tmp_path: Path) -> None:
    backend = HttpBackend("--name", "guarded")
    try:
        config = write_config(
            tmp_path / "servers.yaml",
            stdio_server("child", "--print-env", "CHILD_TOKEN", env={"CHILD_TOKEN": "env:THE_SECRET"}),
            {"id": "remote", "type": "http", "url": backend.url, "headers": {"X-Api-Key": "env:THE_SECRET"}},
            {
                "id": "dead",
                "type": "http",
                "url": "http://127.0.0.1:9/mcp",
                "headers": {"Authorization": "Bearer env-${THE_SECRET}"},
            },
            log_level="DEBUG",
        )
        result = subprocess.run(
            [str(Path(sys.executable).with_name("master-mcp")), "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "THE_SECRET": SECRET},
        )
    finally:
        backend.stop()
    assert "remote" in result.stdout and "dead" in result.stdout
    assert " DEBUG master_mcp.backends.connection " in result.stderr  # debug logging really ran
    assert SECRET not in result.stdout + result.stderr
    assert "master_mcp.child.child" in result.stderr and "CHILD_TOKEN=***" in result.stderr  # the child's own line


async def test_json_logs_carry_a_request_id_into_backend_calls(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "servers.yaml", stdio_server("one"), port=port, log_level="DEBUG")
    master = str(Path(sys.executable).with_name("master-mcp"))
    log = tmp_path / "master.log"
    with log.open("w") as sink:
        process = subprocess.Popen(  # noqa: ASYNC220 - the master under test runs beside this event loop
            [master, "serve", "--config", str(config), "--log-format", "json"], stdout=subprocess.DEVNULL, stderr=sink
        )
        try:
            wait_for_port(port, timeout=30)
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
                await client.call_tool("one__echo", {"text": "traced"})
                await client.call_tool("one__echo", {"text": "again"})
        finally:
            process.terminate()
            process.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"time", "level", "logger", "request_id", "message"} <= set(lines[0])
    sent = next(line for line in lines if line["message"] == "tools/call -> server one")
    answered = next(line for line in lines if line["message"].startswith("tools/call <- server one: ok"))
    assert sent["request_id"] != "-" and sent["request_id"] == answered["request_id"]
    ids = [line["request_id"] for line in lines if line["message"] == "tools/call -> server one"]
    assert len(ids) == 2 and len(set(ids)) == 2  # each request its own
