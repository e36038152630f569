"""Client for bge-reranker-v2-m3 served by Triton's `rerank` ensemble."""

from .async_client import AsyncRerankClient
from .errors import (DeadlineExceededError, InvalidInputError, ModelNotReadyError, OverloadedError,
                     PermissionDeniedError, RerankError, ServerUnavailableError)
from .results import RerankResult
from .sync_client import RerankClient
from .base import ClientConfig
from .tritonclient_adapter import TLSOptions

__version__ = "0.1.0"
__all__ = ["RerankClient", "AsyncRerankClient", "ClientConfig", "RerankResult", "TLSOptions", "RerankError",
           "InvalidInputError", "ServerUnavailableError", "OverloadedError", "ModelNotReadyError", "PermissionDeniedError",
           "DeadlineExceededError"]
