"""FastMCP's proxy in front of one backend, serving streamable HTTP; run by the interpreter of its own venv.

    python benchmarks/peer_fastmcp.py --port P [--shared] (URL | COMMAND ARG...)

Default mode is `create_proxy(target)`: FastMCP builds a new backend client for each request. `--shared` hands it
one connected client, which it then reuses for every request (its fastest mode, documented as such).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp.server import create_proxy

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--shared", action="store_true")
parser.add_argument("target", nargs="+")
ARGS = parser.parse_args()


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    first, *rest = ARGS.target
    target = first if first.startswith("http") else StdioTransport(command=first, args=rest)
    serve = {"transport": "http", "host": "127.0.0.1", "port": ARGS.port, "show_banner": False, "log_level": "warning"}
    if ARGS.shared:
        async with Client(target) as client:
            await create_proxy(client).run_async(**serve)
    else:
        await create_proxy(target).run_async(**serve)


asyncio.run(main())
