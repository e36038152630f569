"""The LangChain, LlamaIndex and Haystack adapters' contracts, with the real frameworks and no
server: unknown keywords raise, every client option reaches the client (or a ready client is
used as is), secrets never serialize, serialization round-trips, empty content never fails,
the async paths use AsyncRerankClient, query_bundle=None, and long_documents.

Where a call must reach the network, it goes to a port where nothing listens: the error type
(ServerUnavailableError) proves which client made the call without a mock."""

from __future__ import annotations

import asyncio
import json

import pytest

from reranker_client import AsyncRerankClient, RerankClient, ServerUnavailableError, TLSOptions
from reranker_client.integrations import _common
from tests.conftest import free_port

SECRET = "s3cr3t-key-value"


def dead_url() -> str:
    return f"127.0.0.1:{free_port()}"


# ---------------------------------------------------------------- shared helpers


def test_empty_texts_rank_last_with_the_lowest_score():
    from reranker_client.results import RerankResult

    keep, kept, empty = _common.split_empty(["a", "", "  \n", None, "b"])
    assert (keep, kept, empty) == ([0, 4], ["a", "b"], [1, 2, 3])
    results = [
        RerankResult(index=1, score=0.9, logit=2.0, tokens=3, truncated=False),
        RerankResult(index=0, score=0.1, logit=-2.0, tokens=3, truncated=False),
    ]
    assert [(i, r is None) for i, r in _common.ranked(results, keep, empty, None)] == [
        (4, False),
        (0, False),
        (1, True),
        (2, True),
        (3, True),
    ]
    assert [i for i, _ in _common.ranked(results, keep, empty, 3)] == [4, 0, 1]


def test_long_documents_is_passed_only_when_not_the_default():
    assert _common.rerank_kwargs("truncate") == {}
    assert _common.rerank_kwargs("window") == {"long_documents": "window"}
    with pytest.raises(ValueError, match="long_documents"):
        _common.check_long_documents("chunk")


def test_api_key_becomes_a_bearer_header_and_options_reach_the_config():
    options = {
        "url": ["a:1", "b:2"],
        "protocol": "http",
        "model": "m",
        "timeout": 5.0,
        "retries": 7,
        "max_concurrency": 9,
        "tls": TLSOptions(root_certificates="ca.pem"),
        "headers": {"x-team": "search"},
        "token_counter": len,
        "backoff_base": 0.2,
        "backoff_max": 3.0,
    }
    assert set(options) == set(_common.CONFIG_OPTIONS)
    config = _common.client_config(options, SECRET)
    assert config.headers == {"x-team": "search", "authorization": f"Bearer {SECRET}"}
    assert (config.url, config.protocol, config.model, config.timeout, config.retries, config.max_concurrency) == (
        ["a:1", "b:2"],
        "http",
        "m",
        5.0,
        7,
        9,
    )
    assert config.tls.root_certificates == "ca.pem" and config.token_counter is len
    assert (config.backoff_base, config.backoff_max) == (0.2, 3.0)


# ---------------------------------------------------------------- LangChain


def test_langchain_contract(monkeypatch):
    from langchain_core.documents import Document
    from pydantic import ValidationError

    from reranker_client.integrations.langchain import TritonRerank

    with pytest.raises(ValidationError, match="top_k"):
        TritonRerank(top_k=5)  # misspelt top_n: used to be silently ignored
    with pytest.raises(ValidationError, match="long_documents"):
        TritonRerank(long_documents="chunk")
    with pytest.raises(ValidationError, match="either a ready client or connection options"):
        TritonRerank(client=RerankClient(dead_url()), url="x:1")

    monkeypatch.setenv(_common.API_KEY_ENV, SECRET)
    url = dead_url()
    rr = TritonRerank(
        url=[url],
        protocol="http",
        timeout=4.0,
        retries=0,
        max_concurrency=2,
        headers={"x-a": "1"},
        tls={"root_certificates": "ca.pem"},
        top_n=None,
    )
    assert rr.api_key.get_secret_value() == SECRET  # from the environment, as SecretStr
    dumped = rr.model_dump()
    assert SECRET not in json.dumps(dumped, default=str) and SECRET not in rr.model_dump_json()
    assert SECRET not in repr(rr)
    again = TritonRerank(**dumped)  # round trip; the key comes back from the environment only
    assert again.model_dump() == dumped and again.api_key.get_secret_value() == SECRET
    config = rr._get_clients().config
    assert config.headers["authorization"] == f"Bearer {SECRET}" and config.retries == 0
    assert config.tls == TLSOptions(root_certificates="ca.pem") and config.max_concurrency == 2

    # Empty content never fails: with only empty documents nothing is sent at all.
    docs = [Document(page_content=""), Document(page_content="  ")]
    out = TritonRerank(url=dead_url(), top_n=5).compress_documents(docs, "q")
    assert [d.metadata["relevance_score"] for d in out] == [0.0, 0.0]
    assert (
        asyncio.run(TritonRerank(url=dead_url()).acompress_documents(docs, "q"))[0].metadata["relevance_score"] == 0.0
    )


def test_langchain_async_path_uses_the_async_client():
    from langchain_core.documents import Document

    from reranker_client.integrations.langchain import TritonRerank

    rr = TritonRerank(async_client=AsyncRerankClient(dead_url(), retries=0))
    with pytest.raises(ServerUnavailableError):
        asyncio.run(rr.acompress_documents([Document(page_content="text")], "q"))
    assert rr._clients._sync is None and rr._clients._async is None  # the given async client, no thread hop
    # Only a sync client given: the async path builds its async twin from the same config.
    sync = RerankClient(dead_url(), retries=0, timeout=3.0)
    rr = TritonRerank(client=sync)
    with pytest.raises(ServerUnavailableError):
        asyncio.run(rr.acompress_documents([Document(page_content="text")], "q"))
    assert rr._clients._async.config is sync.config and rr._clients._sync is None


# ---------------------------------------------------------------- LlamaIndex


def test_llamaindex_contract(monkeypatch):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from pydantic import ValidationError

    from reranker_client.integrations.llamaindex import TritonRerank

    with pytest.raises(ValidationError, match="top_k"):
        TritonRerank(top_k=5)
    with pytest.raises(ValidationError):
        TritonRerank(async_client=AsyncRerankClient(dead_url()), headers={"a": "b"})

    monkeypatch.setenv(_common.API_KEY_ENV, SECRET)
    post = TritonRerank(
        url=dead_url(),
        protocol="http",
        retries=1,
        max_concurrency=3,
        top_n=2,
        tls=TLSOptions(root_certificates="ca.pem"),
        keep_retrieval_score=True,
    )
    as_json = post.to_json()
    assert SECRET not in as_json and "api_key" not in json.loads(as_json)
    again = TritonRerank.from_json(as_json)
    assert again.to_dict() == post.to_dict() and again.api_key.get_secret_value() == SECRET
    assert again.tls == TLSOptions(root_certificates="ca.pem")

    def empty_nodes():  # fresh each time: keep_retrieval_score writes into the node's metadata
        return [
            NodeWithScore(node=TextNode(text=t, excluded_embed_metadata_keys=["retrieval_score"]), score=1.0)
            for t in ("", "   ")
        ]

    with pytest.raises(ValueError, match="query bundle"):
        post.postprocess_nodes(empty_nodes(), query_bundle=None)
    with pytest.raises(ValueError, match="query bundle"):
        asyncio.run(post.apostprocess_nodes(empty_nodes()))
    out = post.postprocess_nodes(empty_nodes(), query_str="q")  # empty texts: no request, no exception
    assert [n.score for n in out] == [0.0, 0.0] and out[0].node.metadata["retrieval_score"] == 1.0
    assert [n.score for n in asyncio.run(post.apostprocess_nodes(empty_nodes(), QueryBundle("q")))] == [0.0, 0.0]
    assert post.postprocess_nodes([], query_str="q") == []


def test_llamaindex_emits_rerank_events_and_async_uses_the_async_client():
    import llama_index.core.instrumentation as instrument
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from reranker_client.integrations.llamaindex import TritonRerank

    class Collect(BaseEventHandler):
        events: list = []

        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event, **kwargs):
            self.events.append(event)

    handler = Collect(events=[])
    root = instrument.get_dispatcher()
    root.add_event_handler(handler)
    try:
        post = TritonRerank(async_client=AsyncRerankClient(dead_url(), retries=0), top_n=1)
        nodes = [NodeWithScore(node=TextNode(text="a"), score=0.5), NodeWithScore(node=TextNode(text=""), score=0.1)]
        with pytest.raises(ServerUnavailableError):
            asyncio.run(post.apostprocess_nodes(nodes, QueryBundle("q")))
        assert post._clients._sync is None  # no fallback to the sync client in a thread
        ok = TritonRerank(url=dead_url(), top_n=1).postprocess_nodes([nodes[1]], query_str="q")
    finally:
        root.event_handlers.remove(handler)
    names = [type(e).__name__ for e in handler.events]
    assert "ReRankStartEvent" in names and names.count("ReRankEndEvent") == 1
    start = next(e for e in handler.events if type(e).__name__ == "ReRankStartEvent")
    assert start.model_name == "rerank" and start.top_n == 1 and len(start.nodes) == 2
    assert len(ok) == 1 and ok[0].score == 0.0


# ---------------------------------------------------------------- Haystack


def test_haystack_contract(monkeypatch):
    from haystack import Document
    from haystack.utils import Secret

    from reranker_client.integrations.haystack import TritonRanker

    with pytest.raises(TypeError):
        TritonRanker(top_n=5)  # unknown keyword
    with pytest.raises(ValueError, match="either a ready client"):
        TritonRanker(client=RerankClient(dead_url()), url="x:1")
    with pytest.raises(ValueError, match="long_documents"):
        TritonRanker(long_documents="chunk")

    monkeypatch.setenv(_common.API_KEY_ENV, SECRET)
    ranker = TritonRanker(
        url=[dead_url(), dead_url()],
        protocol="http",
        top_k=4,
        retries=1,
        max_concurrency=2,
        tls=TLSOptions(root_certificates="ca.pem", certificate_chain="c.pem", private_key="k.pem"),
        headers={"x-team": "search"},
        token_counter=len,
        score_threshold=0.2,
        meta_fields_to_embed=["title"],
        meta_data_separator=" | ",
    )
    data = ranker.to_dict()
    assert SECRET not in json.dumps(data)
    assert data["init_parameters"]["api_key"] == {"type": "env_var", "env_vars": [_common.API_KEY_ENV], "strict": False}
    again = TritonRanker.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data and again.token_counter is len and again.tls == ranker.tls
    assert again._get_clients().config.headers["authorization"] == f"Bearer {SECRET}"
    with pytest.raises(ValueError):  # a token secret is never written out
        TritonRanker(api_key=Secret.from_token(SECRET)).to_dict()
    with pytest.raises(ValueError, match="cannot be serialized"):
        TritonRanker(client=RerankClient(dead_url())).to_dict()

    # Empty or None content never fails; a threshold above 0 drops them; meta alone is text.
    docs = [Document(content=None), Document(content="  "), Document(content=None, meta={"title": "Everest"})]
    assert ranker._texts(docs) == ["", "  ", "Everest | "]
    out = TritonRanker(url=dead_url()).run("q", docs[:2])["documents"]
    assert [d.score for d in out] == [0.0, 0.0] and [d.id for d in out] == [docs[0].id, docs[1].id]
    assert TritonRanker(url=dead_url()).run("q", docs[:2], score_threshold=0.1) == {"documents": []}
    assert asyncio.run(TritonRanker(url=dead_url()).run_async("q", docs[:2], top_k=1))["documents"][0].score == 0.0


def test_haystack_run_and_run_async_take_the_same_inputs():
    """Haystack builds the input sockets from run()'s signature and requires run_async()'s to be
    the same; both come from one declaration (signatures.same_parameters)."""
    import inspect
    from typing import List, Optional, get_type_hints

    from haystack import Document, Pipeline

    from reranker_client.integrations.haystack import TritonRanker

    run, run_async = TritonRanker.run, TritonRanker.run_async
    assert inspect.signature(run) == inspect.signature(run_async)
    assert get_type_hints(run) == get_type_hints(run_async)
    assert inspect.iscoroutinefunction(run_async) and not inspect.iscoroutinefunction(run)
    pipeline = Pipeline()
    pipeline.add_component("ranker", TritonRanker(url=dead_url()))
    inputs = pipeline.inputs(include_components_with_connected_inputs=True)["ranker"]
    assert {name: socket["type"] for name, socket in inputs.items()} == {
        "query": str,
        "documents": List[Document],
        "top_k": Optional[int],
        "score_threshold": Optional[float],
    }
    assert [name for name, socket in inputs.items() if socket["is_mandatory"]] == ["query", "documents"]


def test_haystack_warm_up_checks_the_server_and_async_uses_the_async_client():
    from haystack import Document

    from reranker_client.integrations.haystack import TritonRanker

    with pytest.raises(ServerUnavailableError):
        TritonRanker(url=dead_url(), retries=0).warm_up()
    ranker = TritonRanker(async_client=AsyncRerankClient(dead_url(), retries=0))
    with pytest.raises(ServerUnavailableError):
        asyncio.run(ranker.run_async("q", [Document(content="text")]))
    assert ranker._clients._sync is None
    ranker.close()


def test_haystack_pipeline_yaml_round_trip_with_the_allowlist(monkeypatch):
    """Haystack 3 loads components only from allowed modules: the README's allowed_modules works."""
    from haystack import Pipeline
    from haystack.core.errors import DeserializationError

    from reranker_client.integrations.haystack import TritonRanker

    monkeypatch.setenv(_common.API_KEY_ENV, SECRET)
    pipe = Pipeline()
    pipe.add_component("ranker", TritonRanker(url="triton:8001", top_k=3, score_threshold=0.5))
    text = pipe.dumps()
    assert SECRET not in text
    with pytest.raises(DeserializationError):
        Pipeline.loads(text)
    loaded = Pipeline.loads(text, allowed_modules=["reranker_client.*"])
    ranker = loaded.get_component("ranker")
    assert isinstance(ranker, TritonRanker) and ranker.to_dict() == pipe.get_component("ranker").to_dict()
