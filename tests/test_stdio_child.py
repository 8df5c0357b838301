"""The stdio wire to a backend child (`backends/stdio_child.py`), with real child processes: how it ends them, and
what it does with lines it cannot take."""

from __future__ import annotations

import logging
import sys
import textwrap
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage

from master_mcp.backends.stdio_child import stdio_child

pytestmark = pytest.mark.anyio


def _child(tmp_path: Path, body: str, *, max_line_bytes: int = 1 << 20) -> AbstractAsyncContextManager[Any]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return stdio_child(
        "kid",
        sys.executable,
        [str(script), str(tmp_path)],
        env={},
        cwd=tmp_path,
        stderr=sys.stderr,
        max_line_bytes=max_line_bytes,
    )


# A child's first lines: a SIGTERM is noted in the file "seen" and ends it; then it says it is running.
_NOTES_SIGTERM = """
        import pathlib, signal, sys, time
        seen = pathlib.Path(sys.argv[1]) / "seen"
        signal.signal(signal.SIGTERM, lambda *_: (seen.write_text("SIGTERM"), sys.exit(1)))
        print('{"jsonrpc": "2.0", "method": "notifications/initialized"}', flush=True)
"""


async def _how_it_ended(child: AbstractAsyncContextManager[Any], tmp_path: Path) -> str:
    """Start a child that begins with `_NOTES_SIGTERM`, wait until it runs, end it, and say what it noted."""
    with anyio.fail_after(15):
        async with child as (read, _):
            await read.__anext__()
    return (tmp_path / "seen").read_text()


def _alive(pid: int) -> bool:
    # A zombie is dead for this purpose: nothing in this container may be reaping orphans.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _ping(n: int) -> SessionMessage:
    return SessionMessage(types.JSONRPCRequest(jsonrpc="2.0", id=n, method="ping"))


async def test_a_child_that_exits_when_its_stdin_closes_is_sent_no_signal(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        """
        import json, pathlib, signal, sys
        seen = pathlib.Path(sys.argv[1]) / "seen"
        signal.signal(signal.SIGTERM, lambda *_: (seen.write_text("SIGTERM"), sys.exit(1)))
        for line in sys.stdin:
            request = json.loads(line)
            print(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {}}), flush=True)
        seen.write_text("EOF")
        """,
    )
    with anyio.fail_after(10):
        async with child as (read, write):
            await write.send(_ping(7))
            answer = await read.__anext__()
            assert isinstance(answer, SessionMessage) and answer.message == types.JSONRPCResponse(
                jsonrpc="2.0", id=7, result={}
            )
    assert (tmp_path / "seen").read_text() == "EOF"


async def test_a_child_deaf_to_its_stdin_gets_sigterm(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        _NOTES_SIGTERM
        + """
        time.sleep(60)
        """,
    )
    assert await _how_it_ended(child, tmp_path) == "SIGTERM"


async def test_a_child_that_writes_a_lot_as_it_ends_is_read_to_its_end(tmp_path: Path) -> None:
    # With a 1 KiB bound, asyncio stops reading the pipe after 2 KiB: unless the rest is read and thrown away, the
    # child blocks on a full pipe and never gets to exit by itself.
    child = _child(
        tmp_path,
        _NOTES_SIGTERM
        + """
        sys.stdin.read()
        for n in range(10_000):
            sys.stdout.write("x" * 99 + "\\n")
        sys.stdout.flush()
        seen.write_text("EOF")
        """,
        max_line_bytes=1024,
    )
    assert await _how_it_ended(child, tmp_path) == "EOF"


async def test_a_child_that_reads_nothing_holds_up_its_senders_not_the_masters_memory(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        """
        import pathlib, sys, time
        here = pathlib.Path(sys.argv[1])
        while not (here / "go").exists():
            time.sleep(0.02)
        (here / "count").write_text(str(sum(1 for _ in sys.stdin)))
        """,
    )
    pad = "x" * 20_000

    async def give_up_after_a_while(n: int) -> None:
        with anyio.move_on_after(0.5):
            await write.send(
                SessionMessage(types.JSONRPCRequest(jsonrpc="2.0", id=n, method="ping", params={"pad": pad}))
            )

    with anyio.fail_after(15):
        async with child as (_, write):
            async with anyio.create_task_group() as tg:
                for n in range(30):
                    tg.start_soon(give_up_after_a_while, n)
            (tmp_path / "go").touch()
    # What the pipe and asyncio's 64 KiB took before the senders had to wait; the others, which gave up, sent nothing.
    assert 1 <= int((tmp_path / "count").read_text()) < 10


async def test_a_child_deaf_to_its_stdin_and_sigterm_is_killed_with_what_it_started(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        """
        import pathlib, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(
            [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
        )
        pathlib.Path(sys.argv[1], "pids").write_text(f"{grandchild.pid}")
        print('{"jsonrpc": "2.0", "method": "notifications/initialized"}', flush=True)
        time.sleep(60)
        """,
    )
    with anyio.fail_after(15):
        async with child as (read, _):
            await read.__anext__()  # it is running, and so is its own child
            grandchild = int((tmp_path / "pids").read_text())
            assert _alive(grandchild)
    assert not _alive(grandchild)


async def test_a_line_over_the_bound_ends_the_session_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _child(
        tmp_path,
        """
        import sys, time
        print('{"jsonrpc": "2.0", "method": "notifications/initialized"}', flush=True)
        print('{"jsonrpc": "2.0", "method": "x", "params": {"pad": "' + "p" * 5000 + '"}}', flush=True)
        time.sleep(60)
        """,
        max_line_bytes=1024,
    )
    with anyio.fail_after(15), caplog.at_level(logging.ERROR):
        async with child as (read, _):
            messages = [item async for item in read]
    assert len(messages) == 1 and isinstance(messages[0], SessionMessage)
    assert "server 'kid' wrote a line longer than the master takes" in caplog.text


async def test_a_line_that_is_not_json_rpc_is_an_error_that_does_not_repeat_it(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        """
        import time
        import sys
        print('{"access_token": "s3cret-value"}', flush=True)
        sys.stdout.buffer.write(b'{"jsonrpc": "2.0", "method": "s3cret\\xff"}\\n')
        print()
        print('{"jsonrpc": "2.0", "method": "notifications/initialized"}', flush=True)
        time.sleep(60)
        """,
    )
    with anyio.fail_after(10):
        async with child as (read, _):
            errors = [await read.__anext__(), await read.__anext__()]  # not JSON-RPC, not UTF-8
            after = await read.__anext__()  # the blank line is skipped, not an error
    for error in errors:
        assert isinstance(error, ValueError) and "not a JSON-RPC message" in str(error)
        assert "s3cret" not in str(error)
    assert isinstance(after, SessionMessage) and isinstance(after.message, types.JSONRPCNotification)


async def test_a_child_that_closes_its_stdin_ends_the_session(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        """
        import os, time
        os.close(0)
        print('{"jsonrpc": "2.0", "method": "notifications/initialized"}', flush=True)
        time.sleep(60)
        """,
    )
    with anyio.fail_after(15):
        async with child as (read, write):
            await read.__anext__()
            with pytest.raises(anyio.BrokenResourceError):
                for n in range(1000):  # the pipe may take a write or two before its closing is noticed
                    await write.send(_ping(n))
                    await anyio.sleep(0.01)
            # Though the child still runs, the session's receive loop ends: its supervisor starts it again.
            assert [item async for item in read] == []
