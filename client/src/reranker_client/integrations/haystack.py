"""Haystack 2/3: a ranker component.

    from reranker_client.integrations.haystack import TritonRanker
    pipeline.add_component("ranker", TritonRanker(url="localhost:8001", top_k=5))

As Haystack's own rankers (SentenceTransformersSimilarityRanker): `top_k`, `score_threshold`,
`scale_score` (False: raw logits) and `calibration_factor`, `query_prefix`/`document_prefix`,
`meta_fields_to_embed` and `meta_data_separator`, duplicate documents (same id) removed first,
`warm_up()` (connects and checks that the served model is there), `close()` / `close_async()`
(both close the sync and the async client), `run_async()` on AsyncRerankClient (AsyncPipeline),
`to_dict`/`from_dict` (a `lengths.token_counter(...)` is saved as its tokenizer.json path).
`max_length` (tokens per pair, as the client's rerank(max_length=)) is an init parameter too.
Every client option is an init parameter, or pass a ready `client` / `async_client` (not
serializable). `api_key` is a haystack Secret (default: env var TRITON_RERANK_API_KEY, not
required): to_dict writes the variable's name, never the key, and refuses a token secret.
Haystack 3 loads pipelines only from allowed modules:
`Pipeline.loads(yaml, allowed_modules=["reranker_client.*"])`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, replace
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

from . import _common

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.utils import Secret, deserialize_callable, deserialize_secrets_inplace, serialize_callable
except ImportError as err:  # the [haystack] extra is not installed
    raise _common.missing_extra("haystack", err) from err

from ..async_client import AsyncRerankClient
from ..endpoints import DEFAULT_BACKOFF_BASE_S, DEFAULT_BACKOFF_MAX_S
from ..lengths import TokenCounter
from ..results import RerankResult
from ..signatures import same_parameters
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions

# to_dict's form of a lengths.TokenCounter: its tokenizer.json path, rebuilt by from_dict (a
# closure or a bound method cannot be written as an import path).
TOKEN_COUNTER_KEY = "tokenizer_json"


@component
class TritonRanker(_common.ClientOwner):
    def __init__(
        self,
        url: Union[str, List[str]] = "localhost:8001",
        protocol: Literal["grpc", "http"] = "grpc",
        model: str = "rerank",
        top_k: Optional[int] = 10,
        timeout: Optional[float] = None,
        retries: int = 3,
        max_concurrency: int = 4,
        tls: Union[TLSOptions, Dict[str, Any], None] = None,
        headers: Optional[Dict[str, str]] = None,
        api_key: Optional[Secret] = Secret.from_env_var(_common.API_KEY_ENV, strict=False),
        token_counter: Optional[Callable[[str], int]] = None,
        score_threshold: Optional[float] = None,
        meta_fields_to_embed: Optional[List[str]] = None,
        meta_data_separator: str = "\n",
        long_documents: _common.LongDocuments = _common.DEFAULT_LONG_DOCUMENTS,
        client: Optional[RerankClient] = None,
        async_client: Optional[AsyncRerankClient] = None,
        scale_score: bool = True,
        calibration_factor: Optional[float] = 1.0,
        query_prefix: str = "",
        document_prefix: str = "",
        strict: bool = False,
        backoff_base: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max: float = DEFAULT_BACKOFF_MAX_S,
        max_length: Optional[int] = None,
    ) -> None:
        """Unknown keywords raise TypeError (a plain signature, no **kwargs).

        scale_score (default True): `score` is sigmoid(logit * calibration_factor), in 0..1; False:
        the raw logit (a document without text then scores -inf). strict: a text over the
        server's byte limit fails the run instead of being cut (meta `rerank_truncated`). max_length:
        tokens per query+document pair (FlagReranker's max_length; None: the server's), checked
        by the client against the server's published range (InvalidInputError naming it)."""
        if client is not None or async_client is not None:
            # Only what the caller set counts as a clash (the defaults are always there).
            passed = {
                "url": url if url != "localhost:8001" else None,
                "protocol": None if protocol == "grpc" else protocol,
                "tls": tls,
                "headers": headers or None,
                "token_counter": token_counter,
                "client": client,
                "async_client": async_client,
            }
            _common.check_client_or_options(passed)
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol: must be 'grpc' or 'http', got {protocol!r}")
        if api_key is not None and not isinstance(api_key, Secret):
            raise TypeError("api_key: expected a haystack Secret (Secret.from_env_var(...) or Secret.from_token(...))")
        self.url, self.protocol, self.model = url, protocol, model
        self.top_k = _common.check_top(top_k, "top_k")
        self.timeout, self.retries, self.max_concurrency = timeout, retries, max_concurrency
        self.tls = _common.tls_options(tls)
        self.headers = dict(headers or {})
        self.api_key = api_key
        self.token_counter = token_counter
        self.score_threshold = score_threshold
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.meta_data_separator = meta_data_separator
        self.long_documents = _common.check_long_documents(long_documents)
        if scale_score and calibration_factor is None:
            # As SentenceTransformersSimilarityRanker: scaling needs a factor.
            raise ValueError("calibration_factor: must be set when scale_score is True")
        self.scale_score, self.calibration_factor = scale_score, calibration_factor
        self.query_prefix, self.document_prefix = query_prefix, document_prefix
        self.strict = strict
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_length = max_length
        self.client, self.async_client = client, async_client
        self._clients: Optional[_common.Clients] = None

    def to_dict(self) -> Dict[str, Any]:
        if self.client is not None or self.async_client is not None:
            raise ValueError(
                "TritonRanker with a ready client cannot be serialized: pass connection options "
                "(url, protocol, tls, headers, api_key, ...) instead"
            )
        # Every init parameter but the ready clients, each an attribute of the same name; three
        # are not plain values.
        params = {name: getattr(self, name) for name in _INIT_PARAMETERS}
        params.update(
            tls=asdict(self.tls) if self.tls is not None else None,
            api_key=self.api_key.to_dict() if self.api_key is not None else None,  # a token secret raises here
            token_counter=_counter_to_dict(self.token_counter),
        )
        return default_to_dict(self, **params)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TritonRanker:
        params = data.get("init_parameters", {})
        deserialize_secrets_inplace(params, keys=["api_key"])
        if params.get("token_counter"):
            params["token_counter"] = _counter_from_dict(params["token_counter"])
        return default_from_dict(cls, data)

    def _api_key(self) -> Optional[str]:
        return self.api_key.resolve_value() if self.api_key is not None else None

    def warm_up(self) -> None:
        """Connect and check that the server serves the model (reads its published limits), so a
        wrong URL, model or credential fails when the pipeline starts, not on the first query."""
        self._get_clients().sync().server_limits()

    async def warm_up_async(self) -> None:
        await self._get_clients().async_().server_limits()

    async def close_async(self) -> None:
        """Close the clients this component built, sync and async (a client you passed stays yours)."""
        await self._close_async()

    def _texts(self, documents: List[Document]) -> List[str]:
        # As Haystack's SentenceTransformersSimilarityRanker: the document prefix, chosen meta
        # values, then the content. A document without text stays empty (it is not sent and
        # ranks last: _common.split_empty), prefix or not.
        texts = []
        for doc in documents:
            meta = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
            text = self.meta_data_separator.join([*meta, doc.content or ""])
            texts.append(self.document_prefix + text if text.strip() else text)
        return texts

    def _score(self, result: Optional[RerankResult]) -> float:
        if not self.scale_score:
            return _common.EMPTY_LOGIT if result is None else result.logit
        if result is None:
            return _common.EMPTY_SCORE
        if self.calibration_factor == 1.0:
            return result.score  # the server's sigmoid, bit for bit
        return 1.0 / (1.0 + math.exp(-result.logit * float(self.calibration_factor or 1.0)))

    def _documents(
        self, documents: List[Document], ranked: _common.Ranked, threshold: Optional[float]
    ) -> Dict[str, List[Document]]:
        out = []
        for position, result in ranked:
            score = self._score(result)
            if threshold is not None and score < threshold:
                continue
            source = documents[position]
            kept = {k: v for k, v in source.meta.items() if k not in _common.META_KEYS}  # a copy: no stale span
            out.append(replace(source, score=score, meta={**kept, **_common.result_meta(result)}))
        return {"documents": out}

    # The parameters and docstring of run() and run_async(), declared once (Haystack requires
    # them to be the same, and builds the component's input sockets from them): the inputs of a
    # run, checked, with the component's defaults for top_k and score_threshold.
    def _inputs(
        self,
        query: str,
        documents: List[Document],
        top_k: Optional[int] = None,
        score_threshold: Optional[float] = None,
    ) -> Tuple[str, List[Document], Optional[int], Optional[float]]:
        """The top_k documents, best first, `score` set (sigmoid, 0..1); documents without text
        score lowest and come last; below score_threshold they are dropped."""
        k = _common.check_top(self.top_k if top_k is None else top_k, "top_k")
        threshold = self.score_threshold if score_threshold is None else score_threshold
        return self.query_prefix + query, deduplicate(documents), k, threshold

    @component.output_types(documents=List[Document])
    @same_parameters(_inputs)
    def run(self, *args: Any, **kwargs: Any) -> Dict[str, List[Document]]:
        query, documents, k, threshold = self._inputs(*args, **kwargs)
        if not documents:
            return {"documents": []}
        ranked = _common.rerank_sync(
            self._get_clients(), query, self._texts(documents), k, self.long_documents, self.strict, self.max_length
        )
        return self._documents(documents, ranked, threshold)

    @component.output_types(documents=List[Document])
    @same_parameters(_inputs)
    async def run_async(self, *args: Any, **kwargs: Any) -> Dict[str, List[Document]]:
        query, documents, k, threshold = self._inputs(*args, **kwargs)
        if not documents:
            return {"documents": []}
        ranked = await _common.rerank_async(
            self._get_clients(), query, self._texts(documents), k, self.long_documents, self.strict, self.max_length
        )
        return self._documents(documents, ranked, threshold)


def deduplicate(documents: List[Document]) -> List[Document]:
    """One document per id, the one with the highest score (None counts lowest), in order of
    first appearance: what Haystack's own rankers do before ranking
    (haystack.utils.misc._deduplicate_documents, haystack-ai 3.4.1, a private helper, so its rule
    is repeated here). Duplicates would otherwise use up top_k twice."""
    best: Dict[str, Document] = {}
    for doc in documents:
        score = doc.score if doc.score is not None else -math.inf
        kept = best.get(doc.id)
        if kept is None or score > (kept.score if kept.score is not None else -math.inf):
            best[doc.id] = doc
    return list(best.values())


def _counter_to_dict(counter: Optional[Callable[[str], int]]) -> Union[None, str, Dict[str, str]]:
    if counter is None:
        return None
    if isinstance(counter, TokenCounter):
        return {TOKEN_COUNTER_KEY: counter.tokenizer_json}
    return serialize_callable(counter)  # a module-level function; a closure raises SerializationError


def _counter_from_dict(value: Union[str, Dict[str, str]]) -> Callable[[str], int]:
    if isinstance(value, dict):
        return TokenCounter(value[TOKEN_COUNTER_KEY])
    return deserialize_callable(value)


# What to_dict writes: every init parameter but the ready clients (not serializable).
_INIT_PARAMETERS = tuple(
    name
    for name in inspect.signature(TritonRanker.__init__).parameters
    if name not in ("self", "client", "async_client")
)
