"""`OAuthFlowController`: the master's own OAuth routes, a standalone ASGI app.

GET  /oauth/authorize  start (or continue) a delegation: state + PKCE S256, then off to the provider
GET  /oauth/callback   the provider's answer: state checked (single use, 10 minutes, same browser), code exchanged
POST /oauth/token      the same completion for clients that catch the redirect themselves ({state, code})
GET  /oauth/success, /oauth/error   small pages; everything they echo is escaped
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from master_mcp.auth.flow_state import FlowStore, MemoryFlowStore, PendingFlow, PendingState
from master_mcp.auth.oauth_client import OAuthError
from master_mcp.auth.principal import Principal
from master_mcp.auth.strategies.base import Delegating

logger = logging.getLogger(__name__)

COOKIE = "master_mcp_oauth"
_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

# Who is making an HTTP request to the OAuth routes: a principal, or None when it cannot be told.
Identify = Callable[[Request], Awaitable[Principal | None]]
Authorized = Callable[[Principal, str, str], Awaitable[None]]


class FlowError(Exception):
    """A refused step of the flow; the message is shown to the person, so it never holds a credential."""


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def safe_return_to(value: str | None) -> str | None:
    """Only a path on this server: no scheme, no host, no `//` or backslash tricks."""
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise FlowError("return_to must be a path on this server")
    return value


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
    style = "font-family:sans-serif;max-width:40em;margin:4em auto"
    document = f"{head}<body style='{style}'><h1>{html.escape(title)}</h1><p>{html.escape(body)}</p></body></html>"
    return HTMLResponse(document, status_code=status, headers=_PAGE_HEADERS)


class OAuthFlowController:
    def __init__(
        self,
        *,
        base_url: str,
        strategies: Callable[[str], Delegating | None],
        identify: Identify,
        on_authorized: Authorized | None = None,
        store: FlowStore | None = None,
        prefix: str = "/oauth",
        require_caller: bool = False,
    ) -> None:
        """`require_caller`: every request must be identified by `identify` (local mode: loopback only), even
        one carrying a flow id; otherwise a flow id alone stands for the principal it was issued to."""
        self.base_url = base_url.rstrip("/")
        self._prefix = prefix
        self._strategies = strategies
        self._identify = identify
        self._on_authorized = on_authorized
        self.store = store or MemoryFlowStore()
        self._secure = self.base_url.startswith("https://")
        self._require_caller = require_caller
        self._router = Router(
            routes=[
                Route(f"{prefix}/authorize", self.authorize, methods=["GET"]),
                Route(f"{prefix}/callback", self.callback, methods=["GET"]),
                Route(f"{prefix}/token", self.token, methods=["POST"]),
                Route(f"{prefix}/success", self.success, methods=["GET"]),
                Route(f"{prefix}/error", self.error, methods=["GET"]),
            ]
        )

    @property
    def routes(self) -> list[Any]:
        return list(self._router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._router(scope, receive, send)

    # ---- FlowStarter ---------------------------------------------------------------------------------------------

    @property
    def callback_url(self) -> str:
        return f"{self.base_url}{self._prefix}/callback"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}{self._prefix}/token"

    @property
    def success_url(self) -> str:
        return f"{self.base_url}{self._prefix}/success"

    async def begin(self, principal: Principal, server_id: str) -> tuple[str, str]:
        flow_id = secrets.token_urlsafe(24)
        await self.store.put_flow(flow_id, PendingFlow(principal, server_id))
        query = urlencode({"server_id": server_id, "flow": flow_id})
        return flow_id, f"{self.base_url}{self._prefix}/authorize?{query}"

    # ---- routes --------------------------------------------------------------------------------------------------

    def _fail(self, message: str) -> Response:
        logger.info("oauth flow refused: %s", message)
        return RedirectResponse(f"{self._prefix}/error?{urlencode({'message': message})}", status_code=303)

    async def authorize(self, request: Request) -> Response:
        try:
            server_id = request.query_params.get("server_id") or ""
            strategy = self._strategies(server_id)
            if strategy is None:
                raise FlowError(f"unknown server {server_id!r}, or it does not use delegated authorization")
            return_to = safe_return_to(request.query_params.get("return_to"))
            principal, flow_id = await self._who(request, server_id)
            verifier = secrets.token_urlsafe(48)
            state = secrets.token_urlsafe(32)
            browser = request.cookies.get(COOKIE) or secrets.token_urlsafe(24)
            pending = PendingState(principal, server_id, verifier, _digest(browser), return_to, flow_id)
            await self.store.put_state(state, pending)
            scope = request.query_params.get("scope")
            provider = request.query_params.get("provider")
            if provider is not None and provider != strategy.provider:
                raise FlowError(f"server {server_id!r} does not use provider {provider!r}")
            location = await strategy.authorization_request(state, _challenge(verifier), scope)
        except FlowError as exc:
            return self._fail(str(exc))
        except OAuthError as exc:
            return self._fail(f"the provider of {server_id!r} cannot be reached: {exc}")
        response = RedirectResponse(location, status_code=302)
        response.set_cookie(
            COOKIE, browser, max_age=600, path=self._prefix, httponly=True, samesite="lax", secure=self._secure
        )
        return response

    async def _who(self, request: Request, server_id: str) -> tuple[Principal, str]:
        flow_id = request.query_params.get("flow")
        caller = await self._identify(request)
        if caller is None and self._require_caller:
            raise FlowError("in single-user local mode the authorization routes answer only on this machine")
        if flow_id:
            flow = await self.store.take_flow(flow_id)
            if flow is None or flow.server_id != server_id:
                raise FlowError("this authorization link is unknown, used already, or expired; ask for a new one")
            if caller is not None and caller.key != flow.principal.key:
                raise FlowError("this authorization link belongs to another user")
            return flow.principal, flow_id
        if caller is None:
            raise FlowError("open the authorization link the master gave you (it identifies who you are)")
        return caller, ""

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state")
        if not state:
            return self._fail("the provider's answer has no state")
        pending = await self.store.peek_state(state)
        if pending is None:
            return self._fail("unknown, used or expired state; start the authorization again")
        if _digest(request.cookies.get(COOKIE, "")) != pending.browser:
            return self._fail("this authorization was started in another browser session")
        if await self.store.take_state(state) is None:  # spent by a concurrent request meanwhile: single use holds
            return self._fail("unknown, used or expired state; start the authorization again")
        if error := params.get("error"):
            description = params.get("error_description") or ""
            return self._fail(f"the provider refused: {error} {description}".strip())
        try:
            await self._complete(pending, params.get("code"), params.get("iss"))
        except FlowError as exc:
            return self._fail(str(exc))
        target = pending.return_to or f"{self._prefix}/success?{urlencode({'server_id': pending.server_id})}"
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(COOKIE, path=self._prefix)
        return response

    async def token(self, request: Request) -> Response:
        form: Mapping[str, Any]
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": "invalid_request", "error_description": "malformed JSON"}, 400)
            form = body if isinstance(body, dict) else {}
        else:
            form = await request.form()
        state, code = form.get("state"), form.get("code")
        if not isinstance(state, str) or not isinstance(code, str):
            return JSONResponse({"error": "invalid_request", "error_description": "state and code are required"}, 400)
        pending = await self.store.peek_state(state)
        if pending is None:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown, used or expired state"}, 400)
        caller = await self._identify(request)
        if caller is None or caller.key != pending.principal.key:
            return JSONResponse({"error": "access_denied", "error_description": "state belongs to another user"}, 403)
        if await self.store.take_state(state) is None:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown, used or expired state"}, 400)
        try:
            await self._complete(pending, code, None)
        except FlowError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, 400)
        return JSONResponse({"server_id": pending.server_id, "status": "authorized"})

    async def _complete(self, pending: PendingState, code: str | None, iss: str | None) -> None:
        strategy = self._strategies(pending.server_id)
        if strategy is None:
            raise FlowError(f"server {pending.server_id!r} no longer uses delegated authorization")
        if not code:
            raise FlowError("the provider's answer has no code")
        try:
            expected = await strategy.issuer()
            if iss is not None and expected is not None and iss != expected:
                raise FlowError("the answer came from an unexpected issuer")  # RFC 9207 mix-up defence
            token = await strategy.exchange_code(code, pending.code_verifier)
        except OAuthError as exc:
            raise FlowError(f"exchanging the code failed: {exc}") from None
        await strategy.store_token(pending.principal, token)
        logger.info("server %s authorized for %s", pending.server_id, pending.principal.subject)
        if self._on_authorized is not None:
            await self._on_authorized(pending.principal, pending.server_id, pending.flow_id)

    async def success(self, request: Request) -> Response:
        server = request.query_params.get("server_id") or "the server"
        return _page("Authorized", f"master-mcp can now use {server} for you. You can close this window.")

    async def error(self, request: Request) -> Response:
        message = request.query_params.get("message") or "authorization failed"
        return _page("Authorization failed", message[:500], status=400)
