"""The auth dependency of the rerank routes (health, readiness and metrics stay open: probes
and Prometheus reach them inside the cluster, behind the chart's NetworkPolicy)."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import HTTPBearer

# Declared for OpenAPI ("Authorize" in /docs); the check itself is KeyChecker's.
_bearer = HTTPBearer(auto_error=False, description="an API key from REST_API_KEYS / REST_API_KEYS_FILE")


async def require_key(request: Request, _=Security(_bearer)) -> None:
    request.app.state.keys.check(request.headers.get("authorization"))
