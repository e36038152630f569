"""Errors in each API's own shape, and the one table from the client's typed errors to HTTP.

Cohere (and Jina) answer `{"message": ...}`; TEI answers `{"error": ..., "error_type": ...}`.
The shape follows the route family, so a Cohere SDK and a TEI client each parse their own; on
`/rerank`, which speaks both, it follows the body's dialect (both shapes while it is unknown).

Answers never carry what only an operator should see (Triton's addresses, its internal
messages): the client error behind a 5xx/429 is logged, and the caller gets a plain sentence."""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, MutableMapping, Optional, Sequence

from starlette.responses import JSONResponse

from reranker_client import errors as client_errors

TEI_PATHS = ("/rerank",)
log = logging.getLogger("reranker_rest")


class ApiError(Exception):
    """An answer other than 200; `message` names the field when the input is at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "Validation",
        retry_after: Optional[int] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


def from_client_error(err: client_errors.RerankError, retry_after: int, timeout_s: Optional[float]) -> ApiError:
    """The client already retried what is retryable (within the deadline): what is left is final.
    Order matters: client_errors.OverloadedError is a client_errors.ServerUnavailableError.
    Only input errors pass their text on (it names the caller's field); the others may name
    Triton's endpoints, so they are logged here and answered in general words."""
    if isinstance(err, client_errors.InvalidInputError):
        return ApiError(400, str(err), "Validation")
    log.warning("model server call failed: %s: %s", type(err).__name__, err)
    if isinstance(err, client_errors.OverloadedError):
        return ApiError(429, "the model server is overloaded: retry later", "Overloaded", retry_after)
    if isinstance(err, (client_errors.ServerUnavailableError, client_errors.ModelNotReadyError)):
        return ApiError(503, "the model server is unavailable: retry later", "Unhealthy", retry_after)
    if isinstance(err, client_errors.DeadlineExceededError):
        within = f"{timeout_s:g} s (REST_TIMEOUT_S)" if timeout_s else "the deadline derived from the server's limits"
        return ApiError(504, f"deadline exceeded: no answer within {within}", "Backend")
    if isinstance(err, client_errors.PermissionDeniedError):
        # Triton (or a gateway before it) refused *this service's* credentials: not the caller's fault.
        return ApiError(502, "the model server refused this service's credentials (see the service log)", "Backend")
    return ApiError(502, "the model server failed (see the service log)", "Backend")


def response(scope: MutableMapping[str, Any], err: ApiError) -> JSONResponse:
    tei = {"error": err.message, "error_type": err.error_type}
    cohere = {"message": err.message}
    if scope["path"] not in TEI_PATHS:
        body = cohere
    else:
        dialect = (scope.get("state") or {}).get("dialect")
        body = tei if dialect == "tei" else cohere if dialect == "cohere" else {**tei, **cohere}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


# A base URL ending in /v1 (the SDKs' most common mistake: they add /v1 or /v2 themselves).
_DOUBLED_VERSION = re.compile(r"^((?:/v[12])+?)(/v[12]/rerank|/rerank|/v1/models|/info)$")


def not_found(method: str, path: str) -> ApiError:
    match = _DOUBLED_VERSION.match(path)
    if match:
        prefix, route = match.groups()
        return ApiError(
            404,
            f"no route {path}: the base URL ends in {prefix} and the client adds {route} itself; "
            f"use the bare host (http://HOST:PORT) as the base URL, without {prefix}",
            "NotFound",
        )
    if path.endswith("/") and path.rstrip("/") in ("/v1/rerank", "/v2/rerank", "/rerank", "/info", "/v1/models"):
        return ApiError(404, f"no route {path}: drop the trailing slash ({path.rstrip('/')})", "NotFound")
    return ApiError(
        404,
        f"no route {method} {path}; rerank routes: POST /v1/rerank, /v2/rerank (Cohere, Jina), "
        "POST /rerank (TEI, vLLM, Infinity); GET /info, /v1/models, /health, /ready, /metrics, /docs",
        "NotFound",
    )


def field_path(loc: Sequence) -> str:
    """('body', 'documents', 3, 'text') -> 'documents[3].text'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """Validation errors as one line per field, the field first, named once: a check that
    already names its field (`documents[1]: ...`) is not prefixed again."""
    parts = []
    for error in errors[:10]:
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        field = field_path(error.get("loc", ()))
        named = field != "body" and re.match(rf"{re.escape(field)}(\[|\.|:)", msg)
        parts.append(msg if named or (field == "body" and re.match(r"^[\w.\[\]]+: ", msg)) else f"{field}: {msg}")
    return "; ".join(parts)
