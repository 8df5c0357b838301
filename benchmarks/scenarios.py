"""The benchmark scenarios 1-7. Each returns rows: {"scenario", "case", "subject", ...figures} (or "error")."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters

from benchmarks import measure
from benchmarks.measure import LEGACY, MODERN, RawSession
from benchmarks.procs import (
    MASTER,
    Running,
    backend_command,
    fastmcp_proxy,
    floor,
    http_backend,
    http_master,
    mcp_proxy,
    pid_with,
    rss_kb,
    stdio_master_args,
    stdio_server,
    write_config,
)

Row = dict[str, Any]


@dataclass
class Settings:
    calls: int
    warmup: int
    budget_s: float
    sessions: int  # scenario 2
    session_calls: int
    list_repeats: int
    setup_repeats: int
    idle_sessions: int  # scenario 6
    principals: int
    peers: bool
    workdir: Path
    case: str = ""  # run only the cases of scenarios 1 and 2 whose name contains this

    @staticmethod
    def of(quick: bool, peers: bool, workdir: Path, case: str = "") -> Settings:
        if quick:
            return Settings(200, 20, 10.0, 32, 10, 5, 20, 200, 40, peers, workdir, case)
        return Settings(1000, 50, 30.0, 32, 50, 20, 50, 1000, 200, peers, workdir, case)


async def _row(scenario: str, case: str, subject: str, measure_it: Callable[[], Awaitable[dict[str, Any]]]) -> Row:
    row: Row = {"scenario": scenario, "case": case, "subject": subject}
    try:
        with anyio.fail_after(600):
            row.update(await measure_it())
    except Exception as exc:  # a peer that cannot do something is a finding, not the end of the run
        row["error"] = _describe(exc)
    print(f"  [{scenario}] {case} | {subject}: " + _brief(row), flush=True)
    return row


def _describe(exc: BaseException) -> str:
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


def _brief(row: Row) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    keys = (
        "calls_per_s",
        "p50_ms",
        "p99_ms",
        "p90_ms",
        "errors",
        "cpu_ms_per_call",
        "ready_ms",
        "kb_per_session",
        "kb_per_principal",
        "rss_first_kb",
        "rss_half_kb",
        "rss_all_kb",
        "backend_sessions_all",
    )
    return ", ".join(f"{k}={row[k]:.4g}" for k in keys if k in row)


# ---- 1 and 7: sequential calls on one session ----------------------------------------------------------------------

ERAS = {LEGACY: "handshake era", MODERN: "2026-07-28"}
# benchmarks/floor.py: the least a gateway built on this SDK costs, and the least one more process on the path costs
# (a byte relay in front of an HTTP backend, a line relay in front of a stdio one).
SDK_FLOORS = (
    ("sdk", "floor: bare SDK gateway"),
    ("sdk-auto", "floor: bare SDK gateway, 2026-07-28 backend hop"),
)
HTTP_FLOORS = (*SDK_FLOORS, ("bytes", "floor: byte relay"))
STDIO_FLOORS = (*SDK_FLOORS, ("lines", "floor: line relay"))


async def sequential_calls(s: Settings) -> list[Row]:
    rows: list[Row] = []
    for mode, era in ERAS.items():
        for front, backend, run in (
            ("HTTP", "HTTP", _http_http),
            ("HTTP", "stdio", _http_stdio),
            ("stdio", "stdio", _stdio_stdio),
        ):
            case = f"{front} front, {backend} backend, {era}"
            if s.case in case:
                rows += await run(s, mode, case)
    return rows


# A subject of scenarios 1 and 2: its name, what starts it (the target its client connects to, and the pid whose
# CPU is its figure, if any), and the tool it calls.
Subject = tuple[str, Callable[[], AbstractContextManager[tuple[Any, Callable[[], int] | None]]], str]
# Each subject's calls of a round, in this many turns. Fewer for concurrent sessions: each turn has a tail (its
# sessions finishing the call they are in), which weighs more on short turns.
BLOCKS = {"1": 10, "2": 5}


@contextmanager
def _process(start: Callable[[], AbstractContextManager[Running]]) -> Iterator[tuple[Any, Callable[[], int]]]:
    with start() as running:
        yield running.url, lambda: running.pid


@contextmanager
def _given(target: Any, pid_of: Callable[[], int] | None = None) -> Iterator[tuple[Any, Callable[[], int] | None]]:
    yield target, pid_of


Taker = Callable[[Any, str, Callable[[], int] | None], "measure.Turns | measure.Crowd"]


async def _in_turns(
    s: Settings, scenario: str, case: str, subjects: list[Subject], take: Taker, calls: int
) -> list[Row]:
    """Every subject of a case started, then connected, before any is timed; then their calls made in blocks
    taken in turn.

    A subject that fails to start, to connect or to answer gets an error row (a peer that cannot do something is
    a finding, not the end of the run). A slow one takes every turn too, with smaller blocks, so that it still
    fits its time budget."""
    failed: dict[str, Exception] = {}
    figures: dict[str, dict[str, float]] = {}
    blocks = BLOCKS[scenario]
    try:
        with ExitStack() as processes:
            started: list[tuple[str, Any, Callable[[], int] | None, str]] = []
            for name, start, tool in subjects:
                try:
                    started.append((name, *processes.enter_context(start()), tool))
                except Exception as exc:
                    failed[name] = exc
            async with AsyncExitStack() as sessions:
                turns: list[tuple[str, measure.Turns | measure.Crowd]] = []
                for name, target, pid_of, tool in started:
                    turn = take(target, tool, pid_of)
                    try:
                        await turn.open(sessions)
                        turns.append((name, turn))
                    except Exception as exc:
                        failed[name] = exc
                size = {name: max(1, calls // blocks) for name, _ in turns}
                for _ in range(blocks):
                    for name, turn in turns:
                        if name in failed:
                            continue
                        try:
                            with anyio.fail_after(measure.OPEN_LIMIT_S):
                                await turn.block(size[name])
                        except Exception as exc:
                            failed[name] = exc
                            continue
                        # The block size that, at this pace, fits all its turns into its time budget.
                        pace = len(turn.latencies) / turn.elapsed
                        size[name] = max(1, min(size[name], int(pace * s.budget_s / blocks)))
                figures = {name: turn.figures() for name, turn in turns if name not in failed}
    except Exception as exc:  # closing a session or a process: the figures are taken already
        for name, _, _ in subjects:
            if name not in figures:
                failed.setdefault(name, exc)
    rows = []
    for name, _, _ in subjects:
        row: Row = {"scenario": scenario, "case": case, "subject": name}
        if name in figures:
            row.update(figures[name])
        else:
            row["error"] = _describe(failed[name])
        print(f"  [{scenario}] {case} | {name}: " + _brief(row), flush=True)
        rows.append(row)
    return rows


async def _sequential(s: Settings, case: str, mode: str, subjects: list[Subject]) -> list[Row]:
    def turns(target: Any, tool: str, pid_of: Callable[[], int] | None) -> measure.Turns:
        return measure.Turns(target, tool, mode, s.warmup, pid_of)

    return await _in_turns(s, "1", case, subjects, turns, s.calls)


async def _http_http(s: Settings, mode: str, case: str) -> list[Row]:
    with http_backend() as backend:
        server = {"id": "b", "type": "http", "url": backend.url}
        # A direct row's CPU figure is the backend's own: what one SDK server spends on a call.
        subjects: list[Subject] = [
            ("direct", partial(_given, backend.url, lambda: backend.pid), "echo"),
            ("master", partial(_process, partial(http_master, s.workdir, [server])), "b__echo"),
        ]
        if mode == LEGACY:  # what the front's event streams cost: the same master answering POSTs with JSON
            json_front = partial(http_master, s.workdir, [server], "--json-response")
            subjects.append(("master --json-response", partial(_process, json_front), "b__echo"))
        for kind, name in HTTP_FLOORS:
            subjects.append((name, partial(_process, partial(floor, kind, [backend.url])), "echo"))
        if s.peers:
            for shared, name in ((False, "FastMCP proxy (default)"), (True, "FastMCP proxy (shared session)")):
                peer = partial(fastmcp_proxy, [backend.url], shared=shared)
                subjects.append((name, partial(_process, peer), "echo"))
        return await _sequential(s, case, mode, subjects)


async def _http_stdio(s: Settings, mode: str, case: str) -> list[Row]:
    stdio = StdioServerParameters(command=sys.executable, args=backend_command()[1:])
    with http_backend() as backend:  # the goal compares with a direct HTTP connection
        subjects: list[Subject] = [
            ("direct", partial(_given, backend.url, lambda: backend.pid), "echo"),
            ("direct (stdio)", partial(_given, stdio), "echo"),
            ("master", partial(_process, partial(http_master, s.workdir, [stdio_server("b")])), "b__echo"),
        ]
        if mode == LEGACY:
            json_front = partial(http_master, s.workdir, [stdio_server("b")], "--json-response")
            subjects.append(("master --json-response", partial(_process, json_front), "b__echo"))
        for kind, name in STDIO_FLOORS:
            subjects.append((name, partial(_process, partial(floor, kind, backend_command())), "echo"))
        if s.peers:
            subjects.append(("mcp-proxy", partial(_process, partial(mcp_proxy, backend_command())), "echo"))
            peer = partial(fastmcp_proxy, backend_command(), shared=True)
            subjects.append(("FastMCP proxy (shared session)", partial(_process, peer), "echo"))
        return await _sequential(s, case, mode, subjects)


async def _stdio_stdio(s: Settings, mode: str, case: str) -> list[Row]:
    direct = StdioServerParameters(command=sys.executable, args=backend_command()[1:])
    command, marker = stdio_master_args(s.workdir, [stdio_server("b")])
    through = StdioServerParameters(command=command[0], args=command[1:])
    subjects: list[Subject] = [
        ("direct", partial(_given, direct), "echo"),
        ("master", partial(_given, through, lambda: pid_with(marker)), "b__echo"),
    ]
    return await _sequential(s, case, mode, subjects)


# ---- 2: concurrent sessions ----------------------------------------------------------------------------------------


async def concurrent_sessions(s: Settings) -> list[Row]:
    rows: list[Row] = []

    def crowd(target: Any, tool: str, pid_of: Callable[[], int] | None) -> measure.Crowd:
        return measure.Crowd(target, tool, s.sessions, pid_of)

    case = f"{s.sessions} sessions x {s.session_calls} calls, HTTP front, HTTP backend"
    if s.case in case:
        with http_backend() as backend:
            server = {"id": "b", "type": "http", "url": backend.url}
            subjects: list[Subject] = [
                ("direct", partial(_given, backend.url), "echo"),
                ("master", partial(_process, partial(http_master, s.workdir, [server])), "b__echo"),
            ]
            for kind, name in HTTP_FLOORS:
                subjects.append((name, partial(_process, partial(floor, kind, [backend.url])), "echo"))
            if s.peers:
                for shared, name in ((False, "FastMCP proxy (default)"), (True, "FastMCP proxy (shared session)")):
                    subjects.append(
                        (name, partial(_process, partial(fastmcp_proxy, [backend.url], shared=shared)), "echo")
                    )
            rows += await _in_turns(s, "2", case, subjects, crowd, s.session_calls)
    case = f"{s.sessions} sessions x {s.session_calls} calls, HTTP front, stdio backend"
    if s.case in case:
        with http_backend() as backend:
            subjects = [
                ("direct", partial(_given, backend.url), "echo"),
                ("master", partial(_process, partial(http_master, s.workdir, [stdio_server("b")])), "b__echo"),
                (SDK_FLOORS[0][1], partial(_process, partial(floor, "sdk", backend_command())), "echo"),
            ]
            if s.peers:
                subjects.append(("mcp-proxy", partial(_process, partial(mcp_proxy, backend_command())), "echo"))
                peer = partial(fastmcp_proxy, backend_command(), shared=True)
                subjects.append(("FastMCP proxy (shared session)", partial(_process, peer), "echo"))
            rows += await _in_turns(s, "2", case, subjects, crowd, s.session_calls)
    return rows


# ---- 3: a 5,000-tool catalog ---------------------------------------------------------------------------------------

BACKENDS = 20
TOOLS_EACH = 250


@contextmanager
def _many_http_backends(count: int, *extra: str) -> Iterator[list[Running]]:
    with ExitStack() as stack:
        yield [stack.enter_context(http_backend(*extra)) for _ in range(count)]


async def big_catalog(s: Settings) -> list[Row]:
    case = f"tools/list, all pages, {BACKENDS} backends x {TOOLS_EACH} tools"
    expect = BACKENDS * TOOLS_EACH
    with _many_http_backends(BACKENDS, "--tools", str(TOOLS_EACH)) as backends:
        urls = [b.url for b in backends]
        servers = [{"id": f"s{i:02d}", "type": "http", "url": url} for i, url in enumerate(urls)]
        with http_master(s.workdir, servers) as master:
            pair: list[dict[str, float]] = []

            async def taking_turns() -> dict[str, float]:
                pair.extend(await measure.list_times([urls, [master.url]], s.list_repeats, expect))
                return pair[0]

            rows = [await _row("3", case, "direct", taking_turns)]
    if pair:
        rows.append(await _row("3", case, "master", _known(pair[1])))
    return rows


# ---- 4: session set-up ---------------------------------------------------------------------------------------------


async def session_setup(s: Settings) -> list[Row]:
    case = "initialize of a new session, HTTP front, HTTP backend"
    with http_backend() as backend, http_master(s.workdir, [{"id": "b", "type": "http", "url": backend.url}]) as master:
        pair: list[dict[str, float]] = []

        async def taking_turns() -> dict[str, float]:
            pair.extend(await measure.setup_times([backend.url, master.url], s.setup_repeats))
            return pair[0]

        rows = [await _row("4", case, "direct", taking_turns)]
    if pair:
        rows.append(await _row("4", case, "master", _known(pair[1])))
    return rows


def _known(figures: dict[str, float]) -> Callable[[], Awaitable[dict[str, float]]]:
    async def measured() -> dict[str, float]:
        return figures

    return measured


# ---- 5: start-up ---------------------------------------------------------------------------------------------------


async def _start_stdio_backends(count: int) -> dict[str, float]:
    """Spawn `count` stdio backends at once and wait until each has initialized and listed its tools."""
    t0 = time.perf_counter()
    params = StdioServerParameters(command=sys.executable, args=backend_command()[1:])
    ready: list[float] = []

    async def one() -> None:
        async with Client(params, mode=LEGACY) as client:
            await client.list_tools()
            ready.append(time.perf_counter() - t0)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return {"ready_ms": max(ready) * 1000}


async def _start_master(s: Settings, count: int) -> dict[str, float]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    servers = [stdio_server(f"s{i:02d}") for i in range(count)]
    config = write_config(s.workdir, "startup", servers, port=port)
    t0 = time.perf_counter()
    command = [MASTER, "serve", "--config", str(config)]
    async with await anyio.open_process(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            async with httpx2.AsyncClient(timeout=2.0) as http:
                with anyio.fail_after(180):
                    while True:
                        try:
                            if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                                break
                        except httpx2.HTTPError:
                            pass
                        await anyio.sleep(0.01)
            return {"ready_ms": (time.perf_counter() - t0) * 1000}
        finally:
            process.terminate()
            with anyio.move_on_after(30):
                await process.wait()


async def startup(s: Settings) -> list[Row]:
    case = f"launch to ready, {BACKENDS} stdio backends"
    return [
        await _row("5", case, "direct", lambda: _start_stdio_backends(BACKENDS)),
        await _row("5", case, "one backend alone", lambda: _start_stdio_backends(1)),
        await _row("5", case, "master", lambda: _start_master(s, BACKENDS)),
    ]


# ---- 6: memory -----------------------------------------------------------------------------------------------------


async def _idle_sessions(url: str, pid: int, count: int) -> dict[str, float]:
    async with httpx2.AsyncClient(timeout=30.0) as http:
        warm = RawSession(http, url)
        await warm.open()
        await anyio.sleep(0.5)
        before = rss_kb(pid)
        held = [RawSession(http, url) for _ in range(count)]
        for session in held:
            await session.open()
        await anyio.sleep(1.0)
        after = rss_kb(pid)
    return {
        "sessions": count,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_session": (after - before) / count,
    }


async def _principals(master: Running, tokens: list[str], keep: int) -> dict[str, float]:
    """One call per principal (each opens its per-user backend session); RSS after the first (warm), after `keep`
    (the LRU is full) and after all (the LRU has been evicting)."""
    readyz = master.url.rsplit("/", 1)[0] + "/readyz"
    figures: dict[str, float] = {"rss_0_kb": rss_kb(master.pid)}
    marks = {1: "first", keep: "half", len(tokens): "all"}
    async with httpx2.AsyncClient(timeout=30.0) as http:
        for index, token in enumerate(tokens, 1):
            session = RawSession(http, master.url, token)
            await session.open()
            await session.request("tools/call", {"name": "b__echo", "arguments": {"text": "x"}})
            await session.close()  # only the principal's backend session stays
            if index in marks:
                await anyio.sleep(0.5)
                figures[f"rss_{marks[index]}_kb"] = rss_kb(master.pid)
                rows = (await http.get(readyz)).json()["servers"]
                figures[f"backend_sessions_{marks[index]}"] = rows[0].get("sessions", 0)
    if not figures["backend_sessions_half"]:
        raise RuntimeError("no per-user backend session was opened: the figures would measure nothing")
    figures["kb_per_principal"] = (figures["rss_half_kb"] - figures["rss_first_kb"]) / (keep - 1)
    return figures


async def memory(s: Settings) -> list[Row]:
    rows: list[Row] = []
    case = f"{s.idle_sessions} idle front sessions"
    with http_backend() as backend:
        rows.append(await _row("6", case, "direct", lambda: _idle_sessions(backend.url, backend.pid, s.idle_sessions)))
        server = {"id": "b", "type": "http", "url": backend.url}
        with http_master(s.workdir, [server]) as master:
            rows.append(
                await _row("6", case, "master", lambda: _idle_sessions(master.url, master.pid, s.idle_sessions))
            )
        keep = s.principals // 2
        case = f"{s.principals} principals, per-user backend sessions, LRU of {keep}"
        tokens = [secrets.token_urlsafe(24) for _ in range(s.principals)]
        inbound = {"mode": "static_tokens", "tokens": [{"token": t, "subject": f"u{i}"} for i, t in enumerate(tokens)]}
        # Each principal's token is exchanged (by the benchmark backend itself) for one of its own: one backend
        # session per principal, as any per-user strategy opens.
        exchange = {"token_endpoint": backend.url.rsplit("/", 1)[0] + "/token", "client_id": "bench"}
        per_user = {**server, "auth_strategy": "token_exchange", "auth_config": exchange}
        with http_master(s.workdir, [per_user], auth=inbound, sessions={"max_per_server": keep}) as master:
            rows.append(await _row("6", case, "master", lambda: _principals(master, tokens, keep)))
    return rows


SCENARIOS: dict[str, Callable[[Settings], Awaitable[list[Row]]]] = {
    "1": sequential_calls,
    "2": concurrent_sessions,
    "3": big_catalog,
    "4": session_setup,
    "5": startup,
    "6": memory,
}
