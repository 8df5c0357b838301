"""What the benchmark client does and times: calls, lists, session set-ups, over the SDK `Client`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from benchmarks.procs import cpu_seconds

LEGACY = "legacy"
MODERN = "2026-07-28"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency_figures(latencies: list[float], elapsed: float, calls: int) -> dict[str, float]:
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "calls": calls,
    }


async def _warm(client: Client, tool: str, warmup: int) -> None:
    # Listing first: the SDK client lists tools on its own before the first call of an unseen tool (to validate
    # its output schema) and a 2026-07-28 client needs the listing for its request headers.
    await client.list_tools()
    for i in range(warmup):
        await client.call_tool(tool, {"text": f"w{i}"})


PidOf = Callable[[], int] | None


def _cpu(pid: int | None) -> float:
    return cpu_seconds(pid) if pid is not None else 0.0


# What a subject may take to connect and warm up, and to answer any one call (a peer that stops answering costs its
# own row, not the run).
OPEN_LIMIT_S = 600.0
# After a block, before its CPU is read: what a process does once it has answered (clean-up, collection) is its own.
SETTLE_S = 0.05
_KEEP_ALIVE = httpx2.Limits(keepalive_expiry=4.0)


class _Blocks:
    """Calls of one subject made in blocks, which the subjects of a case take in turn: a machine whose speed drifts
    within a round then weighs on each of them alike. Figures add up over the blocks."""

    def __init__(self, target: Any, tool: str, mode: str, sessions: int, warmup: int, pid_of: PidOf = None) -> None:
        self.target, self.tool, self.mode, self.warmup, self.pid_of = target, tool, mode, warmup, pid_of
        self.sessions = sessions
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = self.cpu = self.own_cpu = 0.0
        self._clients: list[Client] = []
        self._pid: int | None = None

    async def open(self, stack: AsyncExitStack) -> None:
        for _ in range(self.sessions):
            target = self.target
            if isinstance(target, str):
                # The SDK client keeps an idle connection 5 s, as long as an SDK server (the direct subject) does:
                # a session idle through the other subjects' turns may send its next call on a connection being
                # closed, and the lost POST ends the client and, through this stack, the case. Letting it go
                # sooner costs nothing timed: each block starts with an untimed call.
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0), limits=_KEEP_ALIVE)
                )
                target = streamable_http_client(target, http_client=http)
            client = Client(target, mode=self.mode, read_timeout_seconds=OPEN_LIMIT_S)
            self._clients.append(await stack.enter_async_context(client))
        with anyio.fail_after(OPEN_LIMIT_S):  # opened after the clients' own task groups, closed before them
            for client in self._clients:
                await _warm(client, self.tool, self.warmup)
            self._pid = self.pid_of() if self.pid_of else None

    async def block(self, calls: int) -> None:
        # One untimed call per session first: a connection left idle through the other subjects' turns may have
        # been closed (keep-alive expiry), and reopening it is not what a call costs.
        for client in self._clients:
            await client.call_tool(self.tool, {"text": "again"})
        cpu, own = _cpu(self._pid), time.process_time()
        start = time.perf_counter()
        await self._calls(calls)
        self.elapsed += time.perf_counter() - start
        self.own_cpu += time.process_time() - own
        await anyio.sleep(SETTLE_S)
        self.cpu += _cpu(self._pid) - cpu

    async def _calls(self, calls: int) -> None:
        raise NotImplementedError

    def figures(self) -> dict[str, float]:
        calls = len(self.latencies)
        used = {"cpu_ms_per_call": self.cpu * 1000 / calls} if self._pid is not None else {}
        used["client_cpu_ms_per_call"] = self.own_cpu * 1000 / calls
        return {**latency_figures(self.latencies, self.elapsed, calls), "errors": self.errors, **used}


class Turns(_Blocks):
    """Sequential echo calls on one session; a failed call ends the subject's measurement."""

    def __init__(self, target: Any, tool: str, mode: str, warmup: int, pid_of: PidOf = None) -> None:
        super().__init__(target, tool, mode, 1, warmup, pid_of)

    async def _calls(self, calls: int) -> None:
        (client,) = self._clients
        for i in range(calls):
            t0 = time.perf_counter()
            result = await client.call_tool(self.tool, {"text": str(i)})
            self.latencies.append(time.perf_counter() - t0)
            if result.is_error:
                raise RuntimeError(f"{self.tool} failed: {result.content}")


class Crowd(_Blocks):
    """`sessions` handshake-era sessions at once, each making sequential calls; errors are counted, not raised.

    A block ends when its first session has made its calls: the others finish the call they are in and stop, so
    a block's tail (sessions still running while the rest are done) is at most one call each."""

    def __init__(self, target: Any, tool: str, sessions: int, pid_of: PidOf = None) -> None:
        super().__init__(target, tool, LEGACY, sessions, 2, pid_of)

    async def _calls(self, calls: int) -> None:
        done = False

        async def one(client: Client, index: int) -> None:
            nonlocal done
            for i in range(calls):
                if done:
                    return
                t0 = time.perf_counter()
                try:
                    result = await client.call_tool(self.tool, {"text": f"{index}:{i}"})
                    self.errors += 1 if result.is_error else 0
                except Exception:
                    self.errors += 1
                self.latencies.append(time.perf_counter() - t0)
            done = True

        async with anyio.create_task_group() as tg:
            for index, client in enumerate(self._clients):
                tg.start_soon(one, client, index)


async def _once(blocks: _Blocks, calls: int) -> dict[str, float]:
    async with AsyncExitStack() as stack:
        await blocks.open(stack)
        await blocks.block(calls)
        return blocks.figures()


async def sequential(
    target: Any, tool: str, calls: int, warmup: int, mode: str, pid_of: PidOf = None
) -> dict[str, float]:
    """`calls` echo calls one after another on one session, in one block."""
    return await _once(Turns(target, tool, mode, warmup, pid_of), calls)


async def concurrent(url: str, tool: str, sessions: int, calls: int, pid: int | None = None) -> dict[str, float]:
    """`sessions` sessions at once, each making `calls` sequential calls, in one block."""
    return await _once(Crowd(url, tool, sessions, (lambda: pid) if pid is not None else None), calls)


async def list_all_tools(client: Client) -> int:
    count, cursor = 0, None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        count += len(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return count


async def list_times(subjects: list[list[str]], repeats: int, expect: int) -> list[dict[str, float]]:
    """Time to list every tool (all pages) of every URL of each subject, a subject's URLs listed at once; `repeats`
    times each, the subjects taking turns (see `setup_times`)."""
    times: list[list[float]] = [[] for _ in subjects]
    own = [0.0 for _ in subjects]
    counted: list[int] = [0 for _ in subjects]
    async with AsyncExitStack() as stack:
        opened = [[await stack.enter_async_context(Client(url, mode=LEGACY)) for url in urls] for urls in subjects]
        for repeat in range(repeats + 1):
            for index, clients in enumerate(opened):
                counts: list[int] = []
                t0, c0 = time.perf_counter(), time.process_time()

                async def one(client: Client, sink: list[int] = counts) -> None:
                    sink.append(await list_all_tools(client))

                async with anyio.create_task_group() as tg:
                    for client in clients:
                        tg.start_soon(one, client)
                if repeat:  # the first is a warm-up
                    times[index].append(time.perf_counter() - t0)
                    own[index] += time.process_time() - c0
                if sum(counts) < expect:
                    raise RuntimeError(f"listed {sum(counts)} tools, expected at least {expect}")
                counted[index] = sum(counts)
    return [
        {
            "p50_ms": percentile(kept, 0.5) * 1000,
            "p90_ms": percentile(kept, 0.9) * 1000,
            "tools": tools,
            # What the SDK client itself spends parsing the lists: a floor under any gateway's figure.
            "client_cpu_ms": spent * 1000 / max(repeats, 1),
        }
        for kept, spent, tools in zip(times, own, counted, strict=True)
    ]


async def setup_times(urls: list[str], repeats: int) -> list[dict[str, float]]:
    """Time to open a new session (`initialize` and `notifications/initialized`) at each of `urls`, `repeats` times.

    The URLs take turns, a session each, so that a machine that slows down or speeds up during the run weighs on
    all of them alike (timed one after the other, a ratio of two figures near 30 ms moved by a third between runs).
    """
    times: list[list[float]] = [[] for _ in urls]
    for _ in range(repeats):
        for url, kept in zip(urls, times, strict=True):
            client = Client(url, mode=LEGACY)
            t0 = time.perf_counter()
            await client.__aenter__()
            kept.append(time.perf_counter() - t0)
            await client.__aexit__(None, None, None)
    return [{"p50_ms": statistics.median(t) * 1000, "p90_ms": percentile(t, 0.9) * 1000} for t in times]


# ---- raw sessions: thousands of them cost the benchmark little ------------------------------------------------------

_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
_INIT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"},
}


class RawSession:
    """A handshake-era streamable-HTTP session driven with bare POSTs (no standalone GET stream)."""

    def __init__(self, http: httpx2.AsyncClient, url: str, token: str | None = None) -> None:
        self._http = http
        self._url = url
        self._headers = dict(_HEADERS)
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._next = 0

    async def _post(self, body: dict[str, Any]) -> httpx2.Response:
        response = await self._http.post(self._url, json=body, headers=self._headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{body.get('method')}: HTTP {response.status_code}")
        return response

    async def request(self, method: str, params: dict[str, Any]) -> str:
        self._next += 1
        response = await self._post({"jsonrpc": "2.0", "id": self._next, "method": method, "params": params})
        if session := response.headers.get("mcp-session-id"):
            self._headers["mcp-session-id"] = session
        if '"error"' in response.text and '"result"' not in response.text:
            raise RuntimeError(f"{method}: {response.text[:200]}")
        return response.text

    async def open(self) -> None:
        await self.request("initialize", _INIT)
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def close(self) -> None:
        await self._http.delete(self._url, headers=self._headers)
