"""The HTTP front: streamable HTTP at `/mcp` plus `/healthz` and `/readyz`, in one Starlette app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from master_mcp.front_http import AdaptiveSessionManager
from master_mcp.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from master_mcp.net import is_loopback
from master_mcp.redis_link import StoreUnavailable
from master_mcp.server import MasterServer

logger = logging.getLogger(__name__)

__all__ = ["create_app", "is_loopback", "transport_security", "trusted_hosts"]

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def transport_security(master: MasterServer) -> TransportSecuritySettings:
    """Host/Origin validation against DNS rebinding: loopback names, the bound host and the public base URL."""
    settings = master.config.master
    hosts = {*(f"{name}:*" for name in _LOOPBACK_NAMES), f"{settings.host}:*"}
    origins = {*(f"http://{name}:*" for name in _LOOPBACK_NAMES)}
    if settings.base_url:
        parts = urlsplit(settings.base_url)
        if parts.hostname:
            hosts |= {parts.netloc, f"{parts.hostname}:*"}
            origins.add(f"{parts.scheme}://{parts.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=sorted(hosts), allowed_origins=sorted(origins)
    )


class RefuseWhileDraining:
    """While the master drains for shutdown, new requests (POSTs) get 503 with a JSON-RPC error; streams and calls
    already under way go on.

    A class, not a function: Starlette would take a plain function for a request handler, not an ASGI app."""

    def __init__(self, master: MasterServer, endpoint: ASGIApp) -> None:
        self._master = master
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._master.draining and scope["type"] == "http" and scope["method"] == "POST":
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "the master is shutting down"}}
            await JSONResponse(body, status_code=503, headers={"retry-after": "1"})(scope, receive, send)
            return
        await self._endpoint(scope, receive, send)


def protect(master: MasterServer, endpoint: ASGIApp) -> ASGIApp:
    """With inbound auth configured, `/mcp` answers 400/401/403 (RFC 6750) before any MCP is read."""
    resource_server = master.auth.resource_server
    return endpoint if resource_server is None else resource_server.guard(endpoint)


def create_app(master: MasterServer, *, stateless: bool | None = None, json_response: bool = False) -> Starlette:
    """`stateless`: None takes `master.stateless` from the config."""
    # Request lines of /oauth/callback carry authorization codes: no access log, whatever handlers exist.
    logging.getLogger("uvicorn.access").disabled = True
    manager = AdaptiveSessionManager(
        backend_may_log=master.backend_may_log,
        app=master.lowlevel,
        json_response=json_response,
        stateless=master.config.master.stateless if stateless is None else stateless,
        security_settings=transport_security(master),
    )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(master.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def readyz(request: Request) -> JSONResponse:
        ready, servers = master.readiness()
        # The store is shown, not counted: calls to backends that need no stored token work without it, and a
        # shared store that is down would otherwise take every replica out of service at once.
        body = {"ready": ready, "servers": servers, "store": await master.stores.status()}
        return JSONResponse(body, status_code=200 if ready else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with master.running(), manager.run():
                yield
        except StoreUnavailable as exc:
            logger.error("cannot start: %s", exc)
            raise

    flows = master.auth.flows
    resource_server = master.auth.resource_server
    return Starlette(
        # Every route, not only /mcp, answers only to the names it is reached by (DNS rebinding).
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts(master))],
        routes=[
            Route(
                master.config.master.path,
                endpoint=RefuseWhileDraining(master, protect(master, StreamableHTTPASGIApp(manager))),
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *(flows.routes if flows is not None else []),
            *(resource_server.routes if resource_server is not None else []),
        ],
        lifespan=lifespan,
    )


def trusted_hosts(master: MasterServer) -> list[str]:
    settings = master.config.master
    hosts = {"localhost", "127.0.0.1", "::1", "[::1]", settings.host}
    if settings.base_url and (name := urlsplit(settings.base_url).hostname):
        hosts.add(name)
    return sorted(hosts)
