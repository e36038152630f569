"""The LangChain, LlamaIndex and Haystack adapters against the real server (issue 28): one client
however many threads use a fresh adapter, a text over the byte limit degrades that document only
(cut to its head, flagged) and errors name the caller's document, Haystack drops duplicates as
its own rankers do and saves pipelines with a token counter, async connections are closed, a
shared AsyncRerankClient survives a second asyncio.run, and window mode's span reaches the
output. Scores are compared with what the client itself answers for the same texts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest

from export.settings import MAX_TEXT_BYTES
from reranker_client import AsyncRerankClient, InvalidInputError, RerankClient

QUERY = "What is the highest mountain on Earth?"
SHORT = ["Mount Everest is 8,849 metres high.", "Paris is the capital of France.", "K2 is the second highest."]


def _head_and_big() -> tuple[str, str]:
    """A head far longer than max_length tokens, and the head followed by enough 3-byte
    characters to pass the byte limit, with the limit falling inside one of them (the cut must
    step back to a character boundary)."""
    head = "Mount Everest is Earth's highest mountain above sea level, in the Himalayas. " * 800
    while (MAX_TEXT_BYTES - len(head.encode())) % 3 != 1:
        head += "."
    big = head + "€" * (MAX_TEXT_BYTES // 3)
    assert len(big.encode()) > MAX_TEXT_BYTES
    return head, big


HEAD, BIG = _head_and_big()


@pytest.fixture(scope="module")
def head_score(server):
    with RerankClient(server.grpc_url) as client:
        (result,) = client.score_details([(QUERY, HEAD)])
    assert result.truncated  # the server reads only max_length tokens of the head itself
    return result.score


# ---------------------------------------------------------------- item 1: one client


def _langchain(url):
    from langchain_core.documents import Document

    from reranker_client.integrations.langchain import TritonRerank

    adapter = TritonRerank(url=url, top_n=None)
    docs = [Document(page_content=t) for t in SHORT]
    return adapter, lambda: [d.metadata["relevance_score"] for d in adapter.compress_documents(docs, QUERY)]


def _llamaindex(url):
    from llama_index.core.schema import NodeWithScore, TextNode

    from reranker_client.integrations.llamaindex import TritonRerank

    adapter = TritonRerank(url=url, top_n=None)

    def call():
        nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in SHORT]
        return [n.score for n in adapter.postprocess_nodes(nodes, query_str=QUERY)]

    return adapter, call


def _haystack(url):
    from haystack import Document

    from reranker_client.integrations.haystack import TritonRanker

    adapter = TritonRanker(url=url, top_k=None)
    docs = [Document(content=t) for t in SHORT]
    return adapter, lambda: [d.score for d in adapter.run(QUERY, docs)["documents"]]


@pytest.mark.parametrize("make", [_langchain, _llamaindex, _haystack], ids=["langchain", "llamaindex", "haystack"])
def test_concurrent_first_use_builds_one_client_and_close_closes_it(server, monkeypatch, make):
    made = []
    build = RerankClient.from_config.__func__

    def counted(cls, config):
        time.sleep(0.05)  # a slow first connection: every thread is past "no client yet" by now
        client = build(cls, config)
        made.append(client)
        return client

    monkeypatch.setattr(RerankClient, "from_config", classmethod(counted))
    adapter, call = make(server.grpc_url)
    barrier = threading.Barrier(8)
    answers = []

    def use():
        barrier.wait()
        answers.append(call())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 8 and all(a == answers[0] for a in answers)
    assert len(made) == 1, f"{len(made)} clients built for one adapter"
    adapter.close()
    assert made[0]._closed


# ---------------------------------------------------------------- item 2: oversized text


def test_client_cuts_a_text_over_the_byte_limit_to_its_head(server, head_score):
    """Issue 29 item 2, in the client (adapters, CLI and REST inherit it): the head scores as the
    whole text would, flagged truncated; strict=True keeps the refusal."""
    with RerankClient(server.grpc_url, retries=0) as client:
        results = client.score_details([(QUERY, BIG), (QUERY, SHORT[0])])
        assert results[0].truncated and results[0].score == pytest.approx(head_score, abs=1e-6)
        ranked = client.rerank(QUERY, [SHORT[1], BIG], return_documents=True)
        assert {r.index: r.document for r in ranked}[1] == BIG  # the caller's text, not the cut one
        with pytest.raises(InvalidInputError, match=rf"documents\[1\]: {len(BIG.encode())} bytes exceeds"):
            client.rerank(QUERY, [SHORT[0], BIG], strict=True)

    async def run_async():
        async with AsyncRerankClient(server.grpc_url) as client:
            return await client.score_details([(QUERY, BIG)])

    (result,) = asyncio.run(run_async())
    assert result.truncated and result.score == pytest.approx(head_score, abs=1e-6)


def test_adapters_degrade_per_document_and_name_the_callers_document(server, head_score):
    """One oversized text no longer fails the retrieval; with strict=True the error names the
    caller's position (an empty document before it used to shift the index)."""
    from haystack import Document as HaystackDocument
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from reranker_client.integrations.haystack import TritonRanker
    from reranker_client.integrations.langchain import TritonRerank
    from reranker_client.integrations.llamaindex import TritonRerank as LlamaRerank

    texts = ["", BIG, SHORT[0]]
    out = TritonRerank(url=server.grpc_url, top_n=None).compress_documents(
        [Document(page_content=t) for t in texts], QUERY
    )
    big = next(d for d in out if d.page_content == BIG)
    assert big.metadata["rerank_truncated"] and big.metadata["relevance_score"] == pytest.approx(head_score, abs=1e-6)

    ranked = TritonRanker(url=server.grpc_url, top_k=None).run(QUERY, [HaystackDocument(content=t) for t in texts])
    big = next(d for d in ranked["documents"] if d.content == BIG)
    assert big.meta["rerank_truncated"] and big.score == pytest.approx(head_score, abs=1e-6)

    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in texts]
    out = LlamaRerank(url=server.grpc_url, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    big = next(n for n in out if n.node.get_content() == BIG)
    assert big.node.metadata["rerank_truncated"] and big.score == pytest.approx(head_score, abs=1e-6)

    strict_calls = [
        lambda: TritonRerank(url=server.grpc_url, strict=True).compress_documents(
            [Document(page_content=t) for t in texts], QUERY
        ),
        lambda: TritonRanker(url=server.grpc_url, strict=True).run(QUERY, [HaystackDocument(content=t) for t in texts]),
        lambda: LlamaRerank(url=server.grpc_url, strict=True).postprocess_nodes(
            [NodeWithScore(node=TextNode(text=t), score=1.0) for t in texts], query_str=QUERY
        ),
    ]
    for call in strict_calls:
        with pytest.raises(InvalidInputError, match=r"documents\[1\]: ") as caught:
            call()
        assert caught.value.index == 1


# ---------------------------------------------------------------- item 3: Haystack duplicates


def test_haystack_drops_duplicates_like_its_own_rankers(server):
    from haystack import Document
    from haystack.utils.misc import _deduplicate_documents

    from reranker_client.integrations.haystack import TritonRanker

    docs = [
        Document(id="everest", content=SHORT[0], score=0.1, meta={"copy": 1}),
        Document(id="paris", content=SHORT[1], score=0.5),
        Document(id="everest", content=SHORT[0], score=0.9, meta={"copy": 2}),
        Document(id="k2", content=SHORT[2], score=0.3),
    ]
    out = TritonRanker(url=server.grpc_url, top_k=3).run(QUERY, docs)["documents"]
    assert sorted(d.id for d in out) == sorted(d.id for d in _deduplicate_documents(docs)) == ["everest", "k2", "paris"]
    kept = {d.id: d for d in _deduplicate_documents(docs)}["everest"]
    assert next(d for d in out if d.id == "everest").meta["copy"] == kept.meta["copy"] == 2  # the higher score


# ---------------------------------------------------------------- items 4 and 5: asyncio


ASYNC_SCRIPT = """
import asyncio, gc, sys, warnings
warnings.simplefilter("always")
from haystack import Document as HaystackDocument
from langchain_core.documents import Document
from reranker_client import AsyncRerankClient
from reranker_client.integrations.haystack import TritonRanker
from reranker_client.integrations.langchain import TritonRerank

mode, grpc_url, http_url = sys.argv[1:4]
texts = ["Mount Everest is 8,849 metres high.", "Paris is the capital of France."]
for protocol, url in (("http", http_url), ("grpc", grpc_url)):
    if mode == "shared":  # the README's pattern: one AsyncRerankClient, two asyncio.run calls
        shared = AsyncRerankClient(url, protocol=protocol)
        first = asyncio.run(shared.rerank("q", texts))
        second = asyncio.run(shared.rerank("q", texts))
        assert [r.score for r in first] == [r.score for r in second]
    else:  # adapters used from two event loops each, never closed by the app
        compressor = TritonRerank(url=url, protocol=protocol)
        ranker = TritonRanker(url=url, protocol=protocol)
        for _ in range(2):
            asyncio.run(compressor.acompress_documents([Document(page_content=t) for t in texts], "q"))
            asyncio.run(ranker.run_async("q", [HaystackDocument(content=t) for t in texts]))
gc.collect()
print("ok")
"""


@pytest.mark.parametrize("mode", ["shared", "adapters"])
def test_async_clients_across_event_loops_leave_nothing_open(server, mode):
    """Item 5 (shared): a second asyncio.run used to raise an untyped "Event loop is closed" and
    leave a never-awaited coroutine. Item 4 (adapters): a new async client per loop, never
    closed: "Unclosed client session" at exit. Each loop's connections now close with it."""
    proc = subprocess.run(
        [sys.executable, "-c", ASYNC_SCRIPT, mode, server.grpc_url, server.http_url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    for symptom in ("Unclosed", "never awaited", "Task was destroyed", "Event loop is closed", "Traceback"):
        assert symptom not in proc.stderr, proc.stderr[-3000:]


def test_sync_close_closes_the_async_connections_too(server):
    """Haystack's Pipeline.close() calls the component's sync close(): the async client's
    connections close as well, on their own loop, while it keeps running."""
    import gc

    import aiohttp
    from haystack import Document

    from reranker_client.integrations.haystack import TritonRanker

    def open_sessions():
        gc.collect()
        return [o for o in gc.get_objects() if type(o) is aiohttp.ClientSession and not o.closed]

    async def run():
        ranker = TritonRanker(url=server.http_url, protocol="http")
        before = set(map(id, open_sessions()))
        await ranker.run_async(QUERY, [Document(content=t) for t in SHORT])
        sessions = [s for s in open_sessions() if id(s) not in before]  # the ranker's
        assert sessions
        ranker.close()
        await asyncio.sleep(0.1)  # the loop runs on: the close happens now, not at its shutdown
        return [s.closed for s in sessions]

    assert all(asyncio.run(run()))


# ---------------------------------------------------------------- item 7: saving a pipeline


def test_haystack_pipeline_with_the_readme_token_counter_round_trips(server, python_repo):
    from haystack import Document, Pipeline

    from reranker_client.integrations.haystack import TritonRanker
    from reranker_client.lengths import token_counter

    path = str(python_repo / "tokenizer" / "1" / "tokenizer.json")
    pipe = Pipeline()
    pipe.add_component("ranker", TritonRanker(url=server.grpc_url, token_counter=token_counter(path)))
    text = pipe.dumps()  # used to fail: a nested function cannot be serialized
    loaded = Pipeline.loads(text, allowed_modules=["reranker_client.*"])
    from reranker_client.lengths import TokenCounter

    counter = loaded.get_component("ranker").token_counter
    assert isinstance(counter, TokenCounter) and counter.tokenizer_json == path
    assert counter(SHORT[0]) == token_counter(path)(SHORT[0]) > 0
    docs = [Document(content=t) for t in SHORT]
    before = pipe.run({"ranker": {"query": QUERY, "documents": docs}})["ranker"]["documents"]
    after = loaded.run({"ranker": {"query": QUERY, "documents": docs}})["ranker"]["documents"]
    assert [(d.id, d.score) for d in before] == [(d.id, d.score) for d in after]


# ---------------------------------------------------------------- smaller items


def test_window_span_and_windows_reach_every_adapters_output(server):
    from haystack import Document as HaystackDocument
    from langchain_core.documents import Document
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from reranker_client.integrations.haystack import TritonRanker
    from reranker_client.integrations.langchain import TritonRerank
    from reranker_client.integrations.llamaindex import TritonRerank as LlamaRerank

    long_text = "Climbers rest at base camp for weeks. " * 150 + "Everest's summit is 8,849 metres. " * 3
    texts = [long_text, SHORT[1]]
    with RerankClient(server.grpc_url) as client:
        expected = {r.index: r for r in client.rerank(QUERY, texts, long_documents="window")}
    assert expected[0].windows > 1

    def check(meta, index):
        assert meta["rerank_span"] == list(expected[index].span) and meta["rerank_windows"] == expected[index].windows

    out = TritonRerank(url=server.grpc_url, top_n=None, long_documents="window").compress_documents(
        [Document(page_content=t) for t in texts], QUERY
    )
    for d in out:
        check(d.metadata, texts.index(d.page_content))
    ranked = TritonRanker(url=server.grpc_url, top_k=None, long_documents="window").run(
        QUERY, [HaystackDocument(content=t) for t in texts]
    )["documents"]
    for d in ranked:
        check(d.meta, texts.index(d.content))
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in texts]
    for n in LlamaRerank(url=server.grpc_url, top_n=None, long_documents="window").postprocess_nodes(
        nodes, query_str=QUERY
    ):
        check(n.node.metadata, texts.index(n.node.get_content()))
        assert "rerank_span" not in n.node.get_content(metadata_mode=MetadataMode.LLM)  # not in the prompt


def test_haystack_scale_score_calibration_and_prefixes(server):
    import math

    from haystack import Document

    from reranker_client.integrations.haystack import TritonRanker

    docs = [Document(content=t) for t in SHORT]
    with RerankClient(server.grpc_url) as client:
        plain = {r.index: r for r in client.rerank(QUERY, SHORT)}
        prefixed = {r.index: r for r in client.rerank("query: " + QUERY, ["passage: " + t for t in SHORT])}

    def by_text(out):
        return {SHORT.index(d.content): d.score for d in out["documents"]}

    logits = by_text(TritonRanker(url=server.grpc_url, top_k=None, scale_score=False).run(QUERY, docs))
    assert logits == {i: r.logit for i, r in plain.items()}
    calibrated = by_text(TritonRanker(url=server.grpc_url, top_k=None, calibration_factor=0.5).run(QUERY, docs))
    assert calibrated == pytest.approx({i: 1 / (1 + math.exp(-0.5 * r.logit)) for i, r in plain.items()})
    ranker = TritonRanker(url=server.grpc_url, top_k=None, query_prefix="query: ", document_prefix="passage: ")
    assert by_text(ranker.run(QUERY, docs)) == pytest.approx({i: r.score for i, r in prefixed.items()}, abs=1e-6)
    assert [d.content for d in ranker.run(QUERY, docs)["documents"]][0] in SHORT  # the document, not the prefix


def test_cli_numbers_documents_by_their_input_line(server):
    stdin = SHORT[0] + "\n\n" + SHORT[1] + "\n   \n" + SHORT[2] + "\n"
    cmd = [sys.executable, "-m", "reranker_client.cli", "--url", server.grpc_url, "--query", QUERY, "--json"]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    rows = json.loads(proc.stdout)
    lines = stdin.split("\n")
    assert sorted(r["index"] for r in rows) == [0, 2, 4]
    with RerankClient(server.grpc_url) as client:
        scores = {r.index: r.score for r in client.rerank(QUERY, SHORT)}
    assert {r["index"]: r["score"] for r in rows} == pytest.approx({0: scores[0], 2: scores[1], 4: scores[2]})
    assert all(lines[r["index"]] in SHORT for r in rows)
    strict = subprocess.run(cmd + ["--strict"], input="\n" + BIG + "\n", capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1 and "documents[1] (input line 2)" in strict.stderr, strict.stderr


def test_readme_langchain_import_works_on_langchain_1(server):
    """LangChain 1.x moved ContextualCompressionRetriever to langchain-classic (pinned in
    requirements/dev.txt): the READMEs' import, run for real with our compressor."""
    from pathlib import Path

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from reranker_client.integrations.langchain import TritonRerank

    # Wherever the docs live (README.md, docs/*.md, client/README.md), every import of it is the 1.x one.
    root = Path(__file__).resolve().parent.parent
    docs = [root / "README.md", root / "client" / "README.md", *sorted((root / "docs").glob("*.md"))]
    imports = [
        (path.name, line.strip())
        for path in docs
        for line in path.read_text().splitlines()
        if "import ContextualCompressionRetriever" in line
    ]
    wanted = "from langchain_classic.retrievers import ContextualCompressionRetriever"
    assert imports and all(line.startswith(wanted) for _, line in imports), imports

    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=t) for t in SHORT]

    with TritonRerank(url=server.grpc_url, top_n=2) as compressor:
        retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=Fixed())
        found = retriever.invoke(QUERY)
    with RerankClient(server.grpc_url) as client:
        best = [SHORT[r.index] for r in client.rerank(QUERY, SHORT, top_k=2)]
    assert [d.page_content for d in found] == best


# ---------------------------------------------------------------- side by side with the built-ins
# The frameworks' own rerankers run the stand-in weights locally (sentence-transformers, torch on
# CPU); ours run the same weights on the server. Short texts: within max_length, where both
# truncation rules keep everything, so scores must agree. What differs on purpose is asserted as
# the client README's table states it.

TEXTS = [
    "Mount Everest is 8,849 metres high.",
    "Paris is the capital of France.",
    "K2 is the second highest mountain.",
    "The Dead Sea is the lowest point on land.",
    "Everest lies on the border of Nepal and China.",
]


class _STCrossEncoder:
    """langchain-classic's BaseCrossEncoder over sentence-transformers (what langchain-community's
    HuggingFaceCrossEncoder does, without that package)."""

    def __init__(self, model):
        self.model = model

    def score(self, text_pairs):
        return self.model.predict(text_pairs).tolist()


@pytest.fixture(scope="module")
def cross_encoder(tiny_model):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_model), device="cpu")


def test_langchain_side_by_side_with_cross_encoder_reranker(server, cross_encoder):
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_classic.retrievers.document_compressors.cross_encoder import BaseCrossEncoder
    from langchain_core.documents import Document

    from reranker_client.integrations.langchain import TritonRerank

    BaseCrossEncoder.register(_STCrossEncoder)
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    builtin = CrossEncoderReranker(model=_STCrossEncoder(cross_encoder))
    ours = TritonRerank(url=server.grpc_url)
    assert ours.top_n == builtin.top_n == 3
    theirs = builtin.compress_documents(docs, QUERY)
    mine = ours.compress_documents(docs, QUERY)
    assert [d.metadata["i"] for d in mine] == [d.metadata["i"] for d in theirs]
    expected = cross_encoder.predict([(QUERY, d.page_content) for d in theirs])
    assert [d.metadata["relevance_score"] for d in mine] == pytest.approx(expected.tolist(), abs=1e-5)
    assert "relevance_score" not in theirs[0].metadata  # the built-in writes no score
    ours.close()


def test_llamaindex_side_by_side_with_sentence_transformer_rerank(server, tiny_model):
    from llama_index.core.postprocessor import SentenceTransformerRerank
    from llama_index.core.schema import NodeWithScore, TextNode

    from reranker_client.integrations.llamaindex import TritonRerank

    def nodes():
        return [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.5) for i, t in enumerate(TEXTS)]

    builtin = SentenceTransformerRerank(model=str(tiny_model), device="cpu", top_n=len(TEXTS))
    ours = TritonRerank(url=server.grpc_url, top_n=len(TEXTS))
    theirs = builtin.postprocess_nodes(nodes(), query_str=QUERY)
    mine = ours.postprocess_nodes(nodes(), query_str=QUERY)
    assert [n.node.id_ for n in mine] == [n.node.id_ for n in theirs]
    assert [n.score for n in mine] == pytest.approx([float(n.score) for n in theirs], abs=1e-5)
    # Documented difference: the default top_n (built-in 2, ours 3).
    assert (
        len(SentenceTransformerRerank(model=str(tiny_model), device="cpu").postprocess_nodes(nodes(), query_str=QUERY))
        == 2
    )
    assert len(TritonRerank(url=server.grpc_url).postprocess_nodes(nodes(), query_str=QUERY)) == 3


def test_haystack_side_by_side_with_sentence_transformers_similarity_ranker(server, tiny_model):
    from haystack import Document
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.rankers.sentence_transformers import SentenceTransformersSimilarityRanker

    from reranker_client.integrations.haystack import TritonRanker

    docs = [Document(id=str(i), content=t, meta={"title": f"T{i}"}, score=0.1 * i) for i, t in enumerate(TEXTS)]
    docs.append(Document(id="2", content=TEXTS[2], meta={"title": "T2"}, score=0.9))  # a duplicate id
    options = dict(top_k=3, query_prefix="q: ", document_prefix="d: ", meta_fields_to_embed=["title"])
    builtin = SentenceTransformersSimilarityRanker(
        model=str(tiny_model), device=ComponentDevice.from_str("cpu"), **options
    )
    builtin.warm_up()
    ours = TritonRanker(url=server.grpc_url, **options)
    for scale in (True, False):
        builtin.scale_score = scale
        ours.scale_score = scale
        theirs = builtin.run(query=QUERY, documents=docs)["documents"]
        mine = ours.run(query=QUERY, documents=docs)["documents"]
        assert [d.id for d in mine] == [d.id for d in theirs] and len({d.id for d in mine}) == 3
        assert [d.score for d in mine] == pytest.approx([d.score for d in theirs], abs=1e-4)
        assert [d.meta["title"] for d in mine] == [d.meta["title"] for d in theirs]
    ours.close()
