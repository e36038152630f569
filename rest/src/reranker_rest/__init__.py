"""Cohere/Jina and TEI rerank REST API in front of Triton, on triton-reranker-client."""

from .app import create_app
from .settings import Settings

__version__ = "0.1.0"
__all__ = ["create_app", "Settings"]
