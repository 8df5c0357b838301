"""Configuration: the `servers.yaml` models and their loader."""

from master_mcp.config.loader import ConfigError, default_config_path, load_config, parse_config
from master_mcp.config.models import (
    InboundAuth,
    LocalEndpoint,
    MasterConfig,
    MasterSettings,
    Namespacing,
    ServerConfig,
    SessionSettings,
    StaticToken,
    TokenStoreSettings,
    ToolFilter,
)

__all__ = [
    "ConfigError",
    "InboundAuth",
    "LocalEndpoint",
    "MasterConfig",
    "MasterSettings",
    "Namespacing",
    "ServerConfig",
    "SessionSettings",
    "StaticToken",
    "TokenStoreSettings",
    "ToolFilter",
    "default_config_path",
    "load_config",
    "parse_config",
]
