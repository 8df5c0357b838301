"""The master as an OAuth resource server (RFC 6750, RFC 9728, the MCP authorization spec).

`/mcp` answers 400 `invalid_request` to a malformed Authorization header, 401 (with `WWW-Authenticate: Bearer
resource_metadata=..., scope=...`, plus `error="invalid_token"` when a token was presented) to a missing or bad
token, and 403 `insufficient_scope` naming the scopes it needs. With an authorization server configured, the
protected-resource metadata is served at `/.well-known/oauth-protected-resource` and its path-inserted form.

The SDK's `RequireAuthMiddleware` neither tells a malformed header from a missing one nor adds `scope` to its
challenge, so this guard replaces it; it keeps the SDK's `AuthenticatedUser` and auth context, which the
streamable HTTP transport (session ownership) and `current_principal()` read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.routes import cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.authentication import AuthCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

WELL_KNOWN = "/.well-known/oauth-protected-resource"
REALM = "master-mcp"  # named in the challenge where there is no metadata to point to (static tokens)
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*)$", re.IGNORECASE)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ResourceServer:
    """What the master says about itself as a protected resource, and the guard that enforces it."""

    verifier: TokenVerifier
    resource: str  # the master's public URL of `/mcp`
    required_scopes: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    authorization_servers: tuple[str, ...] = ()
    name: str | None = None

    @property
    def path(self) -> str:
        parts = self.resource.split("/", 3)
        return "/" + parts[3] if len(parts) > 3 else ""

    @property
    def metadata_url(self) -> str | None:
        """The RFC 9728 metadata URL (path-inserted form), when there is an authorization server to point to."""
        if not self.authorization_servers:
            return None
        origin = "/".join(self.resource.split("/", 3)[:3])
        return f"{origin}{WELL_KNOWN}{self.path.rstrip('/')}"

    # ---- RFC 9728 ------------------------------------------------------------------------------------------------

    def metadata(self) -> ProtectedResourceMetadata:
        return ProtectedResourceMetadata(
            resource=AnyHttpUrl(self.resource),
            authorization_servers=[AnyHttpUrl(a) for a in self.authorization_servers],
            scopes_supported=list(self.scopes_supported) or None,
            bearer_methods_supported=["header"],
            resource_name=self.name,
        )

    @property
    def routes(self) -> list[Route]:
        if not self.authorization_servers:
            return []

        async def metadata(request: Request) -> Response:
            body = self.metadata().model_dump(mode="json", exclude_none=True)
            # As configured, byte for byte: a URL model would add a '/' to a bare origin, and clients compare
            # the issuer as a string (RFC 8414 section 3.3).
            body |= {"resource": self.resource, "authorization_servers": list(self.authorization_servers)}
            return JSONResponse(body, headers={"cache-control": "public, max-age=3600"})

        endpoint = cors_middleware(metadata, ["GET", "OPTIONS"])
        paths = dict.fromkeys([f"{WELL_KNOWN}{self.path.rstrip('/')}", WELL_KNOWN])
        return [Route(path, endpoint=endpoint, methods=["GET", "OPTIONS"]) for path in paths]

    # ---- RFC 6750 ------------------------------------------------------------------------------------------------

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        parts = []
        if error:
            parts.append(f"error={_quoted(error)}")
        if description:
            parts.append(f"error_description={_quoted(description)}")
        if (url := self.metadata_url) is not None:
            parts.append(f"resource_metadata={_quoted(url)}")
        else:
            parts.append(f"realm={_quoted(REALM)}")
        if scope := " ".join(self.required_scopes or self.scopes_supported):
            parts.append(f"scope={_quoted(scope)}")
        return "Bearer " + ", ".join(parts)

    def refusal(self, status: int, error: str | None, description: str) -> Response:
        body = {"error": error or "unauthorized", "error_description": description}
        return Response(
            json.dumps(body),
            status_code=status,
            media_type="application/json",
            headers={"www-authenticate": self.challenge(error, description if error else None)},
        )

    def guard(self, app: ASGIApp) -> ASGIApp:
        return _Guard(self, AuthContextMiddleware(app))


class _Guard:
    def __init__(self, server: ResourceServer, app: ASGIApp) -> None:
        self.server = server
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = await self._check(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope) -> Response | None:
        """None when the request may go on (and `scope["user"]` is set), else the refusal to send."""
        server = self.server
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if not values:
            return server.refusal(401, None, "this server needs a bearer token")
        if len(values) > 1:
            return server.refusal(400, "invalid_request", "more than one Authorization header")
        match = _BEARER.match(values[0].decode("latin-1").strip())
        if match is None:
            return server.refusal(400, "invalid_request", "the Authorization header must be 'Bearer <token>'")
        access = await server.verifier.verify_token(match.group(1))
        if access is None:
            return server.refusal(401, "invalid_token", "the bearer token is invalid, expired or not for this server")
        missing = [s for s in server.required_scopes if s not in access.scopes]
        if missing:
            return server.refusal(403, "insufficient_scope", f"this server needs the scopes: {' '.join(missing)}")
        scope["user"] = AuthenticatedUser(access)
        scope["auth"] = AuthCredentials(access.scopes)
        return None
