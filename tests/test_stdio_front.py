"""The stdio front (`front_stdio`), as `master-mcp stdio` runs: the wire on private descriptors, the process's own
stdin and stdout diverted; the SDK's transport where the event loop cannot watch the pipes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import TESTS, stdio_server, write_config

BIN = Path(sys.executable).parent
MASTER = str(BIN / "master-mcp")

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def echo(number: int, text: str = "hi") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": number,
        "method": "tools/call",
        "params": {"name": "one__echo", "arguments": {"text": text}},
    }


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "servers.yaml", stdio_server("one"))


def send(pipe: IO[str], *messages: dict[str, Any] | str) -> None:
    for message in messages:
        pipe.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
    pipe.flush()


def answer(pipe: IO[str]) -> dict[str, Any]:
    line = pipe.readline()
    assert line, "the master closed its stdout"
    message: dict[str, Any] = json.loads(line)
    return message


def test_prints_and_reads_inside_the_master_miss_the_wire(config_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "backends" / "noisy_stdio_master.py"), str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout
    send(process.stdin, INITIALIZE, INITIALIZED)
    assert answer(process.stdout)["id"] == 1
    # While it serves, the process's own descriptors point away from the client's pipes.
    assert Path(f"/proc/{process.pid}/fd/0").resolve() == Path("/dev/null")
    assert Path(f"/proc/{process.pid}/fd/1").resolve() == Path(f"/proc/{process.pid}/fd/2").resolve()
    send(process.stdin, echo(2), echo(3, "there"))
    assert [answer(process.stdout)["result"]["content"][0]["text"] for _ in range(2)] == ["hi", "there"]
    stdout, stderr = process.communicate(timeout=30)  # EOF on stdin ends it
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert stderr.count("a stray print") == 2 and stderr.count("a stray write") == 2
    assert stderr.count("read 0 bytes from stdin") == 2


def test_a_line_that_is_not_json_rpc_is_answered_and_the_next_one_served(config_path: Path) -> None:
    process = subprocess.Popen(
        [MASTER, "stdio", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout
    send(process.stdin, INITIALIZE, INITIALIZED)
    assert answer(process.stdout)["id"] == 1
    send(process.stdin, "this is not json", '{"jsonrpc": "2.0", "id": 7}', echo(2))
    outcome = answer(process.stdout)
    while "error" in outcome and outcome.get("id") != 2:  # what the SDK says of the bad lines, if anything
        outcome = answer(process.stdout)
    assert outcome["id"] == 2 and outcome["result"]["content"][0]["text"] == "hi"
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "this is not json" not in stderr  # the line itself is not echoed: a client may send anything


def test_a_client_that_stops_reading_ends_the_master(config_path: Path) -> None:
    process = subprocess.Popen(
        [MASTER, "stdio", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin and process.stdout
    send(process.stdin, INITIALIZE, INITIALIZED)
    assert answer(process.stdout)["id"] == 1
    process.stdout.close()  # the client's end of the master's stdout
    try:
        send(process.stdin, echo(2))
    except BrokenPipeError:
        pass  # it has ended already
    assert process.wait(30) is not None  # it ends rather than serving a client that can hear nothing


def test_stdout_to_a_file_gets_the_sdk_transport(config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [MASTER, "stdio", "--config", str(config_path)], stdin=subprocess.PIPE, stdout=sink, text=True
        )
        assert process.stdin
        send(process.stdin, INITIALIZE, INITIALIZED, echo(2))
        deadline = time.monotonic() + 30
        while out.read_text().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.stdin.close()
        assert process.wait(30) == 0
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["id"] for a in answers] == [1, 2] and answers[1]["result"]["content"][0]["text"] == "hi"
