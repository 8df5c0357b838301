"""The backend for the official conformance suite's server scenarios: the fixtures those scenarios call (tools
`test_*`, resources `test://...`, prompts `test_*`, completion, logging, subscriptions), written on the SDK's
low-level server so every listed field is exactly what the scenarios look for.

    python conformance_server.py                 # stdio
    python conformance_server.py --http PORT     # streamable HTTP at 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

import anyio
import mcp_types as types
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
AUDIO = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
EMPTY = {"type": "object", "properties": {}}
SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


def tool(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": schema or EMPTY}


def text_arg(name: str, description: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": "string", "description": description}}, "required": [name]}


TOOLS = [
    tool("test_simple_text", "Tests simple text content response"),
    tool("test_image_content", "Tests image content response"),
    tool("test_audio_content", "Tests audio content response"),
    tool("test_embedded_resource", "Tests embedded resource content response"),
    tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)"),
    tool("test_tool_with_logging", "Tests tool that emits log messages during execution"),
    tool("test_tool_with_progress", "Tests tool that reports progress notifications"),
    tool("test_error_handling", "Tests error response handling"),
    tool("test_sampling", "Tests server-initiated sampling", text_arg("prompt", "The prompt to send to the LLM")),
    tool("test_elicitation", "Tests server-initiated elicitation", text_arg("message", "The message to show the user")),
    tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034"),
    tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330"),
    tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features (SEP-1613)", SCHEMA_2020_12),
    tool("test_reconnection", "Closes the SSE stream mid-call; the result arrives after the client reconnects"),
]

SEP1034 = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}
SEP1330 = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": f"value{i}", "title": t}
                for i, t in enumerate(["First Option", "Second Option", "Third Option"], 1)
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": f"value{i}", "title": t}
                    for i, t in enumerate(["First Choice", "Second Choice", "Third Choice"], 1)
                ]
            },
        },
    },
    "required": [],
}

RESOURCES = [
    {
        "name": "static-text",
        "uri": "test://static-text",
        "title": "Static Text Resource",
        "description": "A static text resource for testing",
        "mimeType": "text/plain",
    },
    {
        "name": "static-binary",
        "uri": "test://static-binary",
        "title": "Static Binary Resource",
        "description": "A static binary resource (image) for testing",
        "mimeType": "image/png",
    },
    {
        "name": "watched-resource",
        "uri": "test://watched-resource",
        "title": "Watched Resource",
        "description": "A resource that can change",
        "mimeType": "text/plain",
    },
]
TEMPLATES = [
    {
        "name": "template",
        "uriTemplate": "test://template/{id}/data",
        "title": "Resource Template",
        "description": "A resource template with parameter substitution",
        "mimeType": "application/json",
    }
]
PROMPTS = [
    {"name": "test_simple_prompt", "title": "Simple Test Prompt", "description": "A simple prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "title": "Prompt With Arguments",
        "description": "A prompt with required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "title": "Prompt With Embedded Resource",
        "description": "A prompt that includes an embedded resource",
        "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": True}],
    },
    {
        "name": "test_prompt_with_image",
        "title": "Prompt With Image",
        "description": "A prompt that includes image content",
    },
]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def related(ctx: Any) -> ServerMessageMetadata:
    return ServerMessageMetadata(related_request_id=ctx.request_id)


async def log(ctx: Any, message: str) -> None:
    params = types.LoggingMessageNotificationParams(level="info", data=message)
    await ctx.session.send_notification(
        types.LoggingMessageNotification(params=params), related_request_id=ctx.request_id
    )


async def elicit(ctx: Any, message: str, schema: dict[str, Any]) -> str:
    params = types.ElicitRequestFormParams(mode="form", message=message, requested_schema=schema)
    try:
        result = await ctx.session.send_request(
            types.ElicitRequest(params=params), types.ElicitResult, metadata=related(ctx)
        )
    except Exception as exc:
        return f"Elicitation not supported or error: {exc}"
    return f"action={result.action}, content={json.dumps(result.content or {})}"


async def list_tools(ctx: Any, params: Any) -> dict[str, Any]:
    return {"tools": TOOLS}


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
    args = params.arguments or {}
    name = params.name
    if name == "test_simple_text":
        return {"content": [text("This is a simple text response for testing.")]}
    if name == "test_image_content":
        return {"content": [{"type": "image", "data": IMAGE, "mimeType": "image/png"}]}
    if name == "test_audio_content":
        return {"content": [{"type": "audio", "data": AUDIO, "mimeType": "audio/wav"}]}
    if name == "test_embedded_resource":
        resource = {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }
        return {"content": [{"type": "resource", "resource": resource}]}
    if name == "test_multiple_content_types":
        resource = {
            "uri": "test://mixed-content-resource",
            "mimeType": "application/json",
            "text": json.dumps({"test": "data", "value": 123}),
        }
        return {
            "content": [
                text("Multiple content types test:"),
                {"type": "image", "data": IMAGE, "mimeType": "image/png"},
                {"type": "resource", "resource": resource},
            ]
        }
    if name == "test_tool_with_logging":
        for line in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await log(ctx, line)
            await anyio.sleep(0.05)
        return {"content": [text("Tool with logging executed successfully")]}
    if name == "test_tool_with_progress":
        for step in (0, 50, 100):
            await ctx.session.report_progress(step, 100, f"Completed step {step} of 100")
            await anyio.sleep(0.05)
        token = (ctx.meta or {}).get("progress_token", 0) if ctx.meta else 0
        return {"content": [text(str(token))]}
    if name == "test_error_handling":
        return {"content": [text("This tool intentionally returns an error for testing")], "isError": True}
    if name == "test_sampling":
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=str(args.get("prompt", "")))
        )
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=100)
        )
        try:
            result = await ctx.session.send_request(request, types.CreateMessageResult, metadata=related(ctx))
            answer = result.content.text if isinstance(result.content, types.TextContent) else "No response"
        except Exception as exc:
            return {"content": [text(f"Sampling not supported or error: {exc}")]}
        return {"content": [text(f"LLM response: {answer}")]}
    if name == "test_elicitation":
        schema = text_arg("response", "User's response")
        return {"content": [text("User response: " + await elicit(ctx, str(args.get("message", "")), schema))]}
    if name == "test_elicitation_sep1034_defaults":
        answer = await elicit(ctx, "Please review and update the form fields with defaults", SEP1034)
        return {"content": [text(f"Elicitation completed: {answer}")]}
    if name == "test_elicitation_sep1330_enums":
        answer = await elicit(ctx, "Please select options from the enum fields", SEP1330)
        return {"content": [text(f"Elicitation completed: {answer}")]}
    if name == "test_reconnection":
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
        await anyio.sleep(0.1)
        return {"content": [text("Reconnection test completed successfully.")]}
    if name == "json_schema_2020_12_tool":
        return {"content": [text(f"JSON Schema 2020-12 tool called with: {json.dumps(args)}")]}
    return {"content": [text(f"Unknown tool: {name}")], "isError": True}


async def list_resources(ctx: Any, params: Any) -> dict[str, Any]:
    return {"resources": RESOURCES}


async def list_templates(ctx: Any, params: Any) -> dict[str, Any]:
    return {"resourceTemplates": TEMPLATES}


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> dict[str, Any]:
    uri = str(params.uri)
    if uri == "test://static-text":
        return {
            "contents": [
                {"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."}
            ]
        }
    if uri == "test://static-binary":
        return {"contents": [{"uri": uri, "mimeType": "image/png", "blob": IMAGE}]}
    if uri == "test://watched-resource":
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "Watched resource content"}]}
    if uri.startswith("test://template/") and uri.endswith("/data"):
        item = uri.removeprefix("test://template/").removesuffix("/data")
        body = json.dumps({"id": item, "templateTest": True, "data": f"Data for ID: {item}"})
        return {"contents": [{"uri": uri, "mimeType": "application/json", "text": body}]}
    from mcp.shared.exceptions import MCPError

    raise MCPError(types.INVALID_PARAMS, f"Resource not found: {uri}")


async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> dict[str, Any]:
    await log(ctx, f"Subscribed to resource: {params.uri}")
    return {}


async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
    await log(ctx, f"Unsubscribed from resource: {params.uri}")
    return {}


async def list_prompts(ctx: Any, params: Any) -> dict[str, Any]:
    return {"prompts": PROMPTS}


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> dict[str, Any]:
    args = params.arguments or {}
    if params.name == "test_simple_prompt":
        return {"messages": [{"role": "user", "content": text("This is a simple prompt for testing.")}]}
    if params.name == "test_prompt_with_arguments":
        message = f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"
        return {"messages": [{"role": "user", "content": text(message)}]}
    if params.name == "test_prompt_with_embedded_resource":
        resource = {
            "uri": args.get("resourceUri", ""),
            "mimeType": "text/plain",
            "text": "Embedded resource content for testing.",
        }
        return {
            "messages": [
                {"role": "user", "content": {"type": "resource", "resource": resource}},
                {"role": "user", "content": text("Please process the embedded resource above.")},
            ]
        }
    if params.name == "test_prompt_with_image":
        return {
            "messages": [
                {"role": "user", "content": {"type": "image", "data": IMAGE, "mimeType": "image/png"}},
                {"role": "user", "content": text("Please analyze the image above.")},
            ]
        }
    from mcp.shared.exceptions import MCPError

    raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> dict[str, Any]:
    await log(ctx, f"Log level set to: {params.level}")
    return {}


async def complete(ctx: Any, params: types.CompleteRequestParams) -> dict[str, Any]:
    return {"completion": {"values": [], "total": 0, "hasMore": False}}


def complete_for_2026(handler: Any) -> Any:
    """2026-07-28 results must say they are complete; the same handlers serve both eras."""

    async def wrapped(ctx: Any, params: Any) -> Any:
        result = await handler(ctx, params)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and isinstance(result, dict):
            result.setdefault("resultType", "complete")
        return result

    return wrapped


def build() -> Server[Any]:
    hints = dict.fromkeys(get_args(CacheableMethod), CacheHint(ttl_ms=0, scope="private"))
    server: Server[Any] = Server("mcp-conformance-test-server", version="1.0.0", cache_hints=hints)
    handlers: list[tuple[str, Any, Any]] = [
        ("tools/list", types.PaginatedRequestParams, list_tools),
        ("tools/call", types.CallToolRequestParams, call_tool),
        ("resources/list", types.PaginatedRequestParams, list_resources),
        ("resources/templates/list", types.PaginatedRequestParams, list_templates),
        ("resources/read", types.ReadResourceRequestParams, read_resource),
        ("resources/subscribe", types.SubscribeRequestParams, subscribe),
        ("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe),
        ("prompts/list", types.PaginatedRequestParams, list_prompts),
        ("prompts/get", types.GetPromptRequestParams, get_prompt),
        ("logging/setLevel", types.SetLevelRequestParams, set_level),
        ("completion/complete", types.CompleteRequestParams, complete),
    ]
    for method, params_type, handler in handlers:
        server.add_request_handler(method, params_type, complete_for_2026(handler))
    return server


async def main(port: int) -> None:
    server = build()
    changes = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
    if not port:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options(changes))
        return
    import uvicorn
    from event_store import MemoryEventStore

    app = server.streamable_http_app(event_store=MemoryEventStore(), retry_interval=500)
    await uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=0)
    anyio.run(main, parser.parse_args().http)
