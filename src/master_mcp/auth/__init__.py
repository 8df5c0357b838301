"""Inbound principals and outbound (per-backend) auth strategies."""

from master_mcp.auth.manager import MultiAuthManager, StrategyFactory
from master_mcp.auth.principal import LOCAL_PRINCIPAL, Principal
from master_mcp.auth.strategies import AuthStrategy, BypassAuth, Decision, Delegate, Forward

__all__ = [
    "LOCAL_PRINCIPAL",
    "AuthStrategy",
    "BypassAuth",
    "Decision",
    "Delegate",
    "Forward",
    "MultiAuthManager",
    "Principal",
    "StrategyFactory",
]
