"""The stdio front (`front_stdio`), as `master-mcp stdio` runs: the wire on private descriptors served on the event
loop (pipes, as Python clients hand them; a socket per stream, as Node clients do; one socket both ways), the
process's own stdin and stdout diverted; the SDK's transport where the event loop cannot serve the descriptors."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import TESTS, stdio_server, write_config

MASTER = str(Path(sys.executable).parent / "master-mcp")

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


def line(message: dict[str, Any] | str) -> bytes:
    return ((message if isinstance(message, str) else json.dumps(message)) + "\n").encode()


def send(pipe: IO[bytes], *messages: dict[str, Any] | str) -> None:
    pipe.write(b"".join(line(m) for m in messages))
    pipe.flush()


def answer(pipe: IO[bytes]) -> dict[str, Any]:
    # A master that never answers fails the test rather than hanging the run (the reader ends when it is killed).
    text = ThreadPoolExecutor(1).submit(pipe.readline).result(timeout=30)
    assert text, "the master closed its stdout"
    message: dict[str, Any] = json.loads(text)
    return message


def text_of(message: dict[str, Any]) -> str:
    result: str = message["result"]["content"][0]["text"]
    return result


def served_on_the_loop(pid: int, wire: str) -> bool:
    """Whether the master holds the client's descriptor `wire` (a /proc link: "pipe:[..]", "socket:[..]") on a fd
    of its own in non-blocking mode, as the event loop serves it; the SDK's transport reads and writes it blocking,
    in worker threads."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != wire:
                continue
            fields = dict(row.split(":", 1) for row in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines())
        except OSError:
            continue
        if int(fields["flags"].strip(), 8) & os.O_NONBLOCK:
            return True
    return False


def held(pid: int, wire: str) -> int:
    """How many descriptors of the master's point at `wire`."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == wire
    return count


def link(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@contextmanager
def master(*command: str, **streams: Any) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, **{"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, **streams})
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_prints_and_reads_inside_the_master_miss_the_wire(config_path: Path) -> None:
    noisy = [sys.executable, str(TESTS / "backends" / "noisy_stdio_master.py"), str(config_path)]
    with master(*noisy, stderr=subprocess.PIPE) as process:
        assert process.stdin and process.stdout
        send(process.stdin, INITIALIZE, INITIALIZED)
        assert answer(process.stdout)["id"] == 1
        # While it serves, the process's own descriptors point away from the client's pipes, which it serves on the
        # event loop.
        assert Path(f"/proc/{process.pid}/fd/0").resolve() == Path("/dev/null")
        assert Path(f"/proc/{process.pid}/fd/1").resolve() == Path(f"/proc/{process.pid}/fd/2").resolve()
        assert served_on_the_loop(process.pid, link(process.stdin.fileno()))
        send(process.stdin, echo(2), echo(3, "there"))
        answers = sorted((message["id"], text_of(message)) for message in (answer(process.stdout) for _ in range(2)))
        assert answers == [(2, "hi"), (3, "there")]  # answered in either order: the calls run at once
        stdout, stderr = process.communicate(timeout=30)  # EOF on stdin ends it
    assert process.returncode == 0, stderr
    assert stdout == b""
    assert stderr.count(b"a stray print") == 2 and stderr.count(b"a stray write") == 2
    assert stderr.count(b"read 0 bytes from stdin") == 2


def test_a_socket_per_stream_as_node_clients_hand_them(config_path: Path) -> None:
    """Claude Desktop and editors built on Node start a server with a socket for each stream. A client that shuts
    down its side of the stdout socket (it never writes there) is still answered."""
    client_in, master_in = socket.socketpair()
    client_out, master_out = socket.socketpair()
    wire = link(master_in.fileno())
    with master(MASTER, "stdio", "--config", str(config_path), stdin=master_in, stdout=master_out) as process:
        master_in.close()
        master_out.close()
        requests, answers = client_in.makefile("wb"), client_out.makefile("rb")
        send(requests, INITIALIZE, INITIALIZED)
        assert answer(answers)["id"] == 1
        assert served_on_the_loop(process.pid, wire)
        client_out.shutdown(socket.SHUT_WR)
        time.sleep(0.2)  # the master has seen it
        send(requests, echo(2))
        assert text_of(answer(answers)) == "hi"
        requests.close()
        client_in.shutdown(socket.SHUT_WR)  # EOF on its stdin ends it
        assert process.wait(30) == 0
    client_in.close()
    client_out.close()


def test_one_socket_both_ways_as_inetd_style_launchers_hand_it(config_path: Path) -> None:
    client, end = socket.socketpair()
    wire = link(end.fileno())
    with master(MASTER, "stdio", "--config", str(config_path), stdin=end, stdout=end) as process:
        end.close()
        requests, answers = client.makefile("wb"), client.makefile("rb")
        send(requests, INITIALIZE, INITIALIZED, echo(2))
        assert answer(answers)["id"] == 1
        assert text_of(answer(answers)) == "hi"  # what the client sends is not taken for the end of stdout
        assert served_on_the_loop(process.pid, wire)
        # One transport serves the socket both ways: the two claimed duplicates and the transport's own. (Two, one
        # reading stdin and one writing stdout, would each read what comes in, and take the client's requests.)
        assert held(process.pid, wire) == 3
        client.shutdown(socket.SHUT_WR)
        assert process.wait(30) == 0
    client.close()


def test_a_shared_socket_closed_with_answers_unread_ends_the_master_quietly(config_path: Path) -> None:
    client, end = socket.socketpair()
    command = (MASTER, "stdio", "--config", str(config_path))
    with master(*command, stdin=end, stdout=end, stderr=subprocess.PIPE) as process:
        end.close()
        client.sendall(line(INITIALIZE) + line(INITIALIZED) + b"".join(line(echo(n)) for n in range(2, 12)))
        time.sleep(1)  # answered, unread
        client.close()  # the master's next read is a reset
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr


def test_answers_queued_for_a_slow_reader_go_out_after_stdin_ends(config_path: Path) -> None:
    """Three answers of about 40 KB each (the text comes back twice) overflow the pipe's 64 KB while the client
    reads nothing, and are taken by the master's transport all the same (it holds senders back only past 64 KB);
    the client's stdin then ends, and it reads a moment later: every answer arrives whole."""
    with master(MASTER, "stdio", "--config", str(config_path), stderr=subprocess.DEVNULL) as process:
        assert process.stdin and process.stdout
        send(process.stdin, INITIALIZE, INITIALIZED)
        assert answer(process.stdout)["id"] == 1
        big = ["a" * 20_000, "b" * 20_000, "c" * 20_000]
        send(process.stdin, *(echo(number, text) for number, text in enumerate(big, start=2)))
        time.sleep(5)  # answered, and queued for a client that is not reading
        process.stdin.close()
        time.sleep(0.5)
        received = [json.loads(text) for text in process.stdout.read().splitlines()]
        assert process.wait(30) == 0
    # The three calls run at once and may be answered in any order; each answer must arrive whole, once.
    assert sorted((message["id"], text_of(message)) for message in received) == list(enumerate(big, start=2))


def test_bytes_that_are_not_utf8_are_read_as_replacement_characters(config_path: Path) -> None:
    with master(MASTER, "stdio", "--config", str(config_path), stderr=subprocess.DEVNULL) as process:
        assert process.stdin and process.stdout
        send(process.stdin, INITIALIZE, INITIALIZED)
        assert answer(process.stdout)["id"] == 1
        process.stdin.write(line(echo(2, "caf@")).replace(b"@", b"\xe9"))  # Latin-1, as the SDK's transport takes it
        process.stdin.flush()
        assert text_of(answer(process.stdout)) == "caf\ufffd"


def test_a_line_that_is_not_json_rpc_is_skipped_and_the_next_one_served(config_path: Path) -> None:
    with master(MASTER, "stdio", "--config", str(config_path), stderr=subprocess.PIPE) as process:
        assert process.stdin and process.stdout
        send(process.stdin, INITIALIZE, INITIALIZED)
        assert answer(process.stdout)["id"] == 1
        send(process.stdin, "this is not json", '{"jsonrpc": "2.0", "id": 7}', echo(2))
        assert text_of(answer(process.stdout)) == "hi"
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert b"this is not json" not in stderr  # the line itself is not echoed: a client may send anything


def test_a_client_that_stops_reading_ends_the_master(config_path: Path) -> None:
    with master(MASTER, "stdio", "--config", str(config_path), stderr=subprocess.DEVNULL) as process:
        assert process.stdin and process.stdout
        send(process.stdin, INITIALIZE, INITIALIZED)
        assert answer(process.stdout)["id"] == 1
        process.stdout.close()  # the client's end of the master's stdout
        try:
            send(process.stdin, echo(2))
        except BrokenPipeError:
            pass  # it has ended already
        assert process.wait(30) == 0  # it ends, cleanly, rather than serving a client that can hear nothing


def test_a_terminal_gets_the_sdk_transport(config_path: Path) -> None:
    """A terminal's descriptors are usually stderr's too: the event loop's non-blocking mode would be stderr's."""
    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no echo, no line editing: the bytes as they are
    wire = os.ttyname(terminal)
    command = (MASTER, "stdio", "--config", str(config_path))
    with master(*command, stdin=terminal, stdout=terminal, stderr=subprocess.DEVNULL) as process:
        os.close(terminal)
        requests, answers = os.fdopen(controller, "wb", closefd=False), os.fdopen(controller, "rb", closefd=False)
        send(requests, INITIALIZE, INITIALIZED, echo(2))
        assert answer(answers)["id"] == 1
        assert text_of(answer(answers)) == "hi"
        assert held(process.pid, wire) and not served_on_the_loop(process.pid, wire)
    os.close(controller)


def test_stdout_to_a_file_gets_the_sdk_transport(config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with out.open("wb") as sink, master(MASTER, "stdio", "--config", str(config_path), stdout=sink) as process:
        assert process.stdin
        send(process.stdin, INITIALIZE, INITIALIZED, echo(2))
        deadline = time.monotonic() + 30
        while out.read_text().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not served_on_the_loop(process.pid, link(process.stdin.fileno()))
        process.stdin.close()
        assert process.wait(30) == 0
    answers = [json.loads(text) for text in out.read_text().splitlines()]
    assert [a["id"] for a in answers] == [1, 2] and text_of(answers[1]) == "hi"


EMBEDDED = """
import asyncio, json, os, sys
from master_mcp.front_stdio import stdio_front

def fds():
    return [(os.readlink(f"/proc/self/fd/{fd}"), os.get_blocking(fd)) for fd in (0, 1)]

async def main():
    async with stdio_front() as (read, write):
        return fds()

before = fds()
during = asyncio.run(main())
print(json.dumps({"before": before, "during": during, "after": fds()}), file=sys.stderr)
"""


def test_stdin_and_stdout_are_given_back_as_they_were() -> None:
    """For code that runs the master's stdio front and goes on: the descriptors it diverted are the client's again,
    and blocking (the event loop made them non-blocking)."""
    with master(sys.executable, "-c", EMBEDDED, stderr=subprocess.PIPE) as process:
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    seen = json.loads(stderr.decode().splitlines()[-1])
    assert seen["after"] == seen["before"] and all(blocking for _, blocking in seen["after"])
    assert seen["during"][0][0] == "/dev/null" and seen["during"] != seen["before"]


TIMEOUT_SET = """
import socket, sys
socket.setdefaulttimeout(5)  # as a library might: new socket objects are non-blocking
from master_mcp import cli
sys.exit(cli.main(["stdio", "--config", sys.argv[1]]))
"""


def test_looking_at_a_socket_leaves_it_blocking(config_path: Path, tmp_path: Path) -> None:
    """A socket stdin with a file stdout gets the SDK's transport, which reads stdin blocking in a thread: looking at
    the socket first must not have made it non-blocking."""
    client, end = socket.socketpair()
    out = tmp_path / "out.jsonl"
    with out.open("wb") as sink, master(sys.executable, "-c", TIMEOUT_SET, str(config_path), stdin=end, stdout=sink):
        end.close()
        client.sendall(line(INITIALIZE) + line(INITIALIZED) + line(echo(2)))
        deadline = time.monotonic() + 30
        while out.read_text().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.close()
    answers = [json.loads(text) for text in out.read_text().splitlines()]
    assert [a["id"] for a in answers] == [1, 2] and text_of(answers[1]) == "hi"
