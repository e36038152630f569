"""LangChain: a document compressor that reranks retrieved documents.

    from langchain_classic.retrievers import ContextualCompressionRetriever  # LangChain 1.x
    from reranker_client.integrations.langchain import TritonRerank
    compressor = TritonRerank(url="localhost:8001", top_n=5)
    ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)

Every client option is a field (url, protocol, model, timeout, retries, max_concurrency, tls,
headers, token_counter, backoff_base, backoff_max), as are the call's `long_documents`, `strict`
and `max_length` (tokens per pair, as the client's rerank(max_length=)), or pass a ready `client=RerankClient(...)`
and/or `async_client=AsyncRerankClient(...)`. `api_key` (SecretStr, default from the environment
variable TRITON_RERANK_API_KEY) is sent as `authorization: Bearer <key>` and never serialized.
`acompress_documents` runs on AsyncRerankClient (no thread hop). Unknown keywords raise.

LangChain has no lifecycle hook for a compressor: close the clients it built with `close()` /
`await aclose()`, or use it as a context manager (`with TritonRerank(...) as compressor:`,
`async with`). An unclosed async client's connections are still closed when the event loop run
by asyncio.run ends.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, Union

from . import _common

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.utils import secret_from_env
except ImportError as err:  # the [langchain] extra is not installed
    raise _common.missing_extra("langchain", err) from err
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from ..async_client import AsyncRerankClient
from ..endpoints import DEFAULT_BACKOFF_BASE_S, DEFAULT_BACKOFF_MAX_S
from ..results import RerankResult
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions
from ._pydantic import PydanticAdapter


class TritonRerank(PydanticAdapter, BaseDocumentCompressor):
    url: Union[str, List[str]] = "localhost:8001"
    protocol: Literal["grpc", "http"] = "grpc"
    model: str = "rerank"
    top_n: Optional[int] = 3
    timeout: Optional[float] = None  # None: the client's default, derived from the server's limits
    retries: int = 3
    max_concurrency: int = 4
    tls: Optional[TLSOptions] = None
    headers: Dict[str, str] = Field(default_factory=dict)
    # exclude=True: never in model_dump()/JSON; a round trip reads it from the environment again.
    api_key: Optional[SecretStr] = Field(
        default_factory=secret_from_env(_common.API_KEY_ENV, default=None), exclude=True
    )
    token_counter: Optional[Callable[[str], int]] = Field(default=None, exclude=True)
    backoff_base: float = DEFAULT_BACKOFF_BASE_S
    backoff_max: float = DEFAULT_BACKOFF_MAX_S
    long_documents: _common.LongDocuments = _common.DEFAULT_LONG_DOCUMENTS
    # False: a text over the server's byte limit is cut to its head and marked truncated (as the
    # built-in rerankers truncate); True: it fails the call, naming the document.
    strict: bool = False
    # Tokens per query+document pair (FlagReranker's compute_score(max_length=N)); None: the
    # server's max_length. Outside the server's published range the call raises, naming it.
    max_length: Optional[int] = None
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
            kept = {k: v for k, v in source.metadata.items() if k not in _common.META_KEYS}  # no stale span
            metadata = {**kept, **_scored(result)}
            out.append(Document(page_content=source.page_content, metadata=metadata, id=source.id))
        return out

    def _request(
        self, query: str, documents: Sequence[Document]
    ) -> Tuple[_common.Clients, str, List[str], Optional[int], _common.LongDocuments, bool, Optional[int]]:
        """The arguments of `_common.rerank_sync`/`rerank_async`, the same for both."""
        return (
            self._get_clients(),
            query,
            [d.page_content for d in documents],
            self.top_n,
            self.long_documents,
            self.strict,
            self.max_length,
        )

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks = None
    ) -> Sequence[Document]:
        """The top_n documents by relevance, `metadata["relevance_score"]` set (Cohere's key)."""
        if not documents:
            return []
        ranked = _common.rerank_sync(*self._request(query, documents))
        return self._documents(documents, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        ranked = await _common.rerank_async(*self._request(query, documents))
        return self._documents(documents, ranked)


def _scored(result: Optional[RerankResult]) -> Dict[str, Any]:
    score = _common.EMPTY_SCORE if result is None else result.score
    return {"relevance_score": score, **_common.result_meta(result)}
