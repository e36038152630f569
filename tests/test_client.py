"""The client package against the real server: protocols, sync/async, big lists, failover,
CLI, typed errors, RAG adapters, and a clean install without torch."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from common import calibration_texts
from common.raw_rerank import raw_rerank
from export.settings import MAX_TEXT_BYTES
from reranker_client import (
    AsyncRerankClient,
    InvalidInputError,
    ModelNotReadyError,
    RerankClient,
    ServerUnavailableError,
)
from tests.conftest import free_port, start_server

ROOT = Path(__file__).resolve().parent.parent
QUERY, DOCS = calibration_texts.hundred_passages()


def _url(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture(scope="module")
def raw_scores(server):
    """What the server itself answers for (QUERY, DOCS), in input order, one request at a time."""
    out = {k: [] for k in ("score", "logit", "tokens", "truncated")}
    for start in range(0, len(DOCS), 25):
        got = raw_rerank(server.grpc_url, [QUERY] * len(DOCS[start : start + 25]), DOCS[start : start + 25])
        for k in out:
            out[k].extend(got[k].tolist())
    return {k: np.array(v) for k, v in out.items()}


def _check(results, raw, top_k=None):
    assert [r.index for r in results] == list(np.argsort(-raw["score"], kind="stable"))[: top_k or len(raw["score"])]
    for r in results:
        assert abs(r.score - raw["score"][r.index]) < 1e-5 and abs(r.logit - raw["logit"][r.index]) < 1e-4
        assert r.tokens == raw["tokens"][r.index] and r.truncated == raw["truncated"][r.index]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sync_rerank_equals_server_outputs(server, raw_scores, protocol):
    with RerankClient(_url(server, protocol), protocol=protocol) as client:
        assert client.ready()
        _check(client.rerank(QUERY, DOCS), raw_scores)
        top = client.rerank(QUERY, DOCS, top_k=7, return_documents=True)
        _check(top, raw_scores, top_k=7)
        assert all(r.document == DOCS[r.index] for r in top)
        scores = client.score([(QUERY, d) for d in DOCS])
        np.testing.assert_allclose(scores, raw_scores["score"], atol=1e-5)  # input order


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_rerank_equals_server_outputs(server, raw_scores, protocol):
    async def run():
        async with AsyncRerankClient(_url(server, protocol), protocol=protocol) as client:
            assert await client.ready()
            results = await client.rerank(QUERY, DOCS)
            many = await asyncio.gather(*(client.rerank(QUERY, DOCS, top_k=5) for _ in range(4)))
            scores = await client.score([(QUERY, d) for d in DOCS])
            return results, many, scores

    results, many, scores = asyncio.run(run())
    _check(results, raw_scores)
    for top in many:
        _check(top, raw_scores, top_k=5)
    np.testing.assert_allclose(scores, raw_scores["score"], atol=1e-5)


def test_thousand_documents_in_one_call_keep_order(server, raw_scores):
    docs = DOCS * 10
    with RerankClient(server.grpc_url, max_concurrency=4) as client:
        scores = client.score([(QUERY, d) for d in docs])
        ranked = client.rerank(QUERY, docs)
    np.testing.assert_allclose(scores, np.tile(raw_scores["score"], 10), atol=1e-5)
    assert len(ranked) == 1000 and sorted(r.index for r in ranked) == list(range(1000))


def test_concurrent_callers_share_one_client(server, raw_scores):
    with RerankClient(server.grpc_url) as client, ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: client.rerank(QUERY, DOCS, top_k=10), range(12)))
    for top in outcomes:
        _check(top, raw_scores, top_k=10)


def test_input_errors_are_raised_before_anything_is_sent():
    dead = f"localhost:{free_port()}"  # nothing listens: a request would fail differently
    with RerankClient(dead, retries=0) as client:
        assert client.rerank("q", []) == []
        with pytest.raises(InvalidInputError, match=r"documents\[1\]: expected str"):
            client.rerank("q", ["ok", 3])
        with pytest.raises(InvalidInputError, match=r"documents\[0\]: is empty"):
            client.rerank("q", ["  "])
        with pytest.raises(InvalidInputError, match="query: is empty"):
            client.rerank("", ["doc"])
        with pytest.raises(InvalidInputError, match="top_k"):
            client.rerank("q", ["doc"], top_k=-1)
        with pytest.raises(ServerUnavailableError):
            client.rerank("q", ["doc"])


def test_server_side_errors_are_typed(server):
    with RerankClient(server.grpc_url, model="no_such_model", retries=0) as client:
        with pytest.raises(ModelNotReadyError):
            client.rerank("q", ["d"])
    with RerankClient(server.grpc_url, retries=0) as client:
        with pytest.raises(InvalidInputError, match=f"exceeds the limit of {MAX_TEXT_BYTES}"):
            client.rerank("q", ["x" * (MAX_TEXT_BYTES + 1)], strict=True)  # default: cut, flagged
        assert client.rerank("q", ["fine"])[0].index == 0  # the server is still fine


def test_failover_when_one_endpoint_stops(python_repo, server, raw_scores, tmp_path):
    second = start_server(python_repo, tmp_path)
    stopped = threading.Event()
    try:
        with RerankClient([second.grpc_url, server.grpc_url], retries=4, timeout=60) as client:

            def stop_soon():
                time.sleep(0.5)
                second.stop()
                stopped.set()

            threading.Thread(target=stop_soon).start()
            answered, after_stop = 0, 0
            deadline = time.monotonic() + 180  # a guard against hanging, not a timing assertion
            while after_stop < 5:
                was_stopped = stopped.is_set()
                _check(client.rerank(QUERY, DOCS, top_k=10), raw_scores, top_k=10)
                answered += 1
                after_stop += was_stopped
                assert time.monotonic() < deadline
    finally:
        second.stop()
    assert answered >= 5 and after_stop == 5


def test_cli_table_and_json(server):
    docs = [d for d in DOCS if "\n" not in d][:20]  # one document per line
    expected = raw_rerank(server.grpc_url, [QUERY] * len(docs), docs)["score"]
    stdin = "\n".join(docs) + "\n"
    cmd = [sys.executable, "-m", "reranker_client.cli", "--url", server.grpc_url, "--query", QUERY]
    table = subprocess.run(cmd + ["--top-k", "3"], input=stdin, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) >= 4
    as_json = subprocess.run(cmd + ["--json"], input=stdin, capture_output=True, text=True, timeout=60)
    rows = json.loads(as_json.stdout)
    assert [r["index"] for r in rows] == list(np.argsort(-expected, kind="stable"))
    assert set(rows[0]) == {"index", "score", "logit", "tokens", "truncated"}
    # Window mode: every result says where its best window is (short documents: the whole text).
    windowed = subprocess.run(
        cmd + ["--json", "--long-documents", "window"], input=stdin, capture_output=True, text=True, timeout=60
    )
    rows = json.loads(windowed.stdout)
    assert all(r["span"] == [0, len(docs[r["index"]].strip())] and r["windows"] == 1 for r in rows)
    table = subprocess.run(
        cmd + ["--long-documents", "window", "--top-k", "2"], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0 and "span" in table.stdout.splitlines()[0]


def _with_empty(items, make_empty):
    """The 30 documents with empty ones mixed in: they must rank last with score 0, never fail."""
    return items[:10] + [make_empty(0)] + items[10:20] + [make_empty(1)] + items[20:]


def test_langchain_compressor_sync_and_async(server, raw_scores):
    from langchain_core.documents import BaseDocumentCompressor, Document

    from reranker_client.integrations.langchain import TritonRerank

    docs = _with_empty(
        [Document(page_content=d, metadata={"source": i}) for i, d in enumerate(DOCS[:30])],
        lambda j: Document(page_content=" " * j, metadata={"source": f"empty{j}"}),
    )
    compressor = TritonRerank(url=server.grpc_url, top_n=4)
    assert isinstance(compressor, BaseDocumentCompressor)
    expected = list(np.argsort(-raw_scores["score"][:30], kind="stable"))
    out = compressor.compress_documents(docs, QUERY)
    assert [d.metadata["source"] for d in out] == expected[:4]
    assert all(abs(d.metadata["relevance_score"] - raw_scores["score"][d.metadata["source"]]) < 1e-5 for d in out)

    async def run_async():
        async with AsyncRerankClient(server.http_url, protocol="http") as client:
            every = await TritonRerank(async_client=client, top_n=None).acompress_documents(docs, QUERY)
        return every, await compressor.acompress_documents(docs, QUERY)

    every, top4 = asyncio.run(run_async())
    assert [d.metadata["source"] for d in every] == expected + ["empty0", "empty1"]
    assert [d.metadata["relevance_score"] for d in every[-2:]] == [0.0, 0.0]
    assert [d.metadata["source"] for d in top4] == expected[:4]
    compressor.close()


def test_llamaindex_postprocessor_sync_and_async(server, raw_scores):
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from reranker_client.integrations.llamaindex import TritonRerank

    nodes = _with_empty(
        [
            NodeWithScore(
                node=TextNode(text=d, id_=str(i), metadata={"k": i}, excluded_embed_metadata_keys=["k"]), score=0.0
            )
            for i, d in enumerate(DOCS[:30])
        ],
        lambda j: NodeWithScore(node=TextNode(text="", id_=f"empty{j}"), score=0.0),
    )
    post = TritonRerank(url=server.grpc_url, top_n=5)
    assert isinstance(post, BaseNodePostprocessor)
    expected = list(np.argsort(-raw_scores["score"][:30], kind="stable"))
    out = post.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert [int(n.node.id_) for n in out] == expected[:5]
    metadata = out[0].node.metadata  # the node's own, plus the result's rerank_* fields
    assert metadata == {"k": expected[0], "rerank_logit": metadata["rerank_logit"], "rerank_truncated": False}
    assert abs(metadata["rerank_logit"] - raw_scores["logit"][expected[0]]) < 1e-4
    assert abs(out[0].score - raw_scores["score"][expected[0]]) < 1e-5
    every = asyncio.run(TritonRerank(url=server.grpc_url, top_n=None).apostprocess_nodes(nodes, query_str=QUERY))
    assert [n.node.id_ for n in every] == [str(i) for i in expected] + ["empty0", "empty1"]
    assert [n.score for n in every[-2:]] == [0.0, 0.0]
    assert all(abs(n.score - raw_scores["score"][int(n.node.id_)]) < 1e-5 for n in every[:30])


def test_haystack_ranker_sync_and_async(server, raw_scores):
    from haystack import Document, Pipeline

    from reranker_client.integrations.haystack import TritonRanker

    docs = _with_empty(
        [Document(content=d, meta={"i": i}) for i, d in enumerate(DOCS[:30])],
        lambda j: Document(content=None, meta={"i": f"empty{j}"}),
    )
    expected = list(np.argsort(-raw_scores["score"][:30], kind="stable"))
    pipe = Pipeline()
    pipe.add_component("ranker", TritonRanker(url=server.grpc_url, top_k=10))
    pipe.warm_up()  # checks the server
    out = pipe.run({"ranker": {"query": QUERY, "documents": docs, "top_k": 3}})["ranker"]["documents"]
    assert [d.meta["i"] for d in out] == expected[:3]
    assert abs(out[0].score - raw_scores["score"][expected[0]]) < 1e-5

    apipe = Pipeline()  # Haystack 3: Pipeline.run_async drives components' run_async
    apipe.add_component("ranker", TritonRanker(url=server.http_url, protocol="http", top_k=None))

    async def run_async():
        await apipe.warm_up_async()
        result = await apipe.run_async({"ranker": {"query": QUERY, "documents": docs}})
        await apipe.close_async()
        return result["ranker"]["documents"]

    every = asyncio.run(run_async())
    assert [d.meta["i"] for d in every] == expected + ["empty0", "empty1"]
    assert [d.score for d in every[-2:]] == [0.0, 0.0]
    threshold = float(np.sort(raw_scores["score"][:30])[-5])  # the 5th best score
    kept = TritonRanker(url=server.grpc_url, top_k=None, score_threshold=threshold).run(QUERY, docs)["documents"]
    assert [d.meta["i"] for d in kept] == expected[:5]


def test_packing_without_a_tokenizer_follows_the_server_max_length(server):
    """1,000 documents (the 100 calibration passages x 10): byte lengths alone put every long
    passage in its own length class (25 requests); byte-estimated tokens capped at the server's
    max_length, in its buckets, need ~21 (16 is the floor at 64 pairs per request)."""
    from reranker_client.planning import validate_query_documents

    with RerankClient(server.grpc_url) as client:
        limits = client.server_limits()
        chunks = client._chunks(validate_query_documents(QUERY, DOCS * 10), limits)
    assert limits.max_length and len(chunks) <= 22, len(chunks)
    assert all(len(c.rows) <= limits.max_batch_size for c in chunks)


def test_max_concurrency_is_per_call_so_a_small_call_is_not_stuck_behind_a_big_one(server):
    """max_concurrency means the same in both clients: requests of ONE call in flight. A small
    call made while another caller's big call runs on the same client (max_concurrency=1) gets
    its own request in flight and answers long before the big call ends; it used to queue behind
    every chunk of the big call on a max_concurrency-sized shared pool."""
    with RerankClient(server.grpc_url, max_concurrency=1, timeout=120) as client:
        started = threading.Event()

        def big_caller():
            started.set()
            return client.score([(QUERY, d) for d in DOCS * 60])  # many chunks, one at a time

        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(big_caller)
            started.wait()
            time.sleep(0.2)  # let the big call start its chunks first
            begin = time.monotonic()
            assert len(client.score([(QUERY, DOCS[0])], timeout=10)) == 1
            small_took = time.monotonic() - begin
            assert not big.done()
            assert len(big.result()) == 60 * len(DOCS)
            big_after = time.monotonic() - begin
        print(f"\nsmall call answered in {small_took:.2f}s; the big call ended {big_after:.1f}s after it began")
        assert small_took < big_after / 2
