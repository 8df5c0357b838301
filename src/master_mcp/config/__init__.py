"""Configuration: the `servers.yaml` models and their loader."""

from master_mcp.config.loader import ConfigError, default_config_path, load_config, parse_config
from master_mcp.config.models import LocalEndpoint, MasterConfig, MasterSettings, Namespacing, ServerConfig, ToolFilter

__all__ = [
    "ConfigError",
    "LocalEndpoint",
    "MasterConfig",
    "MasterSettings",
    "Namespacing",
    "ServerConfig",
    "ToolFilter",
    "default_config_path",
    "load_config",
    "parse_config",
]
