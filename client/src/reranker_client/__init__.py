"""Client for bge-reranker-v2-m3 served by Triton's `rerank` ensemble."""

import logging

from . import errors
from .async_client import AsyncRerankClient
from .base import ClientConfig
from .errors import *  # noqa: F403 - the typed errors, listed once: errors.__all__
from .results import RerankResult
from .sync_client import RerankClient
from .tritonclient_adapter import TLSOptions

# A library adds only a NullHandler (the logging HOWTO's rule for libraries): without it, an
# application that never configured logging gets every WARNING (endpoint down, giving up)
# printed to stderr by logging's last-resort handler, hundreds of lines under overload.
logging.getLogger(__name__).addHandler(logging.NullHandler())


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
