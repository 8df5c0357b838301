"""Inbound principals, outbound (per-backend) auth strategies, the token store and the OAuth flow routes."""

from master_mcp.auth.flow import OAuthFlowController
from master_mcp.auth.manager import MultiAuthManager, StrategyFactory
from master_mcp.auth.principal import LOCAL_PRINCIPAL, Principal
from master_mcp.auth.store import StoredToken, TokenKey, TokenStore
from master_mcp.auth.strategies import (
    AuthRefused,
    AuthStrategy,
    BypassAuth,
    Decision,
    Delegate,
    DelegateOAuth,
    Forward,
    MasterOAuth,
    ProxyOAuth,
    StrategyConfig,
    StrategyContext,
)

__all__ = [
    "LOCAL_PRINCIPAL",
    "AuthRefused",
    "AuthStrategy",
    "BypassAuth",
    "Decision",
    "Delegate",
    "DelegateOAuth",
    "Forward",
    "MasterOAuth",
    "MultiAuthManager",
    "OAuthFlowController",
    "Principal",
    "ProxyOAuth",
    "StoredToken",
    "StrategyConfig",
    "StrategyContext",
    "StrategyFactory",
    "TokenKey",
    "TokenStore",
]
