"""Client for bge-reranker-v2-m3 served by Triton's `rerank` ensemble."""

from . import errors
from .async_client import AsyncRerankClient
from .base import ClientConfig
from .errors import *  # noqa: F403 - the typed errors, listed once: errors.__all__
from .results import RerankResult
from .sync_client import RerankClient
from .tritonclient_adapter import TLSOptions


def _version() -> str:
    # One source: the version pip recorded from client/pyproject.toml. A source checkout on
    # PYTHONPATH without an install has no metadata; say so instead of inventing a number.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("triton-reranker-client")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
__all__ = [
    "RerankClient",
    "AsyncRerankClient",
    "ClientConfig",
    "RerankResult",
    "TLSOptions",
    "__version__",
]
__all__ += errors.__all__
