"""How the master's HTTP front is served: its HTTP parser and how long it keeps an idle connection.

`UVICORN` is for `master-mcp serve`, `mcp run` and anyone embedding `create_app` in their own uvicorn.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# A client reuses an idle connection until its own pool lets it go: after 5 s for httpx and the SDK's client, 15 s
# for aiohttp, 90 s for Go, often 60 s for a load balancer in front. A server that closes first can close it under
# a request the client has just sent, which then fails: uvicorn's default of 5 s meets the SDK client's 5 s exactly,
# and an SDK client whose session was idle that long died of the lost POST (2 of 32 clients idle 4.95 s). 120 s
# outlasts the clients named here, so with them the closing is left to the client.
KEEP_ALIVE_S = 120

UVICORN: Mapping[str, Any] = MappingProxyType(
    {
        # asyncio, not uvicorn's "auto": with uvloop installed, stdio children would get sockets for stdin and
        # stdout instead of pipes (`> /dev/stdout` fails in a wrapper script) and inherit the master's open
        # descriptors (uvloop does not close them), to save 0.1-0.3 ms of CPU per call (docs/benchmarks.md).
        "loop": "asyncio",
        # httptools (a dependency) parses HTTP in C where h11 does it in Python: 2,841 -> 2,343 Python calls per
        # forwarded call
        "http": "httptools",
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
)
