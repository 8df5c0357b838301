"""OpenTelemetry spans for front requests, made only where something collects them.

The SDK wraps every request a server handles in a span, and its server tracer is a no-op until an OpenTelemetry
SDK is installed as the tracer provider. The no-op still costs about 30 Python calls per forwarded call (its
attributes, context lookups and two context managers; cProfile over 300 calls: 2,333 -> 2,305 in the master). So
the SDK's span middleware runs only once a tracer provider is installed, which is checked per request until one is
(a provider, once set, stays): `opentelemetry-instrument master-mcp serve`, or an embedder that sets one after the
master is built, gets its spans as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared._otel import inject_trace_context, otel_span
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, StatusCode, get_tracer_provider


class SpansWhenCollected:
    """A server middleware that runs `traced` while a tracer provider is installed, and steps aside otherwise."""

    def __init__(self, traced: ServerMiddleware[Any]) -> None:
        self._traced = traced
        self._collected = False

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if not self._collected:
            # Until a provider is set, OpenTelemetry hands out its proxy, whose spans record nothing.
            if isinstance(get_tracer_provider(), ProxyTracerProvider):
                return await call_next(ctx)
            self._collected = True
        return await self._traced(ctx, call_next)


def spans_when_collected(server: Server[Any]) -> None:
    """Make the SDK's span middleware on `server` run only while a tracer provider is installed."""
    server.middleware = [
        SpansWhenCollected(layer) if isinstance(layer, OpenTelemetryMiddleware) else layer
        for layer in server.middleware
    ]


@contextmanager
def backend_span(method: str, target: object, meta: dict[str, Any], request_id: object) -> Iterator[Span | None]:
    """The client span of a backend request the master sends itself (the SDK's dispatcher made it for the
    requests it sent), with the trace context passed on in `meta`, as the dispatcher does; None while no tracer
    provider is installed."""
    if isinstance(get_tracer_provider(), ProxyTracerProvider):
        yield None
        return
    name = f"MCP send {method}{f' {target}' if isinstance(target, str) else ''}"
    attributes = {"mcp.method.name": method, "jsonrpc.request.id": str(request_id)}
    with otel_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        inject_trace_context(meta)
        yield span


def backend_error(span: Span | None, code: int, message: str) -> None:
    """Mark a backend request's span with the error it was answered with (or its own timeout), as the SDK does."""
    if span is not None:
        span.set_attributes({"error.type": str(code), "rpc.response.status_code": str(code)})
        span.set_status(StatusCode.ERROR, message)
