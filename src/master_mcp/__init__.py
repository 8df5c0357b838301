"""master-mcp: one MCP endpoint in front of many MCP servers, each reached with the right credentials."""

from master_mcp.auth import (
    AuthStrategy,
    Decision,
    Delegate,
    Forward,
    MultiAuthManager,
    OAuthFlowController,
    Principal,
    StrategyConfig,
    StrategyContext,
)
from master_mcp.config import ConfigError, MasterConfig, load_config, parse_config
from master_mcp.server import MasterServer

__all__ = [
    "AuthStrategy",
    "ConfigError",
    "Decision",
    "Delegate",
    "Forward",
    "MasterConfig",
    "MasterServer",
    "MultiAuthManager",
    "OAuthFlowController",
    "Principal",
    "StrategyConfig",
    "StrategyContext",
    "load_config",
    "parse_config",
]
