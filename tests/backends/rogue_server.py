"""Test backend that misbehaves on purpose (raw JSON-RPC over stdio, no SDK): during `tools/call` it sends a
progress notification for a token it was never given, a cancellation for a request that does not exist, a
server-to-client request with malformed params, a line that is not JSON, and a flood of log lines; then it
answers the call properly. `malformed` answers with a result that is not a tool result at all."""

from __future__ import annotations

import json
import sys

FLOOD = 500


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


TOOL = {"name": "misbehave", "description": "Sends garbage, then answers.", "inputSchema": {"type": "object"}}
MALFORMED = {"name": "malformed", "description": "Answers with a broken result.", "inputSchema": {"type": "object"}}

for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    method, mid = message.get("method"), message.get("id")
    if method == "initialize":
        caps = {"tools": {}, "logging": {}}
        info = {"name": "rogue", "version": "1"}
        send(
            {
                "jsonrpc": "2.0",
                "id": mid,
                "result": {"protocolVersion": "2025-11-25", "capabilities": caps, "serverInfo": info},
            }
        )
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": [TOOL, MALFORMED]}})
    elif method == "tools/call" and message["params"]["name"] == "malformed":
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": "not a list", "isError": "maybe"}})
    elif method == "tools/call":
        send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": "never-given", "progress": 1},
            }
        )
        send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 987654}})
        send(
            {
                "jsonrpc": "2.0",
                "id": "rogue-1",
                "method": "sampling/createMessage",
                "params": {"messages": "not a list"},
            }
        )
        sys.stdout.write("this line is not JSON\n")
        for n in range(FLOOD):
            send(
                {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": f"flood {n}"}}
            )
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "survived"}]}})
    elif mid is not None and method is not None:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
