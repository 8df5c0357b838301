"""Example backend: a small in-memory notebook (tools, a resource, a resource template, a prompt).

Run over stdio (what `servers.yaml` does) or `--http PORT` for streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("notes", instructions="A tiny notebook.", log_level="WARNING")

NOTES: dict[str, str] = {
    "welcome": "master-mcp puts many MCP servers behind one endpoint.",
    "groceries": "eggs, flour, milk",
}


@mcp.tool(description="Find notes whose title or text contains the query.")
def search(query: str) -> list[str]:
    q = query.lower()
    return [title for title, text in NOTES.items() if q in title.lower() or q in text.lower()]


@mcp.tool(description="Add or replace a note.")
def add_note(title: str, text: str) -> str:
    NOTES[title] = text
    return f"saved {title!r}"


@mcp.resource("notes://index", description="Titles of all notes.")
def index() -> str:
    return "\n".join(sorted(NOTES))


@mcp.resource("notes://note/{title}", description="One note by title.")
def note(title: str) -> str:
    return NOTES.get(title, "")


@mcp.prompt(description="Ask for a summary of one note.")
def summarize(title: str) -> str:
    return f"Summarize this note in one sentence:\n\n{NOTES.get(title, '')}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        mcp.run()
