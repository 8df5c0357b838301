"""The benchmark's backend: an `echo` tool and `--tools N` trivial ones, over stdio or streamable HTTP.

python benchmarks/backend.py [--http PORT] [--tools N] [--name NAME]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from mcp.server.mcpserver import MCPServer

parser = argparse.ArgumentParser()
parser.add_argument("--http", type=int, default=0, help="serve streamable HTTP on this loopback port (else stdio)")
parser.add_argument("--tools", type=int, default=0, help="this many extra trivial tools (tool_0000, ...)")
parser.add_argument("--name", default="bench")
ARGS = parser.parse_args()

mcp = MCPServer(ARGS.name, log_level="WARNING")


@mcp.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


def _trivial(index: int) -> Callable[[int], str]:
    def tool(value: int = 0) -> str:
        return f"{index}:{value}"

    return tool


for number in range(ARGS.tools):
    mcp.add_tool(_trivial(number), name=f"tool_{number:04d}", description=f"Trivial tool number {number}.")

if __name__ == "__main__":
    if ARGS.http:
        mcp.run("streamable-http", host="127.0.0.1", port=ARGS.http)
    else:
        mcp.run()
