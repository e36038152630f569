"""The ASGI app: routes, error handlers and the middleware stack, wired from Settings."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from . import cohere_routes, discovery_routes, ops_routes, tei_routes
from .auth import AuthMiddleware, KeyChecker
from .backend import Backend
from .body_limit import BodyLimitMiddleware
from .errors import ApiError, not_found, response, validation_message
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
        description="Cohere/Jina `/v1/rerank`, `/v2/rerank`, and `/rerank` (TEI `texts` or "
        "Cohere/Jina/vLLM `documents`) on Triton; TEI `/info`, OpenAI-style `/v1/models`.",
        version="0.1.0",
        lifespan=lifespan,
        # A trailing slash is answered 404 with a hint, never a 307: httpx (cohere SDK, LiteLLM)
        # does not follow a redirect on POST, and the Location would carry the Host header's scheme.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.keys = KeyChecker(settings.api_keys, settings.api_keys_file)
    app.state.metrics = metrics
    for module in (cohere_routes, tei_routes, discovery_routes, ops_routes):
        app.include_router(module.router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return response(request.scope, err)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        return response(request.scope, ApiError(422, validation_message(err.errors()), "Validation"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        # Unknown paths name the routes (and a base URL ending in /v1 says so), in the API's shape.
        if err.status_code == 404:
            return response(request.scope, not_found(request.method, request.url.path))
        return response(request.scope, ApiError(err.status_code, str(err.detail), "Validation", headers=err.headers))

    # Added last = outermost: metrics see every answer (the 401s and the body limit's 413 too);
    # the key is checked before the body limit reads the body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, keys=app.state.keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
