"""The merged view of every backend's tools, resources, templates and prompts, and the way back to a backend.

Built once per backend change (never per request): each handler only does dictionary look-ups here.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mcp.shared.inbound import X_MCP_HEADER_KEY
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from master_mcp.backends.listing import Listing
from master_mcp.catalog.naming import FRONT_NAME, NameScheme, UriScheme, uri_key
from master_mcp.config.models import Namespacing, ServerConfig

logger = logging.getLogger(__name__)

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a front name or URI goes: the backend and its own name (or URI) for the thing."""

    server_id: str
    name: str


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    kind: str
    front_name: str
    server_id: str
    backend_name: str
    title: str | None


@dataclass(slots=True)
class _Template:
    template: UriTemplate
    route_prefix: str
    server_id: str


def _idempotent_hint(tool: Json) -> bool:
    annotations = tool.get("annotations")
    return isinstance(annotations, dict) and annotations.get("idempotentHint") is True


def _declares_headers(schema: Any) -> bool:
    """Whether `x-mcp-header` is a key anywhere in a tool's input schema (as deep as a backend may nest it)."""
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if X_MCP_HEADER_KEY in node:
                return True
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


def _allowed(server: ServerConfig, name: str) -> bool:
    rules = server.tools
    if rules.allow and not any(fnmatch.fnmatchcase(name, glob) for glob in rules.allow):
        return False
    return not any(fnmatch.fnmatchcase(name, glob) for glob in rules.deny)


class Catalog:
    def __init__(self, namespacing: Namespacing, servers: Sequence[ServerConfig]) -> None:
        self._names = NameScheme(namespacing.mode, namespacing.separator)
        self._uris = UriScheme(namespacing.mode)
        self._listings: dict[str, Listing] = {}
        self._capable: dict[tuple[str, str], bool] = {}
        self.version = 0
        self.set_servers(servers)

    # ---- updates -------------------------------------------------------------------------------------------------

    def set_servers(self, servers: Sequence[ServerConfig]) -> None:
        """Take over a new set of backends (a reloaded config): the parts of those that are gone are dropped, and
        names, prefixes and filters follow the new settings."""
        self._servers = {s.id: s for s in servers}
        self._order = [s.id for s in servers]
        self._keys = {s.id: uri_key(s.name_prefix) if s.name_prefix else "" for s in servers}
        self._server_by_key = {key: sid for sid, key in self._keys.items() if key}
        self._listings = {sid: listing for sid, listing in self._listings.items() if sid in self._servers}
        self._capable = {key: value for key, value in self._capable.items() if key[0] in self._servers}
        self._build()

    def update(self, server_id: str, listing: Listing | None) -> None:
        """Replace (or with `None`, drop) one backend's part and rebuild the merged view."""
        if server_id not in self._servers:
            return  # a late word from a backend that a reload has just removed
        if listing is None:
            self._listings.pop(server_id, None)
        else:
            self._listings[server_id] = listing
        self._build()

    # ---- look-ups ------------------------------------------------------------------------------------------------

    def resolve_tool(self, front_name: str) -> Route | None:
        return self._tool_routes.get(front_name)

    def resolve_prompt(self, front_name: str) -> Route | None:
        return self._prompt_routes.get(front_name)

    def tool_header_schema(self, front_name: str) -> Mapping[str, Any] | None:
        """The tool's input schema if it declares request headers (`x-mcp-header`), for the check of a 2026-07-28
        call's `Mcp-Param-*` headers; None for a tool that declares none, which no header can be checked against
        (and whose schema would be walked on every call for nothing)."""
        return self._header_schemas.get(front_name)

    def idempotent(self, front_name: str) -> bool:
        """Whether the tool says repeating a call is harmless (`annotations.idempotentHint`)."""
        return self._tool_idempotent.get(front_name, False)

    def resolve_resource(self, front_uri: str) -> Route | None:
        if (route := self._resource_routes.get(front_uri)) is not None:
            return route
        for entry in self._templates:
            if entry.template.match(front_uri) is not None:
                return Route(entry.server_id, front_uri.removeprefix(entry.route_prefix))
        if (parts := UriScheme.unwrap(front_uri)) is not None and parts[0] in self._server_by_key:
            return Route(self._server_by_key[parts[0]], parts[1])
        if self._uris.mode != "prefix":
            # A backend may serve URIs it never listed; with only one resource backend there is no doubt.
            owners = [sid for sid in self._order if sid in self._listings and self._offers_resources(sid)]
            if len(owners) == 1:
                return Route(owners[0], front_uri)
        return None

    def resolve_template(self, front_template: str) -> Route | None:
        return self._template_routes.get(front_template)

    def uri_to_front(self, server_id: str, uri: str) -> str:
        if self._uris.wraps(uri, self._collided_uris):
            return UriScheme.wrap(self._keys.get(server_id, ""), uri)
        return uri

    @property
    def tools(self) -> list[Json]:
        return self._tools

    @property
    def resources(self) -> list[Json]:
        return self._resources

    @property
    def templates(self) -> list[Json]:
        return self._template_list

    @property
    def prompts(self) -> list[Json]:
        return self._prompts

    def entries(self) -> list[CatalogEntry]:
        return list(self._entries)

    def problems(self, server_id: str) -> list[str]:
        return self._problems.get(server_id, [])

    def counts(self, server_id: str) -> dict[str, int]:
        return dict(self._counts.get(server_id, {}))

    def set_capability(self, server_id: str, capability: str, present: bool) -> None:
        self._capable[(server_id, capability)] = present

    # ---- the build -----------------------------------------------------------------------------------------------

    def _offers_resources(self, server_id: str) -> bool:
        listing = self._listings[server_id]
        return bool(listing.resources or listing.templates or self._capable.get((server_id, "resources")))

    def _build(self) -> None:
        self.version += 1
        self._problems: dict[str, list[str]] = {}
        self._entries: list[CatalogEntry] = []
        self._counts: dict[str, dict[str, int]] = {}
        live = [sid for sid in self._order if sid in self._listings]

        tool_pairs = [
            (sid, tool)
            for sid in live
            for tool in self._listings[sid].tools
            if isinstance(tool.get("name"), str) and _allowed(self._servers[sid], tool["name"])
        ]
        self._tools, self._tool_routes = self._name_items("tool", tool_pairs)
        self._header_schemas = {
            t["name"]: schema
            for t in self._tools
            if isinstance(schema := t.get("inputSchema"), dict) and _declares_headers(schema)
        }
        self._tool_idempotent = {t["name"]: _idempotent_hint(t) for t in self._tools}

        prompt_pairs = [(sid, p) for sid in live for p in self._listings[sid].prompts if isinstance(p.get("name"), str)]
        self._prompts, self._prompt_routes = self._name_items("prompt", prompt_pairs)

        uri_counts = Counter(
            uri
            for sid in live
            for uri in {r.get("uri") for r in self._listings[sid].resources}
            | {t.get("uriTemplate") for t in self._listings[sid].templates}
            if isinstance(uri, str)
        )
        self._collided_uris = frozenset(uri for uri, n in uri_counts.items() if n > 1)
        self._resources, self._resource_routes = self._map_uris(live, "resources", "uri")
        self._template_list, self._template_routes = self._map_uris(live, "templates", "uriTemplate")
        self._templates = []
        for front in self._template_list:
            route = self._template_routes[front["uriTemplate"]]
            try:
                parsed = UriTemplate.parse(front["uriTemplate"])
            except InvalidUriTemplate as exc:
                self._problem(route.server_id, f"resource template {route.name!r}: {exc}")
                continue
            self._templates.append(_Template(parsed, front["uriTemplate"].removesuffix(route.name), route.server_id))

        for sid in live:
            self._counts[sid] = {
                "tools": sum(1 for r in self._tool_routes.values() if r.server_id == sid),
                "resources": sum(1 for r in self._resource_routes.values() if r.server_id == sid),
                "templates": sum(1 for r in self._template_routes.values() if r.server_id == sid),
                "prompts": sum(1 for r in self._prompt_routes.values() if r.server_id == sid),
            }

    def _problem(self, server_id: str, message: str) -> None:
        self._problems.setdefault(server_id, []).append(message)
        logger.error("server %s: %s", server_id, message)

    def _name_items(self, kind: str, pairs: list[tuple[str, Json]]) -> tuple[list[Json], dict[str, Route]]:
        names = self._names.front_names((self._servers[sid].name_prefix, item["name"]) for sid, item in pairs)
        items: list[Json] = []
        routes: dict[str, Route] = {}
        for sid, item in pairs:
            backend_name = item["name"]
            front = names[(self._servers[sid].name_prefix, backend_name)]
            if not FRONT_NAME.match(front):
                self._problem(
                    sid, f"{kind} {backend_name!r}: front name {front!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$"
                )
                continue
            if (taken := routes.get(front)) is not None:
                self._problem(
                    sid,
                    f"{kind} {backend_name!r}: front name {front!r} is already taken by server {taken.server_id!r}"
                    f" ({self._names.mode} namespacing); rename it with a prefix or filter it out",
                )
                continue
            routes[front] = Route(sid, backend_name)
            items.append(item if front == backend_name else {**item, "name": front})
            self._entries.append(CatalogEntry(kind, front, sid, backend_name, item.get("title")))
        return items, routes

    def _map_uris(self, live: list[str], attr: str, key: str) -> tuple[list[Json], dict[str, Route]]:
        items: list[Json] = []
        routes: dict[str, Route] = {}
        for sid in live:
            for item in getattr(self._listings[sid], attr):
                uri = item.get(key)
                if not isinstance(uri, str):
                    continue
                front = self.uri_to_front(sid, uri)
                if (taken := routes.get(front)) is not None:
                    self._problem(
                        sid, f"resource {uri!r} is already offered by server {taken.server_id!r} (none namespacing)"
                    )
                    continue
                routes[front] = Route(sid, uri)
                items.append(item if front == uri else {**item, key: front})
        return items, routes
