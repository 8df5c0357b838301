"""Shaping what crosses the master: the front hop's `_meta` stays behind, backend URIs become front URIs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

Json = dict[str, Any]
UriMap = Callable[[str], str]

# `_meta` keys that belong to the hop between the client and the master (the 2026-07-28 envelope, and the
# progress token, which the master re-issues on its own hop).
_FRONT_HOP_PREFIX = "io.modelcontextprotocol/"
_FRONT_HOP_KEYS = frozenset({"progressToken"})


MAX_DEPTH = 100
_CONTAINERS = (dict, list)


def nesting_depth(value: Any, beyond: int = MAX_DEPTH) -> int:
    """How deeply a JSON value nests, counted up to one level past `beyond`. A level at a time, without
    recursion (a hostile value must not exhaust the stack here) and with one loop per container: this runs on
    every forwarded request."""
    depth, level = 0, [value] if isinstance(value, _CONTAINERS) else []
    while level and depth <= beyond:
        depth += 1
        below: list[Any] = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, _CONTAINERS):
                    below.append(child)
        level = below
    return depth


def forward_params(params: Mapping[str, Any] | None, **replace: Any) -> Json:
    """The params to send to a backend: the client's, with names replaced and front-hop `_meta` removed.

    Nesting is bounded: a front may accept more depth than a backend's parser, which would drop the request
    unanswered and leave the caller waiting for a timeout."""
    if params is not None and nesting_depth(params) > MAX_DEPTH:
        raise MCPError(types.INVALID_PARAMS, f"params nest deeper than {MAX_DEPTH} levels")
    out: Json = dict(params or {})
    out.update(replace)
    meta = out.get("_meta")
    if isinstance(meta, Mapping):
        kept = {k: v for k, v in meta.items() if k not in _FRONT_HOP_KEYS and not k.startswith(_FRONT_HOP_PREFIX)}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    for key in ("inputResponses", "requestState"):
        out.pop(key, None)
    return out


def map_content_block(block: Any, to_front: UriMap) -> Any:
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "resource_link" and isinstance(block.get("uri"), str):
        return {**block, "uri": to_front(block["uri"])}
    if (
        kind == "resource"
        and isinstance(resource := block.get("resource"), dict)
        and isinstance(resource.get("uri"), str)
    ):
        return {**block, "resource": {**resource, "uri": to_front(resource["uri"])}}
    return block


def map_tool_result(result: Json, to_front: UriMap) -> Json:
    content = result.get("content")
    if isinstance(content, list):
        return {**result, "content": [map_content_block(block, to_front) for block in content]}
    return result


def map_read_result(result: Json, to_front: UriMap) -> Json:
    contents = result.get("contents")
    if isinstance(contents, list):
        mapped = [
            {**c, "uri": to_front(c["uri"])} if isinstance(c, dict) and isinstance(c.get("uri"), str) else c
            for c in contents
        ]
        return {**result, "contents": mapped}
    return result


def map_prompt_result(result: Json, to_front: UriMap) -> Json:
    messages = result.get("messages")
    if isinstance(messages, list):
        mapped = [
            {**m, "content": map_content_block(m.get("content"), to_front)} if isinstance(m, dict) else m
            for m in messages
        ]
        return {**result, "messages": mapped}
    return result


def error_result(message: str) -> Json:
    """A tool error result: always a content list, never a bare object."""
    return {"content": [{"type": "text", "text": message}], "isError": True}
