"""The SDK's OpenTelemetry span per front request: made while a tracer provider is installed, skipped otherwise.

The recording tracer provider below stands in for an OpenTelemetry SDK, which is not a dependency; it records the
spans the SDK starts through the OpenTelemetry API, which is the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from mcp import Client
from mcp.shared import _otel as sdk_otel
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)
from opentelemetry.util._once import Once

from master_mcp.tracing import SpansWhenCollected
from tests.conftest import HttpBackend, make_config, serve_master, stdio_server, wait_until

pytestmark = pytest.mark.anyio


class _Recording(TracerProvider, Tracer):
    """A tracer provider that is its own tracer, and keeps the name and kind of every span started, and the error
    status set on any."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, SpanKind]] = []
        self.failed: dict[str, str | None] = {}

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return self

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, **kwargs: Any) -> Span:
        self.spans.append((name, kind))
        return _Span(self, name)

    @contextmanager
    def start_as_current_span(
        self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, **kwargs: Any
    ) -> Iterator[Span]:
        yield self.start_span(name, context, kind)


class _Span(NonRecordingSpan):
    """A span that records nothing but the error status set on it, into its provider."""

    def __init__(self, provider: _Recording, name: str) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)
        self._provider = provider
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        if code is StatusCode.ERROR:
            self._provider.failed[self._name] = description


@contextmanager
def fresh_tracing() -> Iterator[_Recording]:
    """A recording provider, not installed yet; the process's tracing is put back afterwards. OpenTelemetry lets a
    process set its provider once, so the two globals it keeps are reset around the test, and the SDK's tracer (a
    proxy that keeps the first real tracer it finds) is a fresh one for the test only."""
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, sdk_otel._tracer
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    sdk_otel._tracer = trace.get_tracer("mcp-python-sdk")
    try:
        yield _Recording()
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE, sdk_otel._tracer = saved


@contextmanager
def installed() -> Iterator[_Recording]:
    with fresh_tracing() as provider:
        trace.set_tracer_provider(provider)
        yield provider


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Recording]:
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    with fresh_tracing() as recording:
        yield recording


async def test_front_requests_get_spans_once_a_tracer_provider_is_installed(provider: _Recording) -> None:
    async with serve_master(make_config(stdio_server("one"))) as (master, url):
        layer = next(m for m in master.lowlevel.middleware if isinstance(m, SpansWhenCollected))
        entered: list[str] = []
        traced = layer._traced

        async def counting(ctx: Any, call_next: Any) -> Any:
            entered.append(ctx.method)
            return await traced(ctx, call_next)

        layer._traced = counting
        async with Client(url, mode="legacy") as client:
            await client.call_tool("one__echo", {"text": "untraced"})
            assert entered == [] and provider.spans == []  # nothing collects: the SDK's span work is skipped

            trace.set_tracer_provider(provider)  # as `opentelemetry-instrument` or an embedder would, later on
            result = await client.call_tool("one__echo", {"text": "traced"})
    assert not result.is_error
    assert entered == ["tools/call"]
    assert ("tools/call one__echo", SpanKind.SERVER) in provider.spans


async def test_a_lane_call_gets_its_client_span() -> None:
    """A 2026-07-28 call on the lane (`backends/lane.py`) is sent without the SDK's dispatcher, which made the client
    span of every backend request: the lane makes it itself, while a provider is installed."""
    backend = HttpBackend("--name", "remote")
    try:
        config = make_config({"id": "remote", "type": "http", "url": backend.url})
        async with serve_master(config) as (master, url), Client(url, mode="2026-07-28") as client:
            await client.call_tool("remote__echo", {"text": "opens the lane"})
            await wait_until(lambda: master.pool.get("remote").has_lane)
            with installed() as provider:
                assert not (await client.call_tool("remote__echo", {"text": "traced"})).is_error
    finally:
        backend.stop()
    assert ("MCP send tools/call echo", SpanKind.CLIENT) in provider.spans


async def test_a_backend_call_gets_its_client_span_and_its_error() -> None:
    """The master sends its backend requests itself (`backends/watched.py`), no longer through the SDK's dispatcher,
    which made the client span of each: it makes them, and marks one that timed out failed."""
    async with serve_master(make_config(stdio_server("one", timeout_s=2))) as (_, url), Client(url) as client:
        with installed() as provider:
            assert not (await client.call_tool("one__echo", {"text": "traced"})).is_error
            assert (await client.call_tool("one__slow", {"seconds": 10})).is_error
    assert ("MCP send tools/call echo", SpanKind.CLIENT) in provider.spans
    assert provider.failed.get("MCP send tools/call slow") == "Request 'tools/call' timed out"
    assert "MCP send tools/call echo" not in provider.failed
