"""Test backend: a raw Starlette app speaking just enough streamable HTTP to be connected to (initialize and
tools/list are correct), which misbehaves on `tools/call`, chosen by the tool's name:

- `echo`: a proper answer on an SSE stream, as the SDK's servers send it;
- `http_500`: HTTP 500 with a plain-text body;
- `bad_json`: HTTP 200, `application/json`, a body that is not JSON;
- `cut_stream`: an SSE stream that starts, then the connection is closed mid-event;
- `cut_json`: HTTP 200, `application/json`, a body that ends before its `content-length` as the connection closes;
- `hang`: never answers (until the client goes away);
- `slow`: answers properly after `seconds`;
- `big`: `size` bytes of text (tests/backends/faulty_stdio.py's `pattern`) in one SSE event.

Its one resource, `faulty://flaky`, is read with every other read cut short as `cut_json` is (the first, third, ...).

Run: `faulty_http.py --port PORT` (serves http://127.0.0.1:PORT/mcp).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import uvicorn
from faulty_stdio import pattern  # beside this script, which is on sys.path when it runs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

SESSION = "faulty-http-session"
NAMES = ["echo", "http_500", "bad_json", "cut_stream", "cut_json", "hang", "slow", "big"]
FLAKY = "faulty://flaky"
reads = 0
TOOLS = [{"name": name, "description": f"Misbehaves: {name}.", "inputSchema": {"type": "object"}} for name in NAMES]


class ConnectionCut(Exception):
    """Raised inside a streaming body: uvicorn then drops the connection without finishing the response."""


def event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


def answer(mid: Any, result: dict[str, Any], **headers: str) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": mid, "result": result}, headers=headers)


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


async def stream(*chunks: bytes, cut: bool = False) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if cut:
        await anyio.sleep(0.05)  # let the first bytes leave, so the cut is really mid-stream
        raise ConnectionCut


def sse(*chunks: bytes, cut: bool = False) -> Response:
    return StreamingResponse(stream(*chunks, cut=cut), media_type="text/event-stream")


def cut_json(mid: Any) -> Response:
    whole = json.dumps({"jsonrpc": "2.0", "id": mid, "result": text_result("never complete")}).encode()
    headers = {"content-length": str(len(whole))}
    return StreamingResponse(stream(whole[:20], cut=True), media_type="application/json", headers=headers)


async def call(mid: Any, name: str, arguments: dict[str, Any]) -> Response:
    if name == "echo":
        return sse(event({"jsonrpc": "2.0", "id": mid, "result": text_result(str(arguments.get("text", "")))}))
    if name == "http_500":
        return PlainTextResponse("Internal Server Error", status_code=500)
    if name == "bad_json":
        return Response(b'{"jsonrpc": "2.0", "id": %d, "result": {"content": [' % mid, media_type="application/json")
    if name == "cut_json":
        return cut_json(mid)
    if name == "cut_stream":
        progress = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
        half = event({"jsonrpc": "2.0", "id": mid, "result": text_result("never complete")})[:40]
        return sse(event(progress), half, cut=True)
    if name == "hang":
        await anyio.sleep_forever()
    if name == "slow":
        await anyio.sleep(float(arguments.get("seconds", 1)))
        return sse(event({"jsonrpc": "2.0", "id": mid, "result": text_result("slow done")}))
    if name == "big":
        size = arguments.get("size", 0)
        return sse(event({"jsonrpc": "2.0", "id": mid, "result": text_result(pattern(int(size)))}))
    return answer(mid, {**text_result(f"unknown tool {name}"), "isError": True})


async def mcp(request: Request) -> Response:
    if request.method == "GET":
        return Response(status_code=405)  # no standalone stream
    if request.method == "DELETE":
        return Response(status_code=200)
    message = json.loads(await request.body())
    method, mid, params = message.get("method"), message.get("id"), message.get("params") or {}
    if mid is None or method is None:
        return Response(status_code=202)
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "faulty-http", "version": "1"},
        }
        return answer(mid, result, **{"mcp-session-id": SESSION})
    if method == "tools/list":
        return answer(mid, {"tools": TOOLS})
    if method == "resources/list":
        return answer(mid, {"resources": [{"uri": FLAKY, "name": "flaky"}]})
    if method == "resources/read":
        global reads
        reads += 1
        if reads % 2:
            return cut_json(mid)
        return answer(mid, {"contents": [{"uri": FLAKY, "text": f"read {reads}"}]})
    if method == "tools/call":
        return await call(mid, str(params.get("name")), params.get("arguments") or {})
    return answer(mid, {})


app = Starlette(routes=[Route("/mcp", mcp, methods=["GET", "POST", "DELETE"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    # A `hang` request never ends by itself: do not let it hold up the shutdown.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="critical", timeout_graceful_shutdown=1)
