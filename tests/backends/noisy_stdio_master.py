"""`master-mcp stdio` with code in the master that prints to stdout and reads stdin on every forwarded call, as a
custom auth strategy or a library might: none of it may reach, or take from, the client's wire.

    python noisy_stdio_master.py CONFIG
"""

from __future__ import annotations

import os
import sys
from typing import Any

from master_mcp import cli, server

_forward = server.MasterServer._forward


async def _noisy(self: server.MasterServer, *args: Any, **kwargs: Any) -> Any:
    print("a stray print", flush=True)
    os.write(1, b"a stray write\n")
    taken = os.read(0, 100)  # the null device: nothing, at once
    print(f"read {len(taken)} bytes from stdin", file=sys.stderr, flush=True)
    return await _forward(self, *args, **kwargs)


server.MasterServer._forward = _noisy  # type: ignore[method-assign]
sys.exit(cli.main(["stdio", "--config", sys.argv[1]]))
