"""Test backend: one MCPServer with everything the master must relay, over stdio, `--http PORT` or `--sse PORT`.

`--name` changes the server name, `--extra-tools N` adds N trivial tools. The `request_counts` tool reports
how many requests of each method this process has served, so tests can see what the master sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    Completion,
    EmbeddedResource,
    InputRequiredResult,
    ResourceLink,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import Field

parser = argparse.ArgumentParser()
parser.add_argument("--name", default="fixture")
parser.add_argument("--http", type=int, default=0)
parser.add_argument("--sse", type=int, default=0)
parser.add_argument("--stateless", action="store_true", help="streamable HTTP without sessions")
parser.add_argument("--extra-tools", type=int, default=0)
parser.add_argument("--print-env", help="write this environment variable's value to stderr at start (leak test)")
ARGS = parser.parse_args()
if ARGS.print_env:
    print(f"starting with {ARGS.print_env}={os.environ.get(ARGS.print_env)}", file=sys.stderr, flush=True)

COUNTS: Counter[str] = Counter()


async def count_requests(ctx: Any, call_next: Any) -> Any:
    if ctx.request_id is not None:
        COUNTS[ctx.method] += 1
    result = await call_next(ctx)
    caps = ctx.session.client_capabilities
    if ctx.method == "notifications/initialized" and caps is not None and caps.sampling is not None:
        # A tool only for clients that can sample, as some servers register them after initialize.
        if mcp._tool_manager.get_tool("summarize_with_llm") is None:
            mcp.add_tool(_make_extra(0), name="summarize_with_llm", description="Needs sampling.")
            await ctx.session.send_tool_list_changed()
    return result


mcp = MCPServer(ARGS.name, log_level="WARNING", middleware=[count_requests])


LOG_LEVEL = {"level": "info"}


async def set_level(ctx: Any, params: SetLevelRequestParams) -> dict[str, Any]:
    LOG_LEVEL["level"] = params.level
    return {}


async def subscribe(ctx: Any, params: SubscribeRequestParams) -> dict[str, Any]:
    COUNTS[f"subscribe {params.uri}"] += 1
    return {}


async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> dict[str, Any]:
    COUNTS[f"unsubscribe {params.uri}"] += 1
    return {}


# MCPServer has no public hook for the (deprecated) logging and subscription capabilities; the low-level
# server does.
mcp._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
mcp._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
mcp._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


@mcp.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@mcp.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool(description="Same name as a tool of other fixture servers.")
def search(query: str) -> str:
    return f"{ARGS.name}:{query}"


@mcp.tool(description="Fail on purpose.")
def fail(reason: str = "requested") -> str:
    raise ToolError(f"failed: {reason}")


@mcp.tool(description="Sleep, then answer.")
async def slow(seconds: float) -> str:
    COUNTS["sleeping"] += 1  # a client waits for this before it cancels: the cancel must find the call here
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        COUNTS["cancelled"] += 1
        raise
    return f"slept {seconds}"


@mcp.tool(description="Ask the client's model (sampling/createMessage) and return its answer.")
async def ask_llm(prompt: str, ctx: Context) -> str:
    result = await ctx.request_context.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=50,
        related_request_id=ctx.request_id,
    )
    content = result.content
    return content.text if isinstance(content, TextContent) else str(content)


@mcp.tool(description="Ask the user (form elicitation) for their name.")
async def ask_user(ctx: Context) -> str:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    result = await ctx.request_context.session.elicit_form(
        "What is your name?", schema, related_request_id=ctx.request_id
    )
    return json.dumps({"action": result.action, "content": result.content})


@mcp.tool(description="The client's roots (roots/list).")
async def client_roots(ctx: Context) -> str:
    result = await ctx.request_context.session.list_roots()
    return json.dumps([str(root.uri) for root in result.roots])


@mcp.tool(description="The capabilities the client of this session declared.")
def client_capabilities(ctx: Context) -> str:
    caps = ctx.request_context.session.client_capabilities
    return json.dumps(caps.model_dump(exclude_none=True) if caps else {})


@mcp.tool(description="Register a new tool now, and announce it with tools/list_changed.")
async def add_tool_later(name: str, ctx: Context) -> str:
    mcp.add_tool(_make_extra(len(name)), name=name, description="Added after initialize.")
    # Both eras, as the SDK asks of a server: this session (handshake era), and every `subscriptions/listen` stream.
    await ctx.request_context.session.send_tool_list_changed()
    await ctx.notify_tools_changed()
    return f"added {name}"


@mcp.tool(description="Announce that a resource changed (notifications/resources/updated).")
async def touch_resource(uri: str, ctx: Context) -> str:
    await ctx.request_context.session.send_resource_updated(uri)
    await ctx.notify_resource_updated(uri)
    return f"touched {uri}"


@mcp.tool(description="Log one line at each of debug, info and warning, then answer.")
async def log_lines(tag: str, ctx: Context) -> str:
    levels = ("debug", "info", "warning")
    # As the spec asks of a server: nothing below the level the client set (per process, which is per session
    # over stdio).
    for level in levels[levels.index(LOG_LEVEL["level"]) if LOG_LEVEL["level"] in levels else 0 :]:
        await ctx.request_context.session.send_log_message(
            level, f"{tag}:{level}", logger="fixture", related_request_id=ctx.request_id
        )
    return f"logged {tag}"


@mcp.tool(description="Report progress three times, `pause` seconds apart.")
async def progress(ctx: Context, pause: float = 0) -> str:
    for step in range(1, 4):
        if step > 1:
            await anyio.sleep(pause)
        await ctx.report_progress(step, 3, f"step {step}")
    return "done"


@mcp.tool(description="Return a resource link and an embedded resource.")
def links() -> list[Any]:
    return [
        ResourceLink(type="resource_link", uri="fixture://static", name="static"),
        EmbeddedResource(type="resource", resource=TextResourceContents(uri="fixture://item/7", text="item 7")),
    ]


@mcp.tool(description="Show the _meta this backend received.")
def show_meta(ctx: Context) -> str:
    meta = ctx.request_context.meta
    return json.dumps(dict(meta) if meta else {}, sort_keys=True, default=str)


@mcp.tool(description="The Mcp-Param-Region header this call arrived with (2026-07-28 mirrors `region` in it).")
def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], ctx: Context) -> str:
    return (ctx.headers or {}).get("mcp-param-region") or "none"


@mcp.tool(description="2026-07-28: answer the first round with an input-required result, the second for real.")
def two_rounds(ctx: Context) -> InputRequiredResult | str:
    if ctx.request_state is None:
        return InputRequiredResult(request_state="round-1")
    return f"second round after {ctx.request_state}"


@mcp.tool(description="The Authorization header this call arrived with (HTTP transports).")
def authorization_seen(ctx: Context) -> str:
    headers = ctx.headers or {}
    return headers.get("authorization") or "none"


@mcp.tool(description="How many requests of each method this backend has served.")
def request_counts() -> str:
    return json.dumps(COUNTS, sort_keys=True)


@mcp.tool(description="Exit the process at once (a crash).")
def crash() -> str:
    sys.stdout.flush()
    import os

    os._exit(3)


def _make_extra(index: int) -> Any:
    def extra(value: int = 0) -> str:
        return f"extra {index}: {value}"

    return extra


for number in range(ARGS.extra_tools):
    mcp.add_tool(_make_extra(number), name=f"extra_{number}", description=f"Extra tool {number}.")


@mcp.resource("fixture://static", description="A static resource.")
def static() -> str:
    return f"static text from {ARGS.name}"


@mcp.resource("fixture://item/{item_id}", description="A templated resource.")
def item(item_id: str) -> str:
    return f"item {item_id} from {ARGS.name}"


@mcp.prompt(description="A prompt with an argument.")
def greet(name: str) -> str:
    return f"Hello, {name}! (from {ARGS.name})"


@mcp.completion()
async def complete(ref: Any, argument: Any, context: Any) -> Completion:
    options = ["alice", "albert", "bob"] if argument.name == "name" else ["1", "2", "7"]
    return Completion(values=[o for o in options if o.startswith(argument.value)])


if __name__ == "__main__":
    if ARGS.http:
        mcp.run("streamable-http", host="127.0.0.1", port=ARGS.http, stateless_http=ARGS.stateless)
    elif ARGS.sse:
        mcp.run("sse", host="127.0.0.1", port=ARGS.sse)
    else:
        mcp.run()
