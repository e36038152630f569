"""Errors in each API's own shape, and the one table from the client's typed errors to HTTP.

Cohere (and Jina) answer `{"message": ...}`; TEI answers `{"error": ..., "error_type": ...}`.
The shape follows the route family, so a Cohere SDK and a TEI client each parse their own."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

from starlette.responses import JSONResponse

from reranker_client import errors as client_errors

TEI_PATHS = ("/rerank",)


class ApiError(Exception):
    """An answer other than 200; `message` names the field when the input is at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "Validation",
        retry_after: Optional[int] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


def from_client_error(err: client_errors.RerankError, retry_after: int) -> ApiError:
    """The client already retried what is retryable (within the deadline): what is left is final.
    Order matters: client_errors.OverloadedError is a client_errors.ServerUnavailableError."""
    if isinstance(err, client_errors.InvalidInputError):
        return ApiError(400, str(err), "Validation")
    if isinstance(err, client_errors.OverloadedError):
        return ApiError(429, f"the model server is overloaded: {err}", "Overloaded", retry_after)
    if isinstance(err, (client_errors.ServerUnavailableError, client_errors.ModelNotReadyError)):
        return ApiError(503, f"the model server is unavailable: {err}", "Unhealthy", retry_after)
    if isinstance(err, client_errors.DeadlineExceededError):
        return ApiError(504, f"deadline exceeded: {err}", "Backend")
    if isinstance(err, client_errors.PermissionDeniedError):
        # Triton (or a gateway before it) refused *this service's* credentials: not the caller's fault.
        return ApiError(502, f"the model server refused this service's credentials: {err}", "Backend")
    return ApiError(502, f"the model server failed: {err}", "Backend")


def response(path: str, err: ApiError) -> JSONResponse:
    body = {"error": err.message, "error_type": err.error_type} if path in TEI_PATHS else {"message": err.message}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


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


def validation_message(errors: Sequence[dict]) -> str:
    """FastAPI's validation errors as one line per field, the field first."""
    parts = []
    for error in errors[:10]:
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{field_path(error.get('loc', ()))}: {msg}")
    return "; ".join(parts)
