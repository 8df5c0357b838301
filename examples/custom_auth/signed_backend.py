"""The backend of the example: an MCP server over streamable HTTP that refuses any request not signed with
the shared secret (`HMAC_SECRET`). Run: HMAC_SECRET=... python signed_backend.py --port 4200"""

from __future__ import annotations

import argparse
import hmac
import os
import time
from typing import Any

import uvicorn
from hmac_auth import signature
from mcp.server.mcpserver import MCPServer
from starlette.responses import JSONResponse

mcp = MCPServer("signed", log_level="WARNING")


@mcp.tool(description="Report that the request was signed correctly.")
def signed_hello(name: str) -> str:
    return f"hello {name}, your request was signed"


class RequireSignature:
    def __init__(self, app: Any, secret: bytes) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        timestamp = headers.get("x-signature-timestamp", "0")
        expected = signature(self.secret, timestamp, scope["method"], scope["raw_path"].decode(), body)
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        if not fresh or not hmac.compare_digest(expected, headers.get("x-signature", "")):
            await JSONResponse({"error": "bad signature"}, status_code=401)(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args()
    app = RequireSignature(mcp.streamable_http_app(), os.environ["HMAC_SECRET"].encode())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
