"""The ASGI app: routes, error handlers and the middleware stack, wired from Settings."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from . import cohere_routes, ops_routes, tei_routes
from .auth import KeyChecker
from .backend import Backend
from .body_limit import BodyLimitMiddleware
from .errors import ApiError, response, validation_message
from .metrics import Metrics, MetricsMiddleware
from .settings import Settings


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or Settings.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The gRPC channels belong to the serving event loop: the client is made inside it.
        app.state.backend = Backend(settings)
        try:
            yield
        finally:
            await app.state.backend.close()

    app = FastAPI(
        title="bge-reranker-v2-m3 rerank API",
        description="Cohere/Jina `/v1/rerank`, `/v2/rerank` and TEI `/rerank` on Triton.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = KeyChecker(settings.api_keys, settings.api_keys_file)
    app.state.metrics = metrics
    for module in (cohere_routes, tei_routes, ops_routes):
        app.include_router(module.router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return response(request.url.path, err)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, err: RequestValidationError):
        return response(request.url.path, ApiError(422, validation_message(err.errors()), "Validation"))

    # Added last = outermost: metrics see every answer, including the body limit's 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
