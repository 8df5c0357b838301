"""Entry file for the SDK's runner: `mcp run src/master_mcp/mcp_entry.py`.

`mcp run` accepts only an `MCPServer` object, so `mcp` is one whose `run` serves the master instead of
tools of its own. The config comes from `$MASTER_MCP_CONFIG`, then `./servers.yaml`.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

from master_mcp import heap, runtime
from master_mcp.config import default_config_path, load_config
from master_mcp.logs import setup_logging
from master_mcp.net import is_loopback
from master_mcp.server import MasterServer


class MasterEntry(MCPServer):
    """Adapts the master to the runner's `server.run(transport=...)` call."""

    def run(self, transport: str = "stdio", **kwargs: Any) -> None:
        config = load_config(default_config_path())
        setup_logging(config.master.log_level, config.secrets, config.master.log_format)
        master = MasterServer(config)
        master.companions.append(heap.settle_when_up)
        if transport == "stdio":
            anyio.run(master.run_stdio)
            return
        if transport != "streamable-http":
            raise SystemExit(f"master-mcp serves 'stdio' or 'streamable-http', not {transport!r}")
        import uvicorn

        from master_mcp.app import create_app

        settings = config.master
        if not is_loopback(settings.host) and settings.auth.mode == "local":
            raise SystemExit(
                f"refusing to serve on {settings.host} without inbound auth; use `master-mcp serve --allow-remote`"
            )
        uvicorn.run(
            create_app(master),
            host=settings.host,
            port=settings.port,
            log_config=None,
            timeout_graceful_shutdown=10,
            **runtime.UVICORN,
        )


mcp = MasterEntry("master-mcp")
