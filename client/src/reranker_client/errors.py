"""Typed errors: callers branch on the class, never on message text. The package exports
every class listed in __all__."""

from typing import Optional

__all__ = [
    "RerankError",
    "InvalidInputError",
    "ServerUnavailableError",
    "OverloadedError",
    "ModelNotReadyError",
    "PermissionDeniedError",
    "DeadlineExceededError",
    "ClientClosedError",
]


class RerankError(Exception):
    """Base class for every error this client raises."""


class InvalidInputError(RerankError, ValueError):
    """The request is malformed; the message names the field and the limit. Never retried.
    `index`: the caller's document that is at fault, where one is (else None), so a wrapper
    that sends a subset of its caller's documents can name the caller's own position."""

    def __init__(self, message: str = "", *, index: Optional[int] = None) -> None:
        super().__init__(message)
        self.index = index


class ServerUnavailableError(RerankError):
    """No endpoint answered (connection refused/reset, UNAVAILABLE). Retried within the deadline."""


class OverloadedError(ServerUnavailableError):
    """The server's queue is full or its queue timeout expired: load was shed. Retried."""


class ModelNotReadyError(RerankError):
    """The server is up but the model is missing or not ready."""


class PermissionDeniedError(RerankError):
    """The server or a gateway refused the credentials (headers, TLS). Never retried."""


class DeadlineExceededError(RerankError):
    """The call's deadline passed (gRPC DEADLINE_EXCEEDED, a client-side timeout of any kind).
    Never retried and never marks an endpoint down: the endpoint may be healthy and the
    caller's budget is spent either way."""


class ClientClosedError(RerankError, RuntimeError):
    """The client was used after close(). A RuntimeError too, as the bare error it replaces."""
