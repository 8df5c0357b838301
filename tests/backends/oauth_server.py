"""Test authorization server and the MCP backend it protects, in one loopback process (`--port PORT`).

Built from the SDK's `mcp.server.auth` pieces: an in-memory provider behind the SDK's AS routes (metadata,
/authorize with auto-approved consent, /token with PKCE checks, refresh), RFC 9728 metadata for `/mcp`, and
`/mcp` itself accepting only this AS's tokens. Extra routes for tests: `/cc-token` (client credentials grant),
`/admin/mint` (a token pair for a subject), `/admin/expire` (every access token stops working),
`/admin/refresh-off` (refresh tokens are refused), `/admin/log` (the Authorization headers `/mcp` received).
Scope `deny` makes /authorize answer `error=access_denied`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
ARGS = parser.parse_args()
BASE = f"http://127.0.0.1:{ARGS.port}"
CLIENT_ID, CLIENT_SECRET = "master-client", "master-client-secret-1234"


class LoopbackClient(OAuthClientInformationFull):
    """The master's registration: any loopback `/oauth/callback` (the master's port is chosen at test time)."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is None or redirect_uri.host != "127.0.0.1" or redirect_uri.path != "/oauth/callback":
            raise ValueError("redirect_uri not registered")
        return redirect_uri


class Provider:
    def __init__(self) -> None:
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.users = itertools.count(1)
        self.refresh_enabled = True
        self.client = LoopbackClient(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uris=[AnyUrl("http://127.0.0.1/oauth/callback")],
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="client_secret_post",
            scope="read write deny",
        )

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.client if client_id == CLIENT_ID else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        raise NotImplementedError

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.scopes and "deny" in params.scopes:
            return construct_redirect_uri(
                str(params.redirect_uri),
                error="access_denied",
                error_description="the user said no",
                state=params.state,
            )
        code = secrets.token_urlsafe(16)
        ISSUED.append(code)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id or "",
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=f"user-{next(self.users)}",  # consent is auto-approved, each time by a new person
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state, iss=BASE)

    async def load_authorization_code(self, client: Any, authorization_code: str) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    def mint(self, subject: str, scopes: list[str], client_id: str = CLIENT_ID) -> OAuthToken:
        access, refresh = f"at-{secrets.token_urlsafe(16)}", f"rt-{secrets.token_urlsafe(16)}"
        ISSUED.extend((access, refresh))
        expires = int(time.time()) + 3600
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires, subject=subject
        )
        self.refresh[refresh] = RefreshToken(token=refresh, client_id=client_id, scopes=scopes, subject=subject)
        return OAuthToken(access_token=access, refresh_token=refresh, expires_in=3600, scope=" ".join(scopes))

    async def exchange_authorization_code(self, client: Any, authorization_code: AuthorizationCode) -> OAuthToken:
        self.codes.pop(authorization_code.code, None)
        return self.mint(authorization_code.subject or "nobody", authorization_code.scopes)

    async def load_refresh_token(self, client: Any, refresh_token: str) -> RefreshToken | None:
        return self.refresh.get(refresh_token) if self.refresh_enabled else None

    async def exchange_refresh_token(self, client: Any, refresh_token: RefreshToken, scopes: list[str]) -> OAuthToken:
        self.refresh.pop(refresh_token.token, None)
        return self.mint(refresh_token.subject or "nobody", scopes or refresh_token.scopes)

    async def load_access_token(self, token: str) -> AccessToken | None:
        return self.access.get(token)

    async def revoke_token(self, token: Any) -> None:
        self.access.pop(getattr(token, "token", ""), None)


PROVIDER = Provider()
SEEN: list[str | None] = []
ISSUED: list[str] = []  # every code, token and PKCE verifier this AS saw: the log-leak test looks for them

mcp = MCPServer(
    "protected",
    log_level="WARNING",
    auth_server_provider=PROVIDER,  # type: ignore[arg-type]
    auth=AuthSettings(issuer_url=BASE, resource_server_url=f"{BASE}/mcp", validate_token_resource=False),
)


@mcp.tool(description="Who the bearer token belongs to.")
def whoami() -> str:
    token = get_access_token()
    return json.dumps({"subject": token.subject if token else None, "client": token.client_id if token else None})


@mcp.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@mcp.custom_route("/cc-token", methods=["POST"])
async def client_credentials(request: Request) -> Response:
    form = await request.form()
    if form.get("grant_type") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if form.get("client_id") != "service-client" or form.get("client_secret") != "service-secret-5678":
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    token = PROVIDER.mint("service-account", str(form.get("scope") or "").split(), client_id="service-client")
    return JSONResponse({"access_token": token.access_token, "token_type": "Bearer", "expires_in": 3600})


@mcp.custom_route("/admin/mint", methods=["POST"])
async def mint(request: Request) -> Response:
    body = await request.json()
    return JSONResponse(PROVIDER.mint(body["subject"], body.get("scopes", [])).model_dump(exclude_none=True))


@mcp.custom_route("/admin/expire", methods=["POST"])
async def expire(request: Request) -> Response:
    PROVIDER.access.clear()
    return JSONResponse({"ok": True})


@mcp.custom_route("/admin/refresh-off", methods=["POST"])
async def refresh_off(request: Request) -> Response:
    PROVIDER.refresh_enabled = False
    return JSONResponse({"ok": True})


@mcp.custom_route("/admin/log", methods=["GET"])
async def log(request: Request) -> Response:
    return JSONResponse(SEEN)


@mcp.custom_route("/admin/issued", methods=["GET"])
async def issued(request: Request) -> Response:
    return JSONResponse(ISSUED)


class RecordAuthorization:
    """Remembers every Authorization header `/mcp` receives (to prove what the master sent), and every PKCE
    verifier posted to `/token`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            headers = dict(scope["headers"])
            value = headers.get(b"authorization")
            SEEN.append(value.decode() if value else None)
        if scope["type"] == "http" and scope["path"] == "/token":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            ISSUED.extend(v for k, v in parse_qsl(body.decode()) if k in ("code_verifier", "client_secret"))
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


if __name__ == "__main__":
    import uvicorn

    app = RecordAuthorization(mcp.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=ARGS.port, log_level="warning")
