"""examples/custom_auth, run as a user would: a custom strategy registered in code signs every backend request."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
from mcp import Client

from tests.conftest import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.anyio

EXAMPLE = ROOT / "examples" / "custom_auth"
SECRET = "example-shared-secret-0123"


@contextmanager
def example(script: str, *args: str, secret: str = SECRET) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / script), "--port", str(port), *args],
        cwd=EXAMPLE,
        env={**os.environ, "HMAC_SECRET": secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_signed_requests_reach_the_backend() -> None:
    with (
        example("signed_backend.py") as backend,
        example("run_master.py", "--backend", f"http://127.0.0.1:{backend}/mcp") as master,
    ):
        async with Client(f"http://127.0.0.1:{master}/mcp", mode="legacy") as client:
            result = await client.call_tool("signed__signed_hello", {"name": "ada"})
            assert result.content[0].text == "hello ada, your request was signed"  # type: ignore[union-attr]


async def test_a_wrong_secret_is_refused_by_the_backend() -> None:
    with example("signed_backend.py") as backend:
        url = f"http://127.0.0.1:{backend}/mcp"
        async with httpx2.AsyncClient() as http:
            unsigned = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert unsigned.status_code == 401
        with example("run_master.py", "--backend", url, secret="not-the-right-secret-0") as master:
            async with httpx2.AsyncClient() as http:
                ready = await http.get(f"http://127.0.0.1:{master}/readyz")
        assert ready.status_code == 503
        assert ready.json()["servers"][0]["state"] == "down"
