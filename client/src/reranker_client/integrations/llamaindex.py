"""LlamaIndex: a node postprocessor that reranks retrieved nodes.

    from reranker_client.integrations.llamaindex import TritonRerank
    query_engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[TritonRerank(top_n=5)])
"""

from __future__ import annotations

from typing import Any, List, Optional

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from ..sync_client import RerankClient


class TritonRerank(BaseNodePostprocessor):
    url: Any = Field(default="localhost:8001", description="host:port, or a list of them")
    protocol: str = Field(default="grpc")
    model: str = Field(default="rerank")
    top_n: Optional[int] = Field(default=3)
    timeout: float = Field(default=30.0)
    _client: Optional[RerankClient] = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "TritonRerank"

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("query_bundle: a query is required to rerank")
        if not nodes:
            return []
        if self._client is None:
            self._client = RerankClient(self.url, protocol=self.protocol, model=self.model, timeout=self.timeout)
        # As LlamaIndex's own rerankers do: the text plus the metadata meant for embedding.
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        results = self._client.rerank(query_bundle.query_str, texts, top_k=self.top_n)
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in results]
