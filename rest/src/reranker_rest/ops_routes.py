"""Liveness, readiness (Triton's `rerank` model ready) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

router = APIRouter(tags=["operations"])

# Below the chart's probe timeoutSeconds, so a hung Triton reads as "not ready", not as a
# probe timeout of this process.
READY_TIMEOUT_S = 2.0


@router.get("/health")
async def health() -> dict:
    """This process answers (liveness). Says nothing about Triton: see /ready."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 when Triton reports the rerank model ready on at least one endpoint, else 503."""
    try:
        is_ready = await asyncio.wait_for(request.app.state.backend.ready(), READY_TIMEOUT_S)
    except asyncio.TimeoutError:
        is_ready = False
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
