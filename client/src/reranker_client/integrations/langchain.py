"""LangChain: a document compressor that reranks retrieved documents.

    from reranker_client.integrations.langchain import TritonRerank
    compressor = TritonRerank(url="localhost:8001", top_n=5)
    ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)

Every client option is a field (url, protocol, model, timeout, retries, max_concurrency, tls,
headers, token_counter), or pass a ready `client=RerankClient(...)` and/or
`async_client=AsyncRerankClient(...)`. `api_key` (SecretStr, default from the environment
variable TRITON_RERANK_API_KEY) is sent as `authorization: Bearer <key>` and never serialized.
`acompress_documents` runs on AsyncRerankClient (no thread hop). Unknown keywords raise.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Union

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.utils import secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from ..async_client import AsyncRerankClient
from ..results import RerankResult
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions
from . import _common
from ._pydantic import PydanticAdapter


class TritonRerank(PydanticAdapter, BaseDocumentCompressor):
    url: Union[str, List[str]] = "localhost:8001"
    protocol: Literal["grpc", "http"] = "grpc"
    model: str = "rerank"
    top_n: Optional[int] = 3
    timeout: float = 30.0
    retries: int = 3
    max_concurrency: int = 4
    tls: Optional[TLSOptions] = None
    headers: Dict[str, str] = Field(default_factory=dict)
    # exclude=True: never in model_dump()/JSON; a round trip reads it from the environment again.
    api_key: Optional[SecretStr] = Field(
        default_factory=secret_from_env(_common.API_KEY_ENV, default=None), exclude=True
    )
    token_counter: Optional[Callable[[str], int]] = Field(default=None, exclude=True)
    long_documents: _common.LongDocuments = _common.DEFAULT_LONG_DOCUMENTS
    client: Optional[RerankClient] = Field(default=None, exclude=True)
    async_client: Optional[AsyncRerankClient] = Field(default=None, exclude=True)

    # extra="forbid": TritonRerank(top_k=5) raises instead of silently keeping top_n=3.
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())
    _clients: Optional[_common.Clients] = PrivateAttr(default=None)

    @staticmethod
    def _documents(documents: Sequence[Document], ranked: _common.Ranked) -> List[Document]:
        out = []
        for position, result in ranked:
            source = documents[position]
            extra = _scored(result)
            out.append(Document(page_content=source.page_content, metadata={**source.metadata, **extra}, id=source.id))
        return out

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks = None
    ) -> Sequence[Document]:
        """The top_n documents by relevance, `metadata["relevance_score"]` set (Cohere's key)."""
        if not documents:
            return []
        ranked = _common.rerank_sync(
            self._get_clients(), query, [d.page_content for d in documents], self.top_n, self.long_documents
        )
        return self._documents(documents, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        ranked = await _common.rerank_async(
            self._get_clients(), query, [d.page_content for d in documents], self.top_n, self.long_documents
        )
        return self._documents(documents, ranked)


def _scored(result: Optional[RerankResult]) -> Dict[str, Any]:
    if result is None:
        return {"relevance_score": _common.EMPTY_SCORE, "rerank_logit": None, "rerank_truncated": False}
    return {"relevance_score": result.score, "rerank_logit": result.logit, "rerank_truncated": result.truncated}
