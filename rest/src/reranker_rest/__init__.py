"""Cohere/Jina and TEI rerank REST API in front of Triton, on triton-reranker-client."""

__version__ = "0.1.0"  # before the imports: the routes report it

from .app import create_app  # noqa: E402
from .settings import Settings  # noqa: E402

__all__ = ["create_app", "Settings"]
