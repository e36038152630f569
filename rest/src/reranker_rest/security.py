"""The auth declaration of the rerank and discovery routes, for OpenAPI ("Authorize" in /docs).
The check itself is AuthMiddleware's, made from the headers before the body is read; health,
readiness, metrics and the docs stay open (probes and Prometheus reach them inside the
cluster, behind the chart's NetworkPolicy)."""

from __future__ import annotations

from fastapi import Security
from fastapi.security import HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="an API key from REST_API_KEYS / REST_API_KEYS_FILE")


async def require_key(_=Security(_bearer)) -> None:
    """Declares the bearer scheme; AuthMiddleware has already checked the key."""
