"""Fault tests: backends that die, hang, babble, refuse to start, answer huge, or break HTTP, one test each.

What every test asserts is that nothing is lost: each call gets exactly one answer (its result, or a clear error
naming the server), never a hang; the master survives, keeps serving the other backends, and `/readyz` tells the
truth. The master runs in this process (tests/conftest.py `serve_master`), so its stdio children are this
process's children, found and counted through /proc.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from master_mcp.server import MasterServer
from tests.backends.faulty_stdio import pattern
from tests.conftest import (
    TESTS,
    HttpBackend,
    ServerProcess,
    free_port,
    make_config,
    serve_master,
    stdio_server,
    wait_until,
    write_config,
)
from tests.test_backend_http import closing_idle_connections, dropping_when_armed

pytestmark = pytest.mark.anyio

FAULTY_STDIO = str(TESTS / "backends" / "faulty_stdio.py")
FAULTY_HTTP = str(TESTS / "backends" / "faulty_http.py")
MASTER_CLI = str(Path(sys.executable).parent / "master-mcp")
# Far above what any answer here needs, far below the per-call timeouts: an answer that only a timeout would
# have produced fails the test instead.
ANSWER_BOUND_S = 20.0

Outcome = tuple[str, str]  # ("ok", text) or ("error", message)


def faulty_stdio(server_id: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"id": server_id, "type": "stdio", "command": sys.executable, "args": [FAULTY_STDIO, *args], **extra}


class FaultyHttp(ServerProcess):
    """tests/backends/faulty_http.py on a loopback port."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/mcp"
        super().__init__([sys.executable, FAULTY_HTTP, "--port", str(port)], port)


@pytest.fixture
def faulty_http() -> Any:
    backend = FaultyHttp()
    yield backend
    backend.stop()


def faulty(transport: str, server_id: str, request: pytest.FixtureRequest, **extra: Any) -> dict[str, Any]:
    """The faulty backend `server_id` over `transport`: a stdio child, or tests/backends/faulty_http.py."""
    if transport == "http":
        http: FaultyHttp = request.getfixturevalue("faulty_http")
        return {"id": server_id, "type": "http", "url": http.url, **extra}
    return faulty_stdio(server_id, **extra)


async def outcome(client: Client, name: str, arguments: dict[str, Any], bound: float = ANSWER_BOUND_S) -> Outcome:
    """The one answer a call got: a result's text, or an error (an error result, or a JSON-RPC error)."""
    with anyio.fail_after(bound):
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as exc:
            return "error", exc.error.message
    text = "".join(block.text for block in result.content if isinstance(block, types.TextContent))
    return ("error" if result.is_error else "ok"), text


def assert_clear_error(answer: Outcome, server_id: str) -> None:
    kind, message = answer
    assert kind == "error" and repr(server_id) in message, answer


# ---- processes, as /proc shows them --------------------------------------------------------------------------------


def _stat(pid: str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return fields[0], int(fields[1])


def children(marker: str) -> list[int]:
    """Live (not zombie) children of this process whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None or stat[1] != os.getpid() or stat[0] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def zombies() -> set[int]:
    """Children of this process that ended and were never waited for."""
    return {
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None and stat == ("Z", os.getpid())
    }


def marker() -> str:
    """A unique `--name` for a backend child, so this test finds its own processes only."""
    return f"fault-{uuid.uuid4().hex[:12]}"


async def readyz(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx2.AsyncClient() as http:
        response = await http.get(url.replace("/mcp", "/readyz"))
    return response.status_code, {row["id"]: row for row in response.json()["servers"]}


def is_up(master: MasterServer, server_id: str, connects: int = 1) -> bool:
    backend = master.pool.get(server_id)
    return backend.state.value == "up" and backend.connects >= connects


# ---- 1. kill -9 mid-call -------------------------------------------------------------------------------------------


async def test_kill_9_of_a_stdio_backend_mid_call_ends_its_calls_and_it_comes_back() -> None:
    name = marker()
    # timeout_s is far beyond the answer bound: the in-flight calls must end because the child died, not time out.
    config = make_config(stdio_server("victim", "--name", name, timeout_s=120), stdio_server("bystander"))
    zombies_before = zombies()
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        [pid] = children(name)
        answers: list[Outcome] = []

        async def in_flight() -> None:
            answers.append(await outcome(client, "victim__slow", {"seconds": 600}))

        async def backend_saw_calls() -> int:
            counts = await outcome(client, "victim__request_counts", {})
            return int(json.loads(counts[1]).get("tools/call", 0))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(in_flight)
            with anyio.fail_after(ANSWER_BOUND_S):
                while await backend_saw_calls() < 6:  # noqa: ASYNC110 (the five slow calls and this count)
                    await anyio.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        assert len(answers) == 5
        for answer in answers:
            assert_clear_error(answer, "victim")
        # While it restarts its tools are out of the catalog; a call then is told so, not "unknown tool".
        meanwhile = await outcome(client, "victim__echo", {"text": "meanwhile"})
        if meanwhile != ("ok", "meanwhile"):
            assert_clear_error(meanwhile, "victim")

        await wait_until(lambda: is_up(master, "victim", connects=2))
        assert master.pool.get("victim").restarts == 1
        assert await outcome(client, "victim__echo", {"text": "back"}) == ("ok", "back")
        assert await outcome(client, "bystander__echo", {"text": "here"}) == ("ok", "here")
        [new_pid] = children(name)  # one child again, a new one
        assert new_pid != pid
        await wait_until(lambda: zombies() <= zombies_before)  # the killed child was waited for
        status, rows = await readyz(url)
        assert status == 200 and rows["victim"]["restarts"] == 1
    await wait_until(lambda: children(name) == [])


# ---- 2. a backend that never answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_call_that_is_never_answered_times_out_naming_the_server(
    transport: str, request: pytest.FixtureRequest
) -> None:
    stuck = faulty(transport, "stuck", request, timeout_s=3)
    async with (
        serve_master(make_config(stuck, stdio_server("steady"))) as (master, url),
        Client(url, mode="legacy") as client,
    ):
        answers: dict[str, Outcome] = {}

        async def hang() -> None:
            answers["hang"] = await outcome(client, "stuck__hang", {})

        async with anyio.create_task_group() as tg:
            tg.start_soon(hang)
            for n in range(5):
                assert await outcome(client, "steady__echo", {"text": str(n)}) == ("ok", str(n))
            assert "hang" not in answers  # the others did not wait for the stuck call
        kind, message = answers["hang"]
        assert kind == "error" and "'stuck'" in message and "within 3s" in message
        # The backend is alive and well otherwise: its other tools answer, and it is still ready.
        assert await outcome(client, "stuck__echo", {"text": "fine"}) == ("ok", "fine")
        assert master.readiness()[0]


# ---- 3. non-JSON on stdout -----------------------------------------------------------------------------------------


async def test_a_backend_printing_garbage_on_stdout_still_serves() -> None:
    config = make_config(faulty_stdio("messy", "--garbage"), stdio_server("steady"))
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        assert is_up(master, "messy")
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"messy__echo", "messy__hang", "messy__big", "steady__echo"} <= names
        for n in range(5):
            assert await outcome(client, "messy__echo", {"text": f"m{n}"}) == ("ok", f"m{n}")
        assert await outcome(client, "steady__echo", {"text": "s"}) == ("ok", "s")
        # A line that looks like an answer to a request nobody made is not taken for anyone's answer.
        assert master.pool.get("messy").connects == 1
        status, rows = await readyz(url)
        assert status == 200 and rows["messy"]["state"] == "up"


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_a_log_line_read_together_with_its_answer_still_reaches_its_caller(era: str) -> None:
    """The backend writes a log line and the call's answer at once, so the master reads them together: the line
    must not lose the race to the answer (to a stream already closed, or taken for nobody's once the call is over)."""
    lines: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        lines.append(params.data)

    asks = {"log_level": "info"} if era != "legacy" else {}
    async with (
        serve_master(make_config(faulty_stdio("chatty"))) as (_, url),
        Client(url, mode=era, logging_callback=on_log, **asks) as client,
    ):
        if era == "legacy":
            await client.set_logging_level("info")
        for n in range(20):
            assert await outcome(client, "chatty__logged", {"text": f"line {n}"}) == ("ok", "logged")
            await wait_until(lambda: len(lines) > n, timeout=5)  # noqa: B023
    assert lines == [f"line {n}" for n in range(20)]


# ---- 4. exit at start-up -------------------------------------------------------------------------------------------


async def test_a_backend_slower_to_start_than_the_connect_timeout_is_reported_down_and_not_restarted(
    tmp_path: Path,
) -> None:
    """A child that takes 2.5 s to start, against a connect timeout of 1 s: past the timeout it is reported down
    and start-up goes on, but it is not killed (a restart would cost its start-up again); it comes up on its
    first launch."""
    launches = tmp_path / "launches"
    slow = faulty_stdio("slow", "--slow-start", "2.5", "--launches", str(launches), connect_timeout_s=1)
    async with serve_master(make_config(slow, stdio_server("steady"))) as (master, url):
        status, rows = await readyz(url)
        if rows["slow"]["state"] != "up":  # a loaded machine may take the 1.5 s in between to get here
            assert status == 503 and rows["slow"]["state"] == "down"
            assert rows["slow"]["last_error"] == "not up after 1s; still waiting (up to 4s)"
        async with Client(url, mode="legacy") as client:
            await wait_until(lambda: is_up(master, "slow"))
            assert await outcome(client, "slow__echo", {"text": "late"}) == ("ok", "late")
    assert launches.read_text() == "launched\n"


async def test_a_backend_that_exits_at_start_up_is_reported_and_the_rest_serve(tmp_path: Path) -> None:
    broken = faulty_stdio("broken", "--exit-at-start", "3", crash_loop={"crashes": 2, "window_s": 60})
    async with serve_master(make_config(broken, stdio_server("steady"))) as (master, url):
        status, rows = await readyz(url)
        assert status == 503
        # Between its attempts (and during them) it is "down" or, once in a crash loop, "failed"; never "up".
        assert rows["broken"]["state"] in ("down", "failed") and rows["broken"]["last_error"]
        assert rows["steady"]["state"] == "up"
        async with Client(url, mode="legacy") as client:
            assert await outcome(client, "steady__echo", {"text": "fine"}) == ("ok", "fine")
            # Its tools were never listed, but the name says whose they would be: the caller hears why it fails.
            refused = await outcome(client, "broken__echo", {"text": "x"})
            assert_clear_error(refused, "broken")
            assert "connection closed" in refused[1].lower()
        await wait_until(lambda: master.pool.get("broken").state.value == "failed")
        status, rows = await readyz(url)
        assert status == 503 and rows["broken"]["last_error"].startswith("crash loop (2 failures within 60s)")
        # The child's own reason (its last line on stderr) is part of the error.
        assert "no such database" in rows["broken"]["last_error"]

    path = write_config(tmp_path / "servers.yaml", broken, stdio_server("steady"))
    with anyio.fail_after(60):
        check = await anyio.run_process([MASTER_CLI, "check", "--config", str(path)], check=False)
    assert check.returncode == 1
    table = {line.split()[0]: line for line in check.stdout.decode().splitlines()[1:]}
    assert table["broken"].split()[2] in ("down", "failed") and "connection closed" in table["broken"].lower()
    assert "no such database" in table["broken"]
    assert table["steady"].split()[2] == "up"


# ---- 5. a 10 MB result ---------------------------------------------------------------------------------------------

BIG = 10 * 1024 * 1024


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_10_mb_result_arrives_whole(transport: str, request: pytest.FixtureRequest) -> None:
    large = faulty(transport, "large", request, timeout_s=60)
    async with serve_master(make_config(large, stdio_server("steady"))) as (master, url):
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # The SDK client caps one SSE event at 1 MiB by default; this caller accepts any size.
        async with Client(streamable_http_client(url, max_sse_event_size=None), mode="legacy") as client:
            # A generous bound: it must complete, how fast is for the benchmarks.
            kind, text = await outcome(client, "large__big", {"size": BIG}, bound=120)
            assert kind == "ok", text[:300]
            assert len(text) == BIG
            assert hashlib.sha256(text.encode()).digest() == hashlib.sha256(pattern(BIG).encode()).digest()
            assert await outcome(client, "steady__echo", {"text": "after"}) == ("ok", "after")
            assert await outcome(client, "large__echo", {"text": "after"}) == ("ok", "after")
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
        # Master and client share this process: about a dozen copies of 10 MiB (parsed, mapped, sent, received)
        # is what it takes today; a result that is copied per chunk or kept around would show here.
        assert growth < 30 * BIG, f"peak memory grew by {growth / 2**20:.0f} MiB for one 10 MiB result"
        assert master.readiness()[0]


# ---- 6. HTTP 500, invalid JSON, a cut stream -----------------------------------------------------------------------


async def test_http_backend_failures_are_clear_errors_and_cost_no_other_call(faulty_http: FaultyHttp) -> None:
    config = make_config({"id": "shaky", "type": "http", "url": faulty_http.url}, stdio_server("steady"))
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        assert await outcome(client, "shaky__echo", {"text": "first"}) == ("ok", "first")
        answers: dict[str, Outcome] = {}

        async def slow() -> None:
            answers["slow"] = await outcome(client, "shaky__slow", {"seconds": 3})

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)  # on the same backend session while the others break
            for fault in ("cut_stream", "http_500", "bad_json", "cut_stream", "http_500", "bad_json"):
                assert_clear_error(await outcome(client, f"shaky__{fault}", {}), "shaky")
                assert await outcome(client, "shaky__echo", {"text": fault}) == ("ok", fault), fault
                assert await outcome(client, "steady__echo", {"text": fault}) == ("ok", fault), fault
        # One response broken is not the session broken: the call in flight got its answer, nothing reconnected.
        assert answers["slow"] == ("ok", "slow done")
        assert master.pool.get("shaky").connects == 1
        status, rows = await readyz(url)
        assert status == 200 and rows["shaky"]["state"] == "up"


async def test_http_server_failures_count_against_the_breaker(faulty_http: FaultyHttp) -> None:
    """An HTTP 500 with no JSON-RPC error in it is the backend failing rather than answering: its callers hear so,
    naming the server and the status, and `failure_threshold` of them in a row open its circuit breaker."""
    breaker = {"circuit_breaker": {"failure_threshold": 2, "recovery_timeout_s": 60}}
    config = make_config({"id": "shaky", "type": "http", "url": faulty_http.url})
    config = config.model_copy(update={"routing": config.routing.model_validate(breaker)})
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        assert await outcome(client, "shaky__echo", {"text": "up"}) == ("ok", "up")
        for _ in range(2):
            assert await outcome(client, "shaky__http_500", {}) == (
                "error",
                "server 'shaky' failed tools/call with HTTP 500",
            )
        kind, refused = await outcome(client, "shaky__echo", {"text": "now?"})
        assert kind == "error" and "is not being called for now: 2 failures in a row" in refused
        assert master.readiness()[1][0]["breaker"] == "open"
        master.pool.get("shaky").breaker._opened_at -= 61  # type: ignore[union-attr]  # as if the pause had passed
        # The trial call gets an error, but one the backend answered with (a body that is not JSON-RPC): it is
        # there, and the breaker closes rather than waiting half-open for ever.
        assert_clear_error(await outcome(client, "shaky__bad_json", {}), "shaky")
        assert master.readiness()[1][0]["breaker"] == "closed"
        assert await outcome(client, "shaky__echo", {"text": "back"}) == ("ok", "back")


async def test_a_request_whose_connection_breaks_costs_that_request_alone(faulty_http: FaultyHttp) -> None:
    """An answer cut short as its connection closes (a backend closing a reused connection, a proxy): the request
    is lost, the backend session is not. It is not sent again, even a read: the backend had begun to answer, so it
    has the request and may have carried it out."""
    config = make_config({"id": "shaky", "type": "http", "url": faulty_http.url})
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        lost = await outcome(client, "shaky__cut_json", {})
        assert_clear_error(lost, "shaky")
        assert "closed the connection during tools/call" in lost[1]
        assert await outcome(client, "shaky__echo", {"text": "after"}) == ("ok", "after")
        with anyio.fail_after(ANSWER_BOUND_S), pytest.raises(MCPError, match="closed the connection"):
            await client.read_resource("shaky+faulty://flaky")  # the first read is cut
        with anyio.fail_after(ANSWER_BOUND_S):
            read = await client.read_resource("shaky+faulty://flaky")
        assert isinstance(read.contents[0], types.TextResourceContents)
        assert read.contents[0].text == "read 2"  # not a third: nothing was sent twice
        backend = master.pool.get("shaky")
        assert backend.connects == 1 and backend.state.value == "up"


async def test_a_request_whose_connection_is_closed_unread_is_sent_again_only_if_safe() -> None:
    """Nothing reached the backend, so a read is sent again on a new connection, unnoticed; a tool call is not (a
    tool need not be safe to repeat), and fails naming the server. The session stays: nothing reconnects."""
    backend = HttpBackend("--name", "raced")
    try:
        async with dropping_when_armed(backend.port) as (relay_port, arm):
            url_through = backend.url.replace(f":{backend.port}/", f":{relay_port}/")
            config = make_config({"id": "raced", "type": "http", "url": url_through})
            async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
                assert await outcome(client, "raced__echo", {"text": "first"}) == ("ok", "first")
                arm()
                with anyio.fail_after(ANSWER_BOUND_S):
                    read = await client.read_resource("raced+fixture://static")
                assert isinstance(read.contents[0], types.TextResourceContents)
                for _ in range(3):  # lost alone each time: the backend still answers, so nothing reconnects
                    arm()
                    lost = await outcome(client, "raced__echo", {"text": "second"})
                    assert_clear_error(lost, "raced")
                assert await outcome(client, "raced__echo", {"text": "third"}) == ("ok", "third")
                counts = json.loads((await outcome(client, "raced__request_counts", {}))[1])
                # No "second" arrived, and the read arrived once: first, third, and this call.
                assert counts["tools/call"] == 3 and counts["resources/read"] == 1
                connection = master.pool.get("raced")
                assert connection.connects == 1 and connection.state.value == "up"
    finally:
        backend.stop()


async def test_a_backend_that_dies_behind_a_tcp_relay_is_taken_for_down() -> None:
    """A port forward or TCP proxy still accepts connections after its backend died, then closes them unanswered:
    no request ever fails to connect. After a request that got no answer the master pings the backend on a new
    connection; nothing answers, so the session ends, the backend shows as down and is reconnected, rather than
    staying "up" and failing every call."""
    backend = HttpBackend("--name", "behind")
    try:
        async with closing_idle_connections(backend.port, idle_s=3600) as relay_port:
            url_through = backend.url.replace(f":{backend.port}/", f":{relay_port}/")
            config = make_config({"id": "behind", "type": "http", "url": url_through})
            async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
                assert await outcome(client, "behind__echo", {"text": "alive"}) == ("ok", "alive")
                backend.stop()
                assert_clear_error(await outcome(client, "behind__echo", {"text": "dead"}), "behind")
                await wait_until(lambda: master.pool.get("behind").state.value != "up", timeout=10)
                status, rows = await readyz(url)
                assert status == 503 and rows["behind"]["state"] in ("down", "failed")
                assert "stopped answering" in rows["behind"]["last_error"]
                assert_clear_error(await outcome(client, "behind__echo", {"text": "dead"}), "behind")
    finally:
        backend.stop()


# ---- 7. 200 concurrent calls while a backend is killed -------------------------------------------------------------

CALLS = 200
CLIENTS = 4


async def test_200_concurrent_calls_while_a_backend_is_killed_all_get_one_answer() -> None:
    name = marker()
    config = make_config(stdio_server("victim", "--name", name, timeout_s=120), stdio_server("steady"))
    zombies_before = zombies()
    async with serve_master(config) as (master, url):
        [pid] = children(name)
        answers: dict[int, list[Outcome]] = {n: [] for n in range(CALLS)}
        victim_calls = [n for n in range(CALLS) if n % 2 == 0]

        def seconds(n: int) -> float:
            # The victim's calls take from nothing to 3 s, so that when it dies some are answered, most in flight.
            return round(0.03 * (n // 2), 2)

        async def call(client: Client, n: int) -> None:
            if n % 2 == 0:
                answers[n].append(await outcome(client, "victim__slow", {"seconds": seconds(n)}))
            else:
                answers[n].append(await outcome(client, "steady__echo", {"text": str(n)}))

        async def burst(index: int) -> None:
            async with Client(url, mode="legacy") as client, anyio.create_task_group() as tg:
                for n in range(index, CALLS, CLIENTS):
                    tg.start_soon(call, client, n)

        async with anyio.create_task_group() as tg:
            for index in range(CLIENTS):
                tg.start_soon(burst, index)
            # Kill it once some of its calls have been answered, while the rest are in flight.
            await wait_until(lambda: sum(len(answers[n]) for n in victim_calls) >= 10, timeout=60)
            os.kill(pid, signal.SIGKILL)

        assert all(len(got) == 1 for got in answers.values()), "a call got no answer, or more than one"
        for n, [answer] in answers.items():
            if n % 2:
                assert answer == ("ok", str(n)), answer
            elif answer[0] == "error":
                assert_clear_error(answer, "victim")
            else:
                assert answer == ("ok", f"slept {seconds(n)}"), answer
        lost = sum(1 for n in victim_calls if answers[n][0][0] == "error")
        assert 0 < lost < len(victim_calls), f"{lost} of the victim's calls failed: the kill missed the burst"

        await wait_until(lambda: is_up(master, "victim", connects=2))
        async with Client(url, mode="legacy") as client:
            assert await outcome(client, "victim__echo", {"text": "back"}) == ("ok", "back")
            assert await outcome(client, "steady__echo", {"text": "still"}) == ("ok", "still")
        assert len(children(name)) == 1
        await wait_until(lambda: zombies() <= zombies_before)
        assert (await readyz(url))[0] == 200
    await wait_until(lambda: children(name) == [])
