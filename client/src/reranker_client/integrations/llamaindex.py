"""LlamaIndex: a node postprocessor that reranks retrieved nodes.

    from reranker_client.integrations.llamaindex import TritonRerank
    query_engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[TritonRerank(top_n=5)])

As LlamaIndex's own rerankers: ReRankStartEvent/ReRankEndEvent through the instrumentation
dispatcher and a RERANKING callback event, `keep_retrieval_score`, the text plus the metadata
meant for embedding. Every client option is a field, or pass a ready `client` / `async_client`;
`api_key` (SecretStr, default from TRITON_RERANK_API_KEY) is never serialized. The async path
(`apostprocess_nodes`, used by async query engines) runs on AsyncRerankClient. The node's
metadata gets `rerank_logit`, `rerank_truncated` (and `rerank_span`, `rerank_windows` in window
mode), excluded from the text the embedding and the LLM see. `close()` / `await aclose()` or
`with` / `async with` close the clients it built.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, List, Literal, Optional, Tuple, Union

from . import _common

try:
    import llama_index.core.instrumentation as instrument
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.callbacks.base import EventContext
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as err:  # the [llamaindex] extra is not installed
    raise _common.missing_extra("llamaindex", err) from err

from ..async_client import AsyncRerankClient
from ..endpoints import DEFAULT_BACKOFF_BASE_S, DEFAULT_BACKOFF_MAX_S
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions
from ._pydantic import PydanticAdapter

dispatcher = instrument.get_dispatcher(__name__)


def _env_api_key() -> Optional[SecretStr]:
    import os

    value = os.environ.get(_common.API_KEY_ENV)
    return SecretStr(value) if value else None


class TritonRerank(PydanticAdapter, BaseNodePostprocessor):
    url: Union[str, List[str]] = Field(default="localhost:8001", description="host:port, or a list of them")
    protocol: Literal["grpc", "http"] = Field(default="grpc")
    model: str = Field(default="rerank", description="the Triton model (the `rerank` ensemble)")
    top_n: Optional[int] = Field(default=3, description="nodes kept; None keeps all, reordered")
    timeout: Optional[float] = Field(
        default=None, description="seconds per call, retries included; None: derived from the server's limits"
    )
    retries: int = Field(default=3)
    max_concurrency: int = Field(default=4, description="requests of one call in flight at once")
    tls: Optional[TLSOptions] = Field(default=None)
    headers: Dict[str, str] = Field(default_factory=dict, description="not secret; use api_key for credentials")
    # exclude=True: never in to_dict()/to_json(); from_dict() reads the environment again.
    api_key: Optional[SecretStr] = Field(default_factory=_env_api_key, exclude=True)
    token_counter: Optional[Callable[[str], int]] = Field(default=None, exclude=True)
    backoff_base: float = Field(default=DEFAULT_BACKOFF_BASE_S, description="seconds; retry pauses grow from it")
    backoff_max: float = Field(default=DEFAULT_BACKOFF_MAX_S, description="seconds; the longest retry pause")
    long_documents: _common.LongDocuments = Field(default=_common.DEFAULT_LONG_DOCUMENTS)
    strict: bool = Field(
        default=False, description="refuse a text over the server's byte limit instead of cutting it (truncated)"
    )
    max_length: Optional[int] = Field(
        default=None, description="tokens per query+node pair (as FlagReranker's max_length); None: the server's"
    )
    keep_retrieval_score: bool = Field(
        default=False, description="keep the retriever's score in metadata['retrieval_score']"
    )
    client: Optional[RerankClient] = Field(default=None, exclude=True)
    async_client: Optional[AsyncRerankClient] = Field(default=None, exclude=True)

    # extra="forbid": a misspelt keyword raises instead of being silently ignored.
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())
    _clients: Optional[_common.Clients] = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "TritonRerank"

    def _start(self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle]) -> Tuple[QueryBundle, List[str]]:
        """The query (required) and the texts to score; emits ReRankStartEvent."""
        if query_bundle is None:
            # As LlamaIndex's SentenceTransformerRerank and CohereRerank: no query, nothing to rank by.
            raise ValueError("Missing query bundle: pass query_bundle or query_str to rerank")
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=len(nodes) if self.top_n is None else self.top_n,
                model_name=self.model,
            )
        )
        # As LlamaIndex's own rerankers do: the text plus the metadata meant for embedding.
        return query_bundle, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _nodes(self, nodes: List[NodeWithScore], ranked: _common.Ranked) -> List[NodeWithScore]:
        out = []
        for position, result in ranked:
            node = nodes[position]
            if self.keep_retrieval_score:
                node.node.metadata["retrieval_score"] = node.score
            for key in _common.META_KEYS:  # a span from an earlier window-mode call must not linger
                node.node.metadata.pop(key, None)
            node.node.metadata.update(_common.result_meta(result))
            for excluded in (node.node.excluded_embed_metadata_keys, node.node.excluded_llm_metadata_keys):
                excluded.extend(k for k in _common.META_KEYS if k not in excluded)
            out.append(NodeWithScore(node=node.node, score=_common.EMPTY_SCORE if result is None else result.score))
        return out

    def _callback_event(self, nodes: List[NodeWithScore], query_bundle: QueryBundle) -> ContextManager[EventContext]:
        """The RERANKING callback event around one rerank."""
        payload: Dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self.top_n,
        }
        return self.callback_manager.event(CBEventType.RERANKING, payload=payload)

    def _end(self, event: EventContext, nodes: List[NodeWithScore], ranked: _common.Ranked) -> List[NodeWithScore]:
        """The reranked nodes; ends the callback event and emits ReRankEndEvent."""
        out = self._nodes(nodes, ranked)
        event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    def _postprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        with self._callback_event(nodes, query) as event:
            ranked = (
                _common.rerank_sync(
                    self._get_clients(),
                    query.query_str,
                    texts,
                    self.top_n,
                    self.long_documents,
                    self.strict,
                    self.max_length,
                )
                if nodes
                else []
            )
            return self._end(event, nodes, ranked)

    async def _apostprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        query, texts = self._start(nodes, query_bundle)
        with self._callback_event(nodes, query) as event:
            ranked = (
                await _common.rerank_async(
                    self._get_clients(),
                    query.query_str,
                    texts,
                    self.top_n,
                    self.long_documents,
                    self.strict,
                    self.max_length,
                )
                if nodes
                else []
            )
            return self._end(event, nodes, ranked)
