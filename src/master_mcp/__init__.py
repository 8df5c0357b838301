"""master-mcp: one MCP endpoint in front of many MCP servers, each reached with the right credentials."""

from master_mcp.auth import AuthStrategy, Delegate, Forward, MultiAuthManager, Principal
from master_mcp.config import ConfigError, MasterConfig, load_config
from master_mcp.server import MasterServer

__all__ = [
    "AuthStrategy",
    "ConfigError",
    "Delegate",
    "Forward",
    "MasterConfig",
    "MasterServer",
    "MultiAuthManager",
    "Principal",
    "load_config",
]
