"""Example backend: a read-only documentation index (tools, a resource, a resource template, a prompt).

Its `search` tool has the same name as the notes backend's, which shows the master's namespacing.
Run over stdio (what `servers.yaml` does) or `--http PORT` for streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("docs", instructions="Documentation pages.", log_level="WARNING")

PAGES: dict[str, str] = {
    "install": "Create a venv, pip install the project, run master-mcp serve.",
    "namespacing": "Front names are {prefix}__{name}; modes prefix, conditional and none.",
    "auth": "Each backend has an auth strategy: bypass_auth, master_oauth, delegate_oauth, proxy_oauth.",
}


@mcp.tool(description="Find documentation pages that mention the query.")
def search(query: str, limit: int = 5) -> list[str]:
    q = query.lower()
    return [slug for slug, text in PAGES.items() if q in slug or q in text.lower()][:limit]


@mcp.tool(description="Count the words of a page.")
def word_count(slug: str) -> int:
    if slug not in PAGES:
        raise ToolError(f"no page {slug!r}")
    return len(PAGES[slug].split())


@mcp.resource("docs://index", description="All page slugs.")
def index() -> str:
    return "\n".join(sorted(PAGES))


@mcp.resource("docs://page/{slug}", description="One page by slug.")
def page(slug: str) -> str:
    return PAGES.get(slug, "")


@mcp.prompt(description="Ask to explain a documentation page.")
def explain(slug: str, audience: str = "a new user") -> str:
    return f"Explain this page to {audience}:\n\n{PAGES.get(slug, '')}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        mcp.run()
