"""Test backend that fails in the ways a stdio child can (raw JSON-RPC over stdio, no SDK, so nothing tidies it up).

Tools: `echo` answers; `hang` is never answered (the process goes on serving other requests); `big` answers with
`size` bytes of text (`pattern(size)`, so a test can check what arrived); `logged` sends a log line with `text`
and its answer in one write, so that the master reads both at once. Flags: `--garbage` prints lines that are not
JSON-RPC on stdout at start-up and around every answer; `--exit-at-start CODE` exits before reading anything,
saying why on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

GARBAGE = [
    "Starting faulty server v1.0 ... ok",
    "{not json at all",
    '{"jsonrpc": "2.0", "result": "a response without an id"}',
    '{"jsonrpc": "2.0", "id": 424242, "result": {}}',
    "\x1b[31mcolourful banner\x1b[0m",
    "[1, 2, 3]",
    "",
]

TOOLS = [
    {"name": "echo", "description": "Echo the text back.", "inputSchema": {"type": "object"}},
    {"name": "hang", "description": "Never answers.", "inputSchema": {"type": "object"}},
    {"name": "big", "description": "Answer with `size` bytes of text.", "inputSchema": {"type": "object"}},
    {"name": "logged", "description": "Log `text`, then answer.", "inputSchema": {"type": "object"}},
]


def pattern(size: int) -> str:
    """`size` characters of ASCII text that is not one repeated byte (so truncation or reordering would show)."""
    unit = "".join(f"{n:07d}\n" for n in range(1000))  # 8000 characters
    return (unit * (size // len(unit) + 1))[:size]


def send(message: dict[str, object], garbage: bool, before: dict[str, object] | None = None) -> None:
    if garbage:
        sys.stdout.write("\n".join(GARBAGE) + "\n")
    sys.stdout.write((json.dumps(before) + "\n" if before else "") + json.dumps(message) + "\n")
    if garbage:
        sys.stdout.write("after the answer: still not JSON\n")
    sys.stdout.flush()


def call(name: str, arguments: dict[str, object]) -> dict[str, object] | None:
    if name == "echo":
        return {"content": [{"type": "text", "text": str(arguments.get("text", ""))}]}
    if name == "big":
        size = arguments.get("size", 0)
        return {"content": [{"type": "text", "text": pattern(size if isinstance(size, int) else 0)}]}
    if name == "hang":
        return None
    if name == "logged":
        return {"content": [{"type": "text", "text": "logged"}]}
    return {"content": [{"type": "text", "text": f"unknown tool {name}"}], "isError": True}


def serve(garbage: bool) -> None:
    if garbage:
        sys.stdout.write("\n".join(GARBAGE) + "\n")
        sys.stdout.flush()
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        method, mid, params = message.get("method"), message.get("id"), message.get("params") or {}
        if mid is None or method is None:
            continue  # a notification (or a client's answer): nothing to say
        if method == "initialize":
            version = params.get("protocolVersion", "2025-11-25")
            info = {"name": "faulty", "version": "1"}
            result: dict[str, object] | None = {
                "protocolVersion": version,
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": info,
            }
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif method == "tools/call":
            result = call(str(params.get("name")), params.get("arguments") or {})
        else:
            result = {}
        log = None
        if method == "tools/call" and params.get("name") == "logged":
            text = (params.get("arguments") or {}).get("text", "")
            log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": text}}
        if result is not None:
            send({"jsonrpc": "2.0", "id": mid, "result": result}, garbage, log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--exit-at-start", type=int)
    parser.add_argument("--slow-start", type=float, help="seconds to wait before reading stdin (a slow import)")
    parser.add_argument("--launches", help="a file that gets one line each time this server is launched")
    args = parser.parse_args()
    if args.launches:
        with open(args.launches, "a") as launches:
            launches.write("launched\n")
    if args.slow_start:
        import time

        time.sleep(args.slow_start)
    if args.exit_at_start is not None:
        print("faulty: cannot start: no such database", file=sys.stderr, flush=True)
        sys.exit(args.exit_at_start)
    serve(args.garbage)
