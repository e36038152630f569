"""Haystack 2/3: a ranker component.

    from reranker_client.integrations.haystack import TritonRanker
    pipeline.add_component("ranker", TritonRanker(url="localhost:8001", top_k=5))

As Haystack's own rankers: `top_k`, `score_threshold`, `meta_fields_to_embed` and
`meta_data_separator`, `warm_up()` (connects and checks that the served model is there),
`close()`, `run_async()` on AsyncRerankClient (AsyncPipeline), `to_dict`/`from_dict`. Every client
option is an init parameter, or pass a ready `client` / `async_client` (not serializable).
`api_key` is a haystack Secret (default: env var TRITON_RERANK_API_KEY, not required): to_dict
writes the variable's name, never the key, and refuses a token secret. Haystack 3 loads
pipelines only from allowed modules: `Pipeline.loads(yaml, allowed_modules=["reranker_client.*"])`.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, replace
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_callable, deserialize_secrets_inplace, serialize_callable

from ..async_client import AsyncRerankClient
from ..signatures import same_parameters
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions
from . import _common


@component
class TritonRanker(_common.ClientOwner):
    def __init__(
        self,
        url: Union[str, List[str]] = "localhost:8001",
        protocol: Literal["grpc", "http"] = "grpc",
        model: str = "rerank",
        top_k: Optional[int] = 10,
        timeout: float = 30.0,
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
    ) -> None:
        """Unknown keywords raise TypeError (a plain signature, no **kwargs)."""
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
            token_counter=serialize_callable(self.token_counter) if self.token_counter is not None else None,
        )
        return default_to_dict(self, **params)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TritonRanker:
        params = data.get("init_parameters", {})
        deserialize_secrets_inplace(params, keys=["api_key"])
        if params.get("token_counter"):
            params["token_counter"] = deserialize_callable(params["token_counter"])
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
        """Close the clients this component built (a client you passed stays yours)."""
        await self._close_async()

    def _texts(self, documents: List[Document]) -> List[str]:
        # As Haystack's TransformersSimilarityRanker: chosen meta values, then the content.
        texts = []
        for doc in documents:
            meta = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k)]
            texts.append(self.meta_data_separator.join([*meta, doc.content or ""]))
        return texts

    @staticmethod
    def _documents(
        documents: List[Document], ranked: _common.Ranked, threshold: Optional[float]
    ) -> Dict[str, List[Document]]:
        out = []
        for position, result in ranked:
            score = _common.EMPTY_SCORE if result is None else result.score
            if threshold is not None and score < threshold:
                continue
            out.append(replace(documents[position], score=score))
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
        return query, documents, k, self.score_threshold if score_threshold is None else score_threshold

    @component.output_types(documents=List[Document])
    @same_parameters(_inputs)
    def run(self, *args: Any, **kwargs: Any) -> Dict[str, List[Document]]:
        query, documents, k, threshold = self._inputs(*args, **kwargs)
        if not documents:
            return {"documents": []}
        ranked = _common.rerank_sync(self._get_clients(), query, self._texts(documents), k, self.long_documents)
        return self._documents(documents, ranked, threshold)

    @component.output_types(documents=List[Document])
    @same_parameters(_inputs)
    async def run_async(self, *args: Any, **kwargs: Any) -> Dict[str, List[Document]]:
        query, documents, k, threshold = self._inputs(*args, **kwargs)
        if not documents:
            return {"documents": []}
        ranked = await _common.rerank_async(self._get_clients(), query, self._texts(documents), k, self.long_documents)
        return self._documents(documents, ranked, threshold)


# What to_dict writes: every init parameter but the ready clients (not serializable).
_INIT_PARAMETERS = tuple(
    name
    for name in inspect.signature(TritonRanker.__init__).parameters
    if name not in ("self", "client", "async_client")
)
