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

from export import calibration_texts
from export.settings import MAX_TEXT_BYTES
from reranker_client import (AsyncRerankClient, DeadlineExceededError, InvalidInputError, ModelNotReadyError, RerankClient,
                             ServerUnavailableError)
from tests.conftest import free_port, start_server
from tests.server_helpers import raw_rerank

ROOT = Path(__file__).resolve().parent.parent
QUERY, DOCS = calibration_texts.hundred_passages()


def _url(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture(scope="module")
def raw_scores(server):
    """What the server itself answers for (QUERY, DOCS), in input order, one request at a time."""
    out = {k: [] for k in ("score", "logit", "tokens", "truncated")}
    for start in range(0, len(DOCS), 25):
        got = raw_rerank(server.grpc_url, [QUERY] * len(DOCS[start:start + 25]), DOCS[start:start + 25])
        for k in out:
            out[k].extend(got[k].tolist())
    return {k: np.array(v) for k, v in out.items()}


def _check(results, raw, top_k=None):
    assert [r.index for r in results] == list(np.argsort(-raw["score"], kind="stable"))[:top_k or len(raw["score"])]
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
    with RerankClient(server.grpc_url) as client:
        with ThreadPoolExecutor(6) as pool:
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
            client.rerank("q", ["x" * (MAX_TEXT_BYTES + 1)])
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
    windowed = subprocess.run(cmd + ["--json", "--long-documents", "window"], input=stdin, capture_output=True,
                              text=True, timeout=60)
    rows = json.loads(windowed.stdout)
    assert all(r["span"] == [0, len(docs[r["index"]].strip())] and r["windows"] == 1 for r in rows)
    table = subprocess.run(cmd + ["--long-documents", "window", "--top-k", "2"], input=stdin, capture_output=True,
                           text=True, timeout=60)
    assert table.returncode == 0 and "span" in table.stdout.splitlines()[0]


def test_langchain_compressor(server, raw_scores):
    from langchain_core.documents import BaseDocumentCompressor, Document

    from reranker_client.integrations.langchain import TritonRerank

    docs = [Document(page_content=d, metadata={"source": i}) for i, d in enumerate(DOCS[:30])]
    compressor = TritonRerank(url=server.grpc_url, top_n=4)
    assert isinstance(compressor, BaseDocumentCompressor)
    out = compressor.compress_documents(docs, QUERY)
    expected = list(np.argsort(-raw_scores["score"][:30], kind="stable"))[:4]
    assert [d.metadata["source"] for d in out] == expected
    assert all(abs(d.metadata["relevance_score"] - raw_scores["score"][d.metadata["source"]]) < 1e-5 for d in out)


def test_llamaindex_postprocessor(server, raw_scores):
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from reranker_client.integrations.llamaindex import TritonRerank

    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i), metadata={"k": i},
                                                excluded_embed_metadata_keys=["k"]), score=0.0)
             for i, d in enumerate(DOCS[:30])]
    post = TritonRerank(url=server.grpc_url, top_n=5)
    assert isinstance(post, BaseNodePostprocessor)
    out = post.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    expected = list(np.argsort(-raw_scores["score"][:30], kind="stable"))[:5]
    assert [int(n.node.id_) for n in out] == expected and out[0].node.metadata == {"k": expected[0]}
    assert abs(out[0].score - raw_scores["score"][expected[0]]) < 1e-5


def test_haystack_ranker(server, raw_scores):
    from haystack import Document, Pipeline

    from reranker_client.integrations.haystack import TritonRanker

    docs = [Document(content=d, meta={"i": i}) for i, d in enumerate(DOCS[:30])]
    pipe = Pipeline()
    pipe.add_component("ranker", TritonRanker(url=server.grpc_url, top_k=10))
    out = pipe.run({"ranker": {"query": QUERY, "documents": docs, "top_k": 3}})["ranker"]["documents"]
    expected = list(np.argsort(-raw_scores["score"][:30], kind="stable"))[:3]
    assert [d.meta["i"] for d in out] == expected
    assert abs(out[0].score - raw_scores["score"][expected[0]]) < 1e-5


def test_client_installs_alone_without_torch(server, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT / "client")],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    probe = ("import importlib.util, sys; from reranker_client import RerankClient\n"
             "assert importlib.util.find_spec('torch') is None and importlib.util.find_spec('transformers') is None\n"
             f"r = RerankClient({server.grpc_url!r}).rerank('q', ['a passage', 'another one'])\n"
             "print(len(r))")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "2", run.stderr[-2000:]
    assert (venv / "bin" / "rerank-client").exists()


def test_deadline_holds_when_the_client_pool_is_busy(server):
    """A call queued behind another caller's work (all max_concurrency workers busy) gives up at
    its own deadline instead of waiting for the other caller to finish."""
    with RerankClient(server.grpc_url, max_concurrency=1, timeout=60) as client:
        started = threading.Event()

        def big_caller():
            started.set()
            return client.score([(QUERY, d) for d in DOCS * 60])  # many chunks on the one worker

        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(big_caller)
            started.wait()
            time.sleep(0.2)  # let the big call queue its chunks first
            begin = time.monotonic()
            with pytest.raises(DeadlineExceededError, match="still queued"):
                client.score([(QUERY, DOCS[0])], timeout=0.5)
            waited = time.monotonic() - begin
            assert len(big.result()) == 60 * len(DOCS)  # the other caller still gets its whole answer
            big_after = time.monotonic() - begin
        print(f"\nqueued call gave up after {waited:.2f}s (deadline 0.5s); the big call ended "
              f"{big_after:.1f}s after it began")
        assert waited < 0.5 + 0.4 < big_after
