"""The least a gateway can cost here, for scenario 1: what the master is measured against besides direct.

    python benchmarks/floor.py --port P --kind sdk [--backend-era auto] (URL | COMMAND ARG...)
    python benchmarks/floor.py --port P --kind bytes URL
    python benchmarks/floor.py --port P --kind lines COMMAND ARG...

`sdk`: a gateway that does nothing but forward `tools/list` and `tools/call` to one backend, built from the SDK
pieces any SDK-based gateway needs at the least: the low-level `Server` behind the SDK's streamable-HTTP session
manager (JSON answers, the cheaper mode), and one `ClientSession` to the backend (handshake era, over the
master's own HTTP or stdio transport), its garbage collector and HTTP server settings as the master's.
No names, no auth, no metrics, no logging, no relay. Its ratio to direct bounds what any gateway on this SDK
reaches on this machine.
`--backend-era auto` lets the backend hop negotiate 2026-07-28 where the backend offers it (the master does not,
yet): what an era-matched lane could reach at best. That hop goes over the master's transport too, which carries
2026-07-28 requests as they come (sessionless POSTs, their headers from the session's metadata).

`bytes`: a TCP relay that copies bytes between the client and an HTTP backend without reading them (no MCP, no
HTTP parsing): what one more process on the path costs by itself.

`lines`: its counterpart for a stdio backend. An HTTP/1.1 server that writes each POST body as a line to one child
process, and answers with the child's next line that carries an id (202 for a body without one): the HTTP framing
it cannot do without (bodies framed by Content-Length), no JSON parsing (the bytes `"id"` tell a request from a
notification, and an answer from anything else the child writes), no MCP. One exchange at a time, which is all
scenario 1's single session asks for, with the SDK client's compact JSON. What any gateway between an HTTP client
and a stdio backend spends at the least.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final, get_args
from urllib.parse import urlsplit

import mcp_types as types
import uvicorn
from mcp.client._probe import negotiate_auto
from mcp.client.session import ClientSession
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.routing import Route

from master_mcp import heap, runtime
from master_mcp.backends.http_wire import HttpWire
from master_mcp.backends.stdio_child import stdio_child
from master_mcp.backends.streamable import streamable_http
from master_mcp.lines import MAX_MESSAGE_BYTES
from master_mcp.tracing import spans_when_collected

_RAW = TypeAdapter(dict[str, Any])
_Request = types.Request[dict[str, Any] | None, str]


@asynccontextmanager
async def backend_session(target: list[str], era: str) -> AsyncIterator[ClientSession]:
    async with AsyncExitStack() as stack:
        read: ReadStream[SessionMessage | Exception]
        write: WriteStream[SessionMessage]
        if target[0].startswith("http"):
            wire = await stack.enter_async_context(HttpWire(target[0], headers={}, auth=None, instances=None))
            read, write = await stack.enter_async_context(
                streamable_http(wire, max_event_bytes=MAX_MESSAGE_BYTES, on_forgotten=lambda: None)
            )
        else:
            child = stdio_child(
                "backend",
                target[0],
                target[1:],
                env={},
                cwd=Path.cwd(),
                stderr=sys.stderr,
                max_line_bytes=MAX_MESSAGE_BYTES,
            )
            read, write = await stack.enter_async_context(child)
        session = await stack.enter_async_context(ClientSession(dispatcher=JSONRPCDispatcher(read, write)))
        if era == "auto":
            await negotiate_auto(session)
            if session.discover_result is None:  # it fell back to the handshake: this row would not be what it says
                raise SystemExit("the backend hop did not negotiate 2026-07-28")
        else:
            await session.initialize()
        yield session


def sdk_floor(session: ClientSession, schemas: dict[str, Any]) -> Server[Any]:
    # 2026-07-28 list results must say how long they may be cached; the master says the same. Without the input
    # schemas at hand, the SDK's server would run the tools/list handler (here: a backend round trip) on every
    # 2026-07-28 call to check its `Mcp-Param-*` headers; the master hands it its catalog's, as this does.
    hints = dict.fromkeys(get_args(CacheableMethod), CacheHint(ttl_ms=0, scope="private"))
    server: Server[Any] = Server("floor", cache_hints=hints, get_tool_input_schema=schemas.get)
    spans_when_collected(server)  # as the master does: the SDK's spans only where a tracer provider collects them

    async def forward(ctx: Any, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        result = await session.send_request(_Request(method=method, params=params), _RAW)  # type: ignore[type-var]
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            result["resultType"] = "complete"
        return result

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams) -> dict[str, Any]:
        return await forward(ctx, "tools/list", None)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
        return await forward(ctx, "tools/call", {"name": params.name, "arguments": params.arguments or {}})

    server.add_request_handler("tools/list", types.PaginatedRequestParams, list_tools)
    server.add_request_handler("tools/call", types.CallToolRequestParams, call_tool)
    return server


async def serve_sdk(port: int, target: list[str], era: str) -> None:
    async with backend_session(target, era) as session:
        listed = await session.send_request(_Request(method="tools/list", params=None), _RAW)  # type: ignore[type-var]
        schemas = {tool["name"]: tool.get("inputSchema") for tool in listed.get("tools", [])}
        manager = StreamableHTTPSessionManager(app=sdk_floor(session, schemas), json_response=True)
        app = Starlette(routes=[Route("/mcp", endpoint=StreamableHTTPASGIApp(manager))])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, **runtime.UVICORN)
        async with manager.run():
            heap.settle()  # the master's collector settings: the floor must not pay what the master does not
            await uvicorn.Server(config).serve()


async def serve_bytes(port: int, url: str) -> None:
    parts = urlsplit(url)
    host, backend_port = parts.hostname or "127.0.0.1", parts.port or 80

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend_reader, backend_writer = await asyncio.open_connection(host, backend_port)
        await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


_NOT_ALLOWED: Final = b"HTTP/1.1 405 Method Not Allowed\r\nallow: POST\r\ncontent-length: 0\r\n\r\n"
_ACCEPTED: Final = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
_ANSWER: Final = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


async def serve_lines(port: int, command: list[str]) -> None:
    child = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_MESSAGE_BYTES
    )
    assert child.stdin is not None and child.stdout is not None
    to_child, from_child = child.stdin, child.stdout
    turn = asyncio.Lock()

    async def exchange(body: bytes) -> bytes | None:
        async with turn:
            to_child.write(body + b"\n")
            if b'"id"' not in body:  # a notification: nothing comes back
                return None
            while b'"id"' not in (line := await from_child.readline()):
                if not line:
                    raise ConnectionError("the backend closed its stdout")
            return line.rstrip(b"\n")

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if not lines[0].startswith(b"POST "):
                    writer.write(_NOT_ALLOWED)
                elif (answer := await exchange(body)) is None:
                    writer.write(_ACCEPTED)
                else:
                    writer.write(_ANSWER % len(answer) + answer)
        writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("sdk", "bytes", "lines"), required=True)
    parser.add_argument("--backend-era", choices=("handshake", "auto"), default="handshake")
    parser.add_argument("target", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.kind == "sdk":
        asyncio.run(serve_sdk(args.port, args.target, args.backend_era))
    elif args.kind == "lines":
        asyncio.run(serve_lines(args.port, args.target))
    else:
        asyncio.run(serve_bytes(args.port, args.target[0]))


if __name__ == "__main__":
    main()
