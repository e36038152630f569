"""Prometheus metrics of the HTTP front door, in a registry per app (several apps can live
in one process, e.g. in tests). Triton's own metrics stay on its :8002."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

# Known paths only as label values: an unknown path must not create a new time series.
ROUTES = (
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/infinity/rerank",
    "/info",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "reranker_rest_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "reranker_rest_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.documents = Counter(
            "reranker_rest_documents", "documents scored by Triton for this route", ["route"], registry=self.registry
        )


class MetricsMiddleware:
    """Outermost layer, so 401 and 413 answers are counted too."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = [500]

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            # A caller that left before its answer is counted as 499 (set by BodyLimitMiddleware).
            status_code = (scope.get("state") or {}).get("status", status[0])
            self.metrics.requests.labels(route, str(status_code)).inc()
