"""`/metrics` in Prometheus format: what the master did (requests, latencies) and what it holds (backends,
sessions), each scrape reading the live state rather than a copy kept up to date by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _State(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._read()
        up = GaugeMetricFamily("master_mcp_backend_up", "1 when the backend's shared session is up", labels=["server"])
        restarts = GaugeMetricFamily(
            "master_mcp_backend_restarts", "Times the backend came back after a drop", labels=["server"]
        )
        sessions = GaugeMetricFamily(
            "master_mcp_backend_sessions",
            "Open backend sessions (shared, per principal, per profile)",
            labels=["server"],
        )
        breaker = GaugeMetricFamily(
            "master_mcp_backend_breaker_open", "1 while the backend's circuit breaker refuses calls", labels=["server"]
        )
        for server in state["servers"]:
            up.add_metric([server["id"]], 1.0 if server["state"] == "up" else 0.0)
            breaker.add_metric([server["id"]], 0.0 if server.get("breaker", "closed") == "closed" else 1.0)
            restarts.add_metric([server["id"]], float(server.get("restarts", 0)))
            sessions.add_metric([server["id"]], float(server.get("sessions", 0)))
        fronts = GaugeMetricFamily("master_mcp_front_sessions", "Front sessions that can be sent notifications")
        fronts.add_metric([], float(state["front_sessions"]))
        yield from (up, restarts, sessions, breaker, fronts)


class Metrics:
    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "master_mcp_requests",
            "Requests forwarded to backends, by method, server and outcome",
            ["method", "server", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "master_mcp_backend_request_seconds",
            "Time a backend took to answer a forwarded request",
            ["method", "server"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "master_mcp_config_reloads", "Reloads of servers.yaml, by outcome", ["outcome"], registry=self.registry
        )
        self.registry.register(_State(read_state))
        self._counted: dict[tuple[str, str, str], Counter] = {}
        self._timed: dict[tuple[str, str], Histogram] = {}

    def observe(self, method: str, server: str, outcome: str, seconds: float | None = None) -> None:
        # The labelled children are kept: `labels()` checks, converts and locks on every call, and this runs on
        # every forwarded request. There are as many as label combinations, which the registry holds anyway.
        counted = self._counted.get((method, server, outcome))
        if counted is None:
            counted = self._counted[(method, server, outcome)] = self.requests.labels(method, server, outcome)
        counted.inc()
        if seconds is not None:
            timed = self._timed.get((method, server))
            if timed is None:
                timed = self._timed[(method, server)] = self.latency.labels(method, server)
            timed.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
