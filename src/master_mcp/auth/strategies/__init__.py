"""The built-in auth strategies and the protocol a custom one implements."""

from master_mcp.auth.strategies.base import (
    AuthRefused,
    AuthStrategy,
    Decision,
    Delegate,
    Delegating,
    FlowStarter,
    Forward,
    StrategyConfig,
    StrategyContext,
)
from master_mcp.auth.strategies.bypass import BypassAuth
from master_mcp.auth.strategies.delegate_oauth import DelegateOAuth
from master_mcp.auth.strategies.master_oauth import MasterOAuth
from master_mcp.auth.strategies.proxy_oauth import ProxyOAuth
from master_mcp.auth.strategies.token_exchange import TokenExchange

__all__ = [
    "AuthRefused",
    "AuthStrategy",
    "BypassAuth",
    "Decision",
    "Delegate",
    "DelegateOAuth",
    "Delegating",
    "FlowStarter",
    "Forward",
    "MasterOAuth",
    "ProxyOAuth",
    "StrategyConfig",
    "StrategyContext",
    "TokenExchange",
]
