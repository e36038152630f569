"""Haystack 2: a ranker component.

    from reranker_client.integrations.haystack import TritonRanker
    pipeline.add_component("ranker", TritonRanker(url="localhost:8001", top_k=5))
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional

from haystack import Document, component, default_from_dict, default_to_dict

from ..sync_client import RerankClient


@component
class TritonRanker:
    def __init__(self, url: Any = "localhost:8001", protocol: str = "grpc", model: str = "rerank",
                 top_k: Optional[int] = 10, timeout: float = 30.0) -> None:
        self.url, self.protocol, self.model, self.top_k, self.timeout = url, protocol, model, top_k, timeout
        self._client: Optional[RerankClient] = None

    def to_dict(self) -> Dict[str, Any]:
        return default_to_dict(self, url=self.url, protocol=self.protocol, model=self.model,
                               top_k=self.top_k, timeout=self.timeout)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TritonRanker":
        return default_from_dict(cls, data)

    def warm_up(self) -> None:
        if self._client is None:
            self._client = RerankClient(self.url, protocol=self.protocol, model=self.model, timeout=self.timeout)

    @component.output_types(documents=List[Document])
    def run(self, query: str, documents: List[Document], top_k: Optional[int] = None) -> Dict[str, List[Document]]:
        if not documents:
            return {"documents": []}
        self.warm_up()
        k = self.top_k if top_k is None else top_k
        results = self._client.rerank(query, [d.content or "" for d in documents], top_k=k)
        return {"documents": [replace(documents[r.index], score=r.score) for r in results]}
