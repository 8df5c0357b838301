"""How a call that needs the user's authorization is answered: an `oauth_delegation` tool result, or, for a
client that declared URL-mode elicitation, a URL elicitation (-32042 in the handshake era)."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.exceptions import UrlElicitationRequiredError

from master_mcp.auth import Delegate

AUTHORIZE_TOOL = "authorize"


def authorize_tool(server_id: str) -> dict[str, Any]:
    """The tool a per-user backend shows before anyone has authorized it (its own tools are unknown until then)."""
    return {
        "name": AUTHORIZE_TOOL,
        "title": f"Authorize {server_id}",
        "description": (
            f"Connect your account to {server_id}. Returns a link to open in a browser; once you have approved"
            f" access there, {server_id}'s own tools appear and work."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"force": {"type": "boolean", "description": "Authorize again even if already authorized."}},
        },
    }


def _message(delegate: Delegate) -> str:
    server = delegate.server_id
    return f"Authorization is needed to use {server!r}. Open this link to sign in: {delegate.authorization_url}"


def delegation_result(delegate: Delegate) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": _message(delegate)}],
        "isError": True,
        "structuredContent": {
            "type": "oauth_delegation",
            "server_id": delegate.server_id,
            "authorization_url": delegate.authorization_url,
            "auth_endpoint": delegate.auth_endpoint,
            "token_endpoint": delegate.token_endpoint,
            "required_scopes": list(delegate.required_scopes),
            "redirect_after_auth": delegate.redirect_after_auth,
        },
    }


def wants_url_elicitation(capabilities: types.ClientCapabilities | None) -> bool:
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and elicitation.url is not None


def url_elicitation(delegate: Delegate) -> UrlElicitationRequiredError:
    request = types.ElicitRequestURLParams(
        mode="url", message=_message(delegate), url=delegate.authorization_url, elicitation_id=delegate.flow_id
    )
    return UrlElicitationRequiredError([request], message=f"authorization needed for {delegate.server_id!r}")
