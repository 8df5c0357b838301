"""The benchmark's backend: an `echo` tool and `--tools N` trivial ones, over stdio or streamable HTTP.

Over HTTP it also answers RFC 8693 token exchanges at `/token` (any subject token becomes a bearer token of its
own), so the memory scenario can give each principal a per-user backend session through `token_exchange`.

python benchmarks/backend.py [--http PORT] [--tools N] [--name NAME]
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

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


async def exchange(request: Request) -> JSONResponse:
    form = await request.form()
    subject = str(form.get("subject_token", ""))
    token = "exchanged-" + hashlib.sha256(subject.encode()).hexdigest()[:24]
    issued = "urn:ietf:params:oauth:token-type:access_token"
    body = {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "issued_token_type": issued}
    return JSONResponse(body)


mcp.custom_route("/token", methods=["POST"])(exchange)  # called, not applied as a decorator: it is untyped


if __name__ == "__main__":
    if ARGS.http:
        mcp.run("streamable-http", host="127.0.0.1", port=ARGS.http)
    else:
        mcp.run()
