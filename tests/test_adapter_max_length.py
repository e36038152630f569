"""The framework adapters take the client's per-request max_length (issue 29 item 3): LangChain's
compressor, LlamaIndex's postprocessor and Haystack's ranker, sync and async, score as the
client's rerank(max_length=N) does on the real server; Haystack keeps it through to_dict /
from_dict; a value outside the server's range is refused naming the field."""

from __future__ import annotations

import asyncio

import pytest

from reranker_client import InvalidInputError, RerankClient

QUERY = "What is the highest mountain on Earth?"
# Longer than 64 tokens each, with the answer past the first 64 for one of them, so scores at 64
# differ from scores at the export's max_length (the test would pass without the option otherwise).
TEXTS = [
    "Mountains of the world. " * 20 + "Mount Everest, at 8,849 metres, is the highest mountain on Earth.",
    "Mount Everest is the highest mountain on Earth, 8,849 metres above sea level. " * 6,
    "Paris is the capital of France and its largest city, on the Seine. " * 8,
]
N = 64


@pytest.fixture(scope="module")
def expected(server):
    """The client's own scores at max_length=N, in TEXTS order; and at the server's max_length."""
    with RerankClient(server.grpc_url) as client:
        at_n = client.rerank(QUERY, TEXTS, max_length=N)
        full = client.rerank(QUERY, TEXTS)
    by_index = {r.index: r.score for r in at_n}
    assert by_index != {r.index: r.score for r in full}  # N really changes the scores
    return [by_index[i] for i in range(len(TEXTS))]


def _langchain(url, **options):
    from langchain_core.documents import Document

    from reranker_client.integrations.langchain import TritonRerank

    adapter = TritonRerank(url=url, top_n=None, **options)
    docs = [Document(page_content=t) for t in TEXTS]

    def scores(out):
        return [next(d.metadata["relevance_score"] for d in out if d.page_content == t) for t in TEXTS]

    return (
        lambda: scores(adapter.compress_documents(docs, QUERY)),
        lambda: asyncio.run(adapter.acompress_documents(docs, QUERY)),
        scores,
    )


def _llamaindex(url, **options):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from reranker_client.integrations.llamaindex import TritonRerank

    adapter = TritonRerank(url=url, top_n=None, **options)
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in TEXTS]

    def scores(out):
        return [next(n.score for n in out if n.node.get_content() == t) for t in TEXTS]

    return (
        lambda: scores(adapter.postprocess_nodes(nodes, query_str=QUERY)),
        lambda: asyncio.run(adapter.apostprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))),
        scores,
    )


def _haystack(url, **options):
    from haystack import Document

    from reranker_client.integrations.haystack import TritonRanker

    ranker = TritonRanker(url=url, top_k=None, **options)
    # Serialized and rebuilt: the option must survive a pipeline's YAML.
    ranker = TritonRanker.from_dict(ranker.to_dict())
    docs = [Document(content=t) for t in TEXTS]

    def scores(out):
        return [next(d.score for d in out["documents"] if d.content == t) for t in TEXTS]

    return (
        lambda: scores(ranker.run(QUERY, docs)),
        lambda: asyncio.run(ranker.run_async(QUERY, docs)),
        scores,
    )


@pytest.mark.parametrize("make", [_langchain, _llamaindex, _haystack], ids=["langchain", "llamaindex", "haystack"])
def test_adapters_pass_max_length_to_the_client(server, expected, make):
    sync_scores, run_async, scores = make(server.grpc_url, max_length=N)
    assert sync_scores() == pytest.approx(expected, abs=1e-6)
    assert scores(run_async()) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("make", [_langchain, _llamaindex, _haystack], ids=["langchain", "llamaindex", "haystack"])
def test_adapters_refuse_a_max_length_outside_the_servers_range_naming_it(server, make):
    sync_scores, run_async, _ = make(server.grpc_url, max_length=10)
    for call in (sync_scores, run_async):
        with pytest.raises(InvalidInputError, match=r"max_length: 10 must be in \d+\.\.\d+"):
            call()


def test_haystack_serializes_max_length():
    from reranker_client.integrations.haystack import TritonRanker

    data = TritonRanker(max_length=N).to_dict()
    assert data["init_parameters"]["max_length"] == N
    assert TritonRanker.from_dict(data).max_length == N
    assert TritonRanker.from_dict(TritonRanker().to_dict()).max_length is None
