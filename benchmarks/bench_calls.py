"""Sequential `tools/call` throughput: direct to a backend vs. through the master, measured in one run.

    .venv/bin/python benchmarks/bench_calls.py [--calls 1000] [--rounds 3]

Scenarios (each round runs all of them, ratios are computed within the round):
  http   : SDK client -> backend over streamable HTTP      vs  client -> master (HTTP front) -> backend (HTTP)
  stdio  : SDK client -> backend as a stdio child          vs  client -> master (stdio front) -> backend (stdio)
Everything runs on loopback; the backend is tests/backends/fixture_server.py and the tool is `echo`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import ServerProcess, free_port  # noqa: E402  (the tests' process helpers)

FIXTURE = str(ROOT / "tests" / "backends" / "fixture_server.py")
MASTER = str(Path(sys.executable).with_name("master-mcp"))


@contextmanager
def process(args: list[str], port: int) -> Iterator[ServerProcess]:
    server = ServerProcess(args, port)
    try:
        yield server
    finally:
        server.stop()


async def timed_calls(target: Any, tool: str, calls: int, warmup: int) -> dict[str, float]:
    latencies: list[float] = []
    async with Client(target, mode="legacy") as client:
        for i in range(warmup):
            await client.call_tool(tool, {"text": str(i)})
        start = time.perf_counter()
        for i in range(calls):
            t0 = time.perf_counter()
            result = await client.call_tool(tool, {"text": str(i)})
            latencies.append(time.perf_counter() - t0)
            if result.is_error:
                raise RuntimeError(f"call failed: {result.content}")
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def write_config(directory: Path, server: dict[str, Any], port: int) -> Path:
    path = directory / "servers.yaml"
    path.write_text(yaml.safe_dump({"master": {"port": port, "log_level": "WARNING"}, "servers": [server]}))
    return path


async def one_round(calls: int, warmup: int, workdir: Path) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    backend_port, master_port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/mcp"
    http_config = write_config(workdir, {"id": "b", "type": "http", "url": backend_url}, master_port)
    with process([sys.executable, FIXTURE, "--http", str(backend_port)], backend_port):
        results["http direct"] = await timed_calls(backend_url, "echo", calls, warmup)
        with process([MASTER, "serve", "--config", str(http_config)], master_port):
            results["http master"] = await timed_calls(f"http://127.0.0.1:{master_port}/mcp", "b__echo", calls, warmup)

    stdio_config = write_config(
        workdir, {"id": "b", "type": "stdio", "command": sys.executable, "args": [FIXTURE]}, master_port
    )
    direct = StdioServerParameters(command=sys.executable, args=[FIXTURE])
    results["stdio direct"] = await timed_calls(direct, "echo", calls, warmup)
    through = StdioServerParameters(command=MASTER, args=["stdio", "--config", str(stdio_config)])
    results["stdio master"] = await timed_calls(through, "b__echo", calls, warmup)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(1, args.rounds + 1):
            result = anyio.run(one_round, args.calls, args.warmup, Path(tmp))
            for transport in ("http", "stdio"):
                result[f"{transport} ratio"] = {
                    "calls_per_s": result[f"{transport} master"]["calls_per_s"]
                    / result[f"{transport} direct"]["calls_per_s"]
                }
            rounds.append(result)
            print(f"round {number}: " + ", ".join(f"{k} {v['calls_per_s']:.2f}" for k, v in result.items()))

    print(f"\n{args.calls} sequential echo calls per scenario, {args.rounds} rounds (median [min..max])")
    print(f"{'scenario':<14} {'calls/s':>24} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("http direct", "http master", "stdio direct", "stdio master"):
        rates = [r[name]["calls_per_s"] for r in rounds]
        p50 = statistics.median(r[name]["p50_ms"] for r in rounds)
        p99 = statistics.median(r[name]["p99_ms"] for r in rounds)
        rate = f"{statistics.median(rates):.0f} [{min(rates):.0f}..{max(rates):.0f}]"
        print(f"{name:<14} {rate:>24} {p50:>8.2f} {p99:>8.2f}")
    for transport in ("http", "stdio"):
        ratios = [r[f"{transport} ratio"]["calls_per_s"] for r in rounds]
        spread = f"[{min(ratios):.2f}..{max(ratios):.2f}]"
        print(f"ratio master/direct ({transport}): {statistics.median(ratios):.2f}x {spread}")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
