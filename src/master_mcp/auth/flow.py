"""`OAuthFlowController`: the master's own OAuth routes, a standalone ASGI app.

GET  /oauth/authorize  start (or continue) a delegation: state + PKCE S256, then off to the provider
GET  /oauth/callback   the provider's answer: state checked (single use, 10 minutes, same browser), code exchanged
POST /oauth/token      the same completion for clients that catch the redirect themselves ({state, code})
POST /oauth/consent   the person's answer to the consent page (CSRF token bound to the session cookie)
GET  /oauth/success, /oauth/error   small pages; everything they echo is escaped

With a master login (inbound `master_oauth`), the browser first logs in at the master's authorization server
(`/oauth/authorize?provider=master`, or any authorization while not logged in); a backend token is stored only when
the logged-in person is the principal the flow was started for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from master_mcp.auth.consent import ConsentStore, MemoryConsentStore
from master_mcp.auth.flow_state import FlowStore, MemoryFlowStore, PendingFlow, PendingState
from master_mcp.auth.master_login import MasterLogin
from master_mcp.auth.oauth_client import OAuthError, same_url
from master_mcp.auth.principal import Principal
from master_mcp.auth.session import SessionCookies
from master_mcp.auth.strategies.base import Delegating
from master_mcp.redis_link import StoreUnavailable

logger = logging.getLogger(__name__)

COOKIE = "master_mcp_oauth"
LOGIN_PROVIDER = "master"  # `/oauth/authorize?provider=master`: log in to the master itself
_LOGIN = "login"
_NOBODY_YET = Principal(issuer="master-mcp:login", subject="(logging in)")
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


def _page(title: str, body: str, status: int = 200, extra_html: str = "") -> HTMLResponse:
    """A small page; `title` and `body` are escaped here, `extra_html` must be built from escaped parts."""
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
    style = "font-family:sans-serif;max-width:40em;margin:4em auto"
    content = f"<h1>{html.escape(title)}</h1><p>{html.escape(body)}</p>{extra_html}"
    document = f"{head}<body style='{style}'>{content}</body></html>"
    return HTMLResponse(document, status_code=status, headers=_PAGE_HEADERS)


def _unavailable_is_503(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A route whose flow record, consent or login could not be read or written (the shared store is down) says so,
    and that trying again is fine; mounted alone or inside the master, the controller answers the same."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except StoreUnavailable as exc:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
            body = {"error": "temporarily_unavailable", "error_description": str(exc)}
            return JSONResponse(body, status_code=503, headers={"retry-after": "5"})

    return guarded


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
        login: MasterLogin | None = None,
        sessions: SessionCookies | None = None,
        consents: ConsentStore | None = None,
    ) -> None:
        """`require_caller`: every request must be identified by `identify` (local mode: loopback only), even
        one carrying a flow id; otherwise a flow id alone stands for the principal it was issued to.

        `login` and `sessions` (together): the browser logs in at the master's authorization server first, and a
        flow goes on only for the person logged in; a flow for a client's token then needs that person's consent
        per client, remembered in `consents`."""
        if (login is None) != (sessions is None):
            raise ValueError("login and sessions go together")
        self.base_url = base_url.rstrip("/")
        self._prefix = prefix
        self._strategies = strategies
        self._identify = identify
        self._on_authorized = on_authorized
        self.store = store or MemoryFlowStore()
        self._secure = self.base_url.startswith("https://")
        self._require_caller = require_caller
        self._login = login
        self._sessions = sessions
        self.consents = consents or MemoryConsentStore()
        self._router = Router(
            routes=[
                Route(f"{prefix}/authorize", _unavailable_is_503(self.authorize), methods=["GET"]),
                Route(f"{prefix}/callback", _unavailable_is_503(self.callback), methods=["GET"]),
                Route(f"{prefix}/token", _unavailable_is_503(self.token), methods=["POST"]),
                Route(f"{prefix}/consent", _unavailable_is_503(self.consent), methods=["POST"]),
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

    def _browser_cookie(self, response: Response, browser: str) -> Response:
        response.set_cookie(
            COOKIE, browser, max_age=600, path=self._prefix, httponly=True, samesite="lax", secure=self._secure
        )
        return response

    async def authorize(self, request: Request) -> Response:
        server_id = request.query_params.get("server_id") or ""
        provider = request.query_params.get("provider")
        try:
            if self._login is not None and self._sessions is not None:
                if provider == LOGIN_PROVIDER or not server_id:
                    return await self._begin_login(request, safe_return_to(request.query_params.get("return_to")))
                if self._sessions.principal(request) is None:
                    # Who is at this browser must be known before the flow (and its single-use link) is spent.
                    return await self._begin_login(request, f"{request.url.path}?{request.url.query}")
            strategy = self._strategies(server_id)
            if strategy is None:
                raise FlowError(f"unknown server {server_id!r}, or it does not use delegated authorization")
            return_to = safe_return_to(request.query_params.get("return_to"))
            principal, flow_id = await self._who(request, server_id)
            verifier = secrets.token_urlsafe(48)
            state = secrets.token_urlsafe(32)
            browser = request.cookies.get(COOKIE) or secrets.token_urlsafe(24)
            scope = request.query_params.get("scope")
            pending = PendingState(principal, server_id, verifier, _digest(browser), return_to, flow_id, scope=scope)
            await self.store.put_state(state, pending)
            if provider is not None and provider != strategy.provider:
                raise FlowError(f"server {server_id!r} does not use provider {provider!r}")
            location = await strategy.authorization_request(state, _challenge(verifier), scope)
            if await self._needs_consent(principal):
                return self._browser_cookie(self._consent_page(request, state, pending, location), browser)
        except FlowError as exc:
            return self._fail(str(exc))
        except OAuthError as exc:
            return self._fail(f"the provider of {server_id!r} cannot be reached: {exc}")
        return self._browser_cookie(RedirectResponse(location, status_code=302), browser)

    async def _begin_login(self, request: Request, return_to: str | None) -> Response:
        """Off to the master's authorization server; the callback knows this state as a login."""
        assert self._login is not None
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(32)
        browser = request.cookies.get(COOKIE) or secrets.token_urlsafe(24)
        await self.store.put_state(
            state, PendingState(_NOBODY_YET, "", verifier, _digest(browser), return_to, "", purpose=_LOGIN)
        )
        try:
            location = await self._login.authorization_request(state, _challenge(verifier), self.callback_url)
        except OAuthError as exc:
            return self._fail(f"the master's authorization server cannot be reached: {exc}")
        return self._browser_cookie(RedirectResponse(location, status_code=302), browser)

    async def _who(self, request: Request, server_id: str) -> tuple[Principal, str]:
        flow_id = request.query_params.get("flow")
        caller = await self._identify(request)
        if caller is None and self._sessions is not None:
            caller = self._sessions.principal(request)
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
        if pending.purpose != _LOGIN and self._sessions is not None:
            who = self._sessions.principal(request)
            if who is None or who.key != pending.principal.key:
                return self._fail(
                    "this browser is logged in as someone other than the person this authorization was started"
                    " for; nothing was stored. Log in as that person and start again"
                )
        if await self.store.take_state(state) is None:  # spent by a concurrent request meanwhile: single use holds
            return self._fail("unknown, used or expired state; start the authorization again")
        if error := params.get("error"):
            description = params.get("error_description") or ""
            return self._fail(f"the provider refused: {error} {description}".strip())
        if pending.purpose == _LOGIN:
            return await self._complete_login(pending, params.get("code"), params.get("iss"))
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

    async def _complete_login(self, pending: PendingState, code: str | None, iss: str | None) -> Response:
        assert self._login is not None and self._sessions is not None
        if not code:
            return self._fail("the authorization server's answer has no code")
        if iss is not None and not same_url(iss, self._login.provider.issuer):
            return self._fail("the login answer came from an unexpected issuer")
        try:
            principal = await self._login.principal(code, pending.code_verifier, self.callback_url)
        except OAuthError as exc:
            return self._fail(f"logging in failed: {exc}")
        logger.info("browser logged in as %s", principal.subject)
        response = RedirectResponse(pending.return_to or f"{self._prefix}/success?login=1", status_code=303)
        self._sessions.set(response, principal)
        return response

    # ---- consent -------------------------------------------------------------------------------------------------

    async def _needs_consent(self, principal: Principal) -> bool:
        """A flow on behalf of an OAuth client uses the master's own client id at the provider: the person
        approves each client once (the confused-deputy defence of the MCP authorization spec)."""
        if self._sessions is None or principal.client_id is None:
            return False
        return await self.consents.get((principal.issuer, principal.subject, principal.client_id)) is None

    def _consent_page(self, request: Request, state: str, pending: PendingState, location: str) -> Response:
        assert self._sessions is not None
        parts = urlsplit(location)
        target = f"{parts.scheme}://{parts.netloc}{parts.path}"
        scopes = pending.scope or " ".join(dict(parse_qsl(parts.query)).get("scope", "").split()) or "(none)"
        csrf = self._sessions.csrf(request, f"consent|{state}")
        e = html.escape
        details = (
            f"<ul><li>client: <b>{e(pending.principal.client_id or '')}</b></li>"
            f"<li>server: <b>{e(pending.server_id)}</b></li><li>scopes: <b>{e(scopes)}</b></li>"
            f"<li>you will be sent to: <b>{e(target)}</b>, and back to <b>{e(self.callback_url)}</b></li></ul>"
            f"<form method='post' action='{e(self._prefix)}/consent'>"
            f"<input type='hidden' name='state' value='{e(state)}'><input type='hidden' name='csrf' value='{e(csrf)}'>"
            "<button name='decision' value='approve'>Approve</button> "
            "<button name='decision' value='deny'>Deny</button></form>"
        )
        body = "An application wants master-mcp to connect a server for you with master-mcp's own registration."
        return _page("Allow this application?", body, extra_html=details)

    async def consent(self, request: Request) -> Response:
        form = await request.form()
        state, csrf, decision = form.get("state"), form.get("csrf"), form.get("decision")
        if not isinstance(state, str) or not isinstance(csrf, str) or self._sessions is None:
            return self._fail("the consent form is incomplete")
        pending = await self.store.peek_state(state)
        if pending is None:
            return self._fail("unknown, used or expired state; start the authorization again")
        if _digest(request.cookies.get(COOKIE, "")) != pending.browser:
            return self._fail("this authorization was started in another browser session")
        who = self._sessions.principal(request)
        if who is None or who.key != pending.principal.key:
            return self._fail("this browser is logged in as someone other than the person asked for consent")
        expected = self._sessions.csrf(request, f"consent|{state}")
        if not hmac.compare_digest(csrf.encode("utf-8"), expected.encode("utf-8")):
            return self._fail("the consent form is stale or forged; start the authorization again")
        strategy = self._strategies(pending.server_id)
        if decision != "approve" or strategy is None or pending.principal.client_id is None:
            await self.store.take_state(state)
            return self._fail(f"you did not allow the application to connect {pending.server_id}")
        key = (pending.principal.issuer, pending.principal.subject, pending.principal.client_id)
        await self.consents.put(key, time.time())
        try:
            location = await strategy.authorization_request(state, _challenge(pending.code_verifier), pending.scope)
        except OAuthError as exc:
            return self._fail(f"the provider of {pending.server_id!r} cannot be reached: {exc}")
        return RedirectResponse(location, status_code=303)

    async def success(self, request: Request) -> Response:
        if request.query_params.get("login"):
            return _page("Logged in", "You are logged in to master-mcp. You can close this window.")
        server = request.query_params.get("server_id") or "the server"
        return _page("Authorized", f"master-mcp can now use {server} for you. You can close this window.")

    async def error(self, request: Request) -> Response:
        message = request.query_params.get("message") or "authorization failed"
        return _page("Authorization failed", message[:500], status=400)
