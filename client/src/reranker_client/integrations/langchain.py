"""LangChain: a document compressor that reranks retrieved documents.

    from reranker_client.integrations.langchain import TritonRerank
    compressor = TritonRerank(url="localhost:8001", top_n=5)
    ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, PrivateAttr

from ..sync_client import RerankClient


class TritonRerank(BaseDocumentCompressor):
    url: Any = "localhost:8001"  # str or list of str
    protocol: str = "grpc"
    model: str = "rerank"
    top_n: Optional[int] = 3
    timeout: float = 30.0
    model_config = ConfigDict(arbitrary_types_allowed=True)
    _client: Optional[RerankClient] = PrivateAttr(default=None)

    @property
    def client(self) -> RerankClient:
        if self._client is None:
            self._client = RerankClient(self.url, protocol=self.protocol, model=self.model, timeout=self.timeout)
        return self._client

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks = None) -> Sequence[Document]:
        if not documents:
            return []
        results = self.client.rerank(query, [d.page_content for d in documents], top_k=self.top_n)
        out = []
        for r in results:
            source = documents[r.index]
            metadata = {**source.metadata, "relevance_score": r.score, "rerank_logit": r.logit,
                        "rerank_truncated": r.truncated}
            out.append(Document(page_content=source.page_content, metadata=metadata, id=source.id))
        return out
