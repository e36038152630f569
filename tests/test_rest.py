"""The REST API (rest/: reranker_rest) against the real local tritonserver, with real clients:
the official Cohere SDK, httpx for TEI's and Jina's shapes, our own client as the reference."""

from __future__ import annotations

import asyncio
import json
import re
import time

import cohere
import httpx
import numpy as np
import pytest
from cohere.core.api_error import ApiError as CohereApiError

from common.raw_rerank import raw_rerank
from reranker_client import RerankClient
from reranker_rest.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DOCUMENTS, Settings
from tests.conftest import free_port, start_server
from tests.rest_helpers import DOCS, QUERY, rest_service
from tests.test_robustness import _repository_with_small_queue

NO_RETRY = {"max_retries": 0}  # the SDK would retry 429/5xx itself and hide our answer


@pytest.fixture(scope="module")
def reference(server):
    """Our client's answer for (QUERY, DOCS), best first: what every route must reproduce."""
    with RerankClient(server.grpc_url) as client:
        return client.rerank(QUERY, DOCS)


@pytest.fixture(scope="module")
def ensemble(server):
    """The ensemble's own outputs for the same pairs, one raw request, input order."""
    return raw_rerank(server.grpc_url, [QUERY] * len(DOCS), DOCS)


def test_cohere_sdk_v1_and_v2_get_our_clients_results(rest, reference):
    v1 = cohere.Client(api_key="unused", base_url=rest, timeout=30)
    answer = v1.rerank(
        model="bge-reranker-v2-m3", query=QUERY, documents=DOCS, return_documents=True, request_options=NO_RETRY
    )
    assert [(r.index, r.relevance_score) for r in answer.results] == [(r.index, r.score) for r in reference]
    assert [r.document.text for r in answer.results] == [DOCS[r.index] for r in reference]
    assert answer.meta.api_version.version == "1" and answer.id

    v2 = cohere.ClientV2(api_key="unused", base_url=rest, timeout=30)
    answer = v2.rerank(model="bge-reranker-v2-m3", query=QUERY, documents=DOCS, top_n=3, request_options=NO_RETRY)
    assert [(r.index, r.relevance_score) for r in answer.results] == [(r.index, r.score) for r in reference[:3]]
    assert answer.meta.api_version.version == "2"
    assert all(getattr(r, "document", None) is None for r in answer.results)  # not asked for


def test_scores_are_the_ensembles_and_ordered(rest, ensemble):
    body = httpx.post(f"{rest}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30).json()
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in body["results"]) == list(range(len(DOCS)))
    by_index = {r["index"]: r for r in body["results"]}
    np.testing.assert_allclose([by_index[i]["relevance_score"] for i in range(len(DOCS))], ensemble["score"], atol=1e-6)
    assert [by_index[i]["tokens"] for i in range(len(DOCS))] == ensemble["tokens"].tolist()
    assert body["usage"]["total_tokens"] == int(ensemble["tokens"].sum())

    top = httpx.post(f"{rest}/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2}, timeout=30).json()
    assert [r["index"] for r in top["results"]] == [r["index"] for r in body["results"][:2]]
    many = httpx.post(f"{rest}/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 99}, timeout=30).json()
    assert len(many["results"]) == len(DOCS)


def test_jina_shaped_request(rest, reference):
    docs = [{"text": d, "id": f"doc-{i}"} for i, d in enumerate(DOCS)]
    answer = httpx.post(
        f"{rest}/v1/rerank",
        json={
            "model": "jina-reranker-v2-base-multilingual",
            "query": QUERY,
            "documents": docs,
            "top_n": 3,
            "return_documents": True,
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == Settings().served_model and body["usage"]["total_tokens"] > 0
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == [(r.index, r.score) for r in reference[:3]]
    # Object documents come back whole: their other keys are the caller's to keep.
    assert [r["document"] for r in body["results"]] == [docs[r.index] for r in reference[:3]]


def test_tei_route(rest, ensemble, reference):
    answer = httpx.post(f"{rest}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, timeout=30)
    assert answer.status_code == 200, answer.text
    ranks = answer.json()
    assert [(r["index"], r["score"]) for r in ranks] == [(r.index, r.score) for r in reference]
    assert [r["text"] for r in ranks] == [DOCS[r.index] for r in reference]

    raw = httpx.post(f"{rest}/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, timeout=30).json()
    np.testing.assert_allclose(
        [r["score"] for r in sorted(raw, key=lambda r: r["index"])], ensemble["logit"], atol=1e-5
    )
    assert all("text" not in r for r in raw)

    long_text = "Paris " * 2000  # far beyond max_length: cut and flagged, or refused when asked
    cut = httpx.post(f"{rest}/rerank", json={"query": QUERY, "texts": ["short", long_text]}, timeout=30).json()
    assert {r["index"]: r["truncated"] for r in cut} == {0: False, 1: True}
    refused = httpx.post(
        f"{rest}/rerank", json={"query": QUERY, "texts": ["short", long_text], "truncate": False}, timeout=30
    )
    assert refused.status_code == 400 and refused.json()["error"].startswith("texts[1]: ")
    left = httpx.post(
        f"{rest}/rerank", json={"query": QUERY, "texts": DOCS, "truncation_direction": "Left"}, timeout=30
    )
    assert left.status_code == 400 and "truncation_direction" in left.json()["error"]


@pytest.mark.parametrize(
    "route,body,status,field",
    [
        ("/v1/rerank", {"query": QUERY, "documents": []}, 400, "documents: must not be empty"),
        ("/rerank", {"query": QUERY, "texts": []}, 400, "texts: must not be empty"),
        ("/v1/rerank", {"query": QUERY, "documents": ["ok", 7]}, 422, "documents[1]"),
        ("/v1/rerank", {"query": QUERY, "documents": ["ok", {"title": "no text"}]}, 422, "documents[1]"),
        ("/rerank", {"query": QUERY, "texts": ["ok", None]}, 422, "texts[1]"),
        ("/v2/rerank", {"query": QUERY, "documents": ["ok", "  "]}, 400, "documents[1]: is empty"),
        ("/rerank", {"query": QUERY, "texts": ["ok", "  "]}, 400, "texts[1]: is empty"),
        ("/v2/rerank", {"documents": ["ok"]}, 422, "query: Field required"),
        ("/v2/rerank", {"query": QUERY, "documents": ["ok"], "top_n": -1}, 422, "top_n"),
        ("/v2/rerank", {"query": QUERY, "documents": ["ok"], "max_tokens_per_doc": 16}, 400, "max_tokens_per_doc: 16"),
        (
            "/v2/rerank",
            {"query": QUERY, "documents": ["x"] * 10_000},
            400,
            f"documents: 10000 documents exceed the limit of {DEFAULT_MAX_DOCUMENTS}",
        ),
    ],
)
def test_bad_input_names_the_field_in_the_apis_shape(rest, route, body, status, field):
    answer = httpx.post(f"{rest}{route}", json=body, timeout=30)
    assert answer.status_code == status, answer.text
    message = answer.json()["error" if route == "/rerank" else "message"]
    assert field in message, message


def test_limits_documents_and_max_tokens(rest, server):
    # At the document limit the request is served: the client chunks it into Triton batches.
    docs = [f"document number {i} about Paris" for i in range(DEFAULT_MAX_DOCUMENTS)]
    answer = httpx.post(f"{rest}/v2/rerank", json={"query": QUERY, "documents": docs, "top_n": 5}, timeout=120)
    assert answer.status_code == 200, answer.text
    with RerankClient(server.grpc_url) as client:
        expected = client.rerank(QUERY, docs, top_k=5)
    assert [r["index"] for r in answer.json()["results"]] == [r.index for r in expected]
    # A per-document limit at or above the pair limit holds already: accepted.
    with RerankClient(server.grpc_url) as client:
        max_length = client.server_limits().max_length
    ok = httpx.post(
        f"{rest}/v2/rerank", json={"query": QUERY, "documents": DOCS, "max_tokens_per_doc": max_length}, timeout=30
    )
    assert ok.status_code == 200, ok.text


def test_body_over_the_limit_is_413_before_it_is_read(rest):
    big = {"query": QUERY, "documents": ["x" * (10 * 1024 * 1024)]}  # a 10 MB body
    assert DEFAULT_MAX_BODY_BYTES < 10 * 1024 * 1024
    answer = httpx.post(f"{rest}/v1/rerank", json=big, timeout=30)
    assert answer.status_code == 413 and "REST_MAX_BODY_BYTES" in answer.json()["message"]

    def chunked():  # no Content-Length: counted as it arrives
        yield b'{"query": "q", "texts": ["'
        for _ in range(10):
            yield b"y" * (1024 * 1024)
        yield b'"]}'

    answer = httpx.post(f"{rest}/rerank", content=chunked(), headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and answer.json()["error_type"] == "Validation"
    assert httpx.get(f"{rest}/health", timeout=5).status_code == 200


def test_api_keys_from_env_and_file(server, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one key per line\nfile-key\n")
    with rest_service(server.grpc_url, api_keys=("env-key",), api_keys_file=str(keys_file)) as url:
        missing = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(
            f"{url}/rerank", json={"query": QUERY, "texts": DOCS}, headers={"Authorization": "Bearer nope"}, timeout=30
        )
        assert wrong.status_code == 401 and wrong.json()["error_type"] == "Unauthorized"
        with pytest.raises(cohere.UnauthorizedError):
            cohere.ClientV2(api_key="nope", base_url=url).rerank(
                model="m", query=QUERY, documents=DOCS, request_options=NO_RETRY
            )
        for key in ("env-key", "file-key"):
            answer = cohere.ClientV2(api_key=key, base_url=url).rerank(model="m", query=QUERY, documents=DOCS)
            assert len(answer.results) == len(DOCS)
        keys_file.write_text("rotated-key\n")  # a rotated Secret applies without a restart
        time.sleep(0.01)
        rotated = httpx.post(
            f"{url}/v2/rerank",
            json={"query": QUERY, "documents": DOCS},
            headers={"Authorization": "Bearer rotated-key"},
            timeout=30,
        )
        assert rotated.status_code == 200, rotated.text
        # Probes and Prometheus stay open.
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200


def test_triton_down_is_503_quickly():
    triton_port = free_port()
    with rest_service(f"localhost:{triton_port}") as url:  # nothing listens there
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{url}/ready", timeout=5).status_code == 503
        start = time.perf_counter()
        answer = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
        elapsed = time.perf_counter() - start
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
        assert elapsed < 2.0, elapsed
        # Triton's address is the operator's business (issue 26): the log has it, the answer not.
        for internal in (str(triton_port), "localhost", "StatusCode"):
            assert internal not in answer.text, answer.text
        with pytest.raises(CohereApiError) as err:  # the SDK sees Cohere's 503 too
            cohere.ClientV2(api_key="k", base_url=url).rerank(
                model="m", query=QUERY, documents=DOCS, request_options=NO_RETRY
            )
        assert err.value.status_code == 503


def test_deadline_is_504(server):
    with rest_service(server.grpc_url, timeout_s=0.0001) as url:
        answer = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS}, timeout=30)
        assert answer.status_code == 504 and "deadline" in answer.json()["error"], answer.text


def test_overload_is_429_with_retry_after(python_repo, tmp_path, ensemble):
    srv = start_server(_repository_with_small_queue(python_repo, tmp_path / "repo", queue=2), tmp_path)
    try:
        # retries=0: the shed reaches the caller at once (with retries it would only after them).
        with rest_service(srv.grpc_url, retries=0) as url:

            async def burst():
                async with httpx.AsyncClient(timeout=60) as client:
                    calls = [
                        client.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS}) for _ in range(64)
                    ]
                    return await asyncio.gather(*calls)

            answers = asyncio.run(burst())
            statuses = [a.status_code for a in answers]
            assert set(statuses) <= {200, 429}, statuses
            shed = [a for a in answers if a.status_code == 429]
            assert shed and all(a.headers["retry-after"] == "1" and "overloaded" in a.json()["message"] for a in shed)
            for a in answers:
                if a.status_code == 200:
                    by_index = {r["index"]: r["relevance_score"] for r in a.json()["results"]}
                    np.testing.assert_allclose([by_index[i] for i in range(len(DOCS))], ensemble["score"], atol=1e-6)
            print(f"\n64 concurrent requests into a queue of 2: {statuses.count(200)} answered, {len(shed)} shed (429)")
            assert httpx.get(f"{url}/ready", timeout=5).status_code == 200
    finally:
        srv.stop()


def test_ready_metrics_and_openapi(rest):
    assert httpx.get(f"{rest}/ready", timeout=5).json() == {"ready": True}
    httpx.post(f"{rest}/v2/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
    metrics = httpx.get(f"{rest}/metrics", timeout=5).text
    assert 'reranker_rest_requests_total{route="/v2/rerank",status="200"}' in metrics
    assert "reranker_rest_request_seconds_bucket" in metrics
    assert 'reranker_rest_documents_total{route="/v2/rerank"}' in metrics
    spec = httpx.get(f"{rest}/openapi.json", timeout=5).json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    assert httpx.get(f"{rest}/docs", timeout=5).status_code == 200


def test_settings_from_env():
    settings = Settings.from_env(
        {
            "REST_TRITON_URL": "a:8001, b:8001",
            "REST_MAX_DOCUMENTS": "50",
            "REST_TIMEOUT_S": "2.5",
            "REST_API_KEYS": "k1,k2",
        }
    )
    assert settings.triton_urls == ("a:8001", "b:8001") and settings.max_documents == 50
    assert settings.timeout_s == 2.5 and settings.api_keys == ("k1", "k2") and settings.host == "127.0.0.1"
    with pytest.raises(ValueError, match="max_documents"):
        Settings.from_env({"REST_MAX_DOCUMENTS": "0"})


def test_rest_leaves_the_deadline_to_the_client_unless_set():
    """Unset REST_TIMEOUT_S: the service's client gets no timeout, so it derives each call's
    deadline from the server's published class timeouts (198 s for an 8,192 class) as the Python
    client does; a fixed 30 s would answer 504 to a long-document request the server allows."""
    from reranker_rest.backend import make_client

    settings = Settings.from_env({"REST_TRITON_URL": "localhost:8001"})
    assert settings.timeout_s is None
    client = make_client(settings)
    try:
        assert client.config.timeout is None and client.timeout is None
    finally:
        asyncio.run(client.close())


def test_window_mode_extra_on_both_routes(rest, server):
    """`long_documents: "window"` (our extra): a long document keeps its best window's score and
    says where that window is; the same request as the client's window mode gives the same
    answer. Truncate mode (the default) answers without `span`, the standard shapes unchanged."""
    from reranker_client import RerankClient

    long_doc = " ".join(DOCS) * 6  # far past max_length: several windows
    documents = [DOCS[0], long_doc]
    with RerankClient(server.grpc_url) as client:
        expected = {r.index: r for r in client.rerank(QUERY, documents, long_documents="window")}
    cohere = httpx.post(
        f"{rest}/v1/rerank", json={"query": QUERY, "documents": documents, "long_documents": "window"}, timeout=60
    ).json()
    tei = httpx.post(
        f"{rest}/rerank", json={"query": QUERY, "texts": documents, "long_documents": "window"}, timeout=60
    ).json()
    for answer in (cohere["results"], tei):
        by_index = {r["index"]: r for r in answer}
        for i, r in expected.items():
            assert tuple(by_index[i]["span"]) == r.span and by_index[i]["windows"] == r.windows
        start, end = by_index[1]["span"]
        assert by_index[1]["windows"] > 1 and 0 <= start < end <= len(long_doc)
    assert [round(r["relevance_score"], 6) for r in cohere["results"]] == [
        round(r.score, 6) for r in sorted(expected.values(), key=lambda r: -r.score)
    ]
    plain = httpx.post(f"{rest}/v1/rerank", json={"query": QUERY, "documents": documents}, timeout=60).json()
    assert all("span" not in r and "windows" not in r for r in plain["results"])


# --- issue 28: the ecosystem's calls, and messages in plain words ---------------------------


def test_rerank_route_speaks_both_dialects(rest, reference):
    """vLLM, Infinity, RAGFlow and LiteLLM's hosted_vllm/ post Cohere/Jina bodies to /rerank:
    answered in that shape (documents returned by default, as vLLM and Jina do); TEI bodies
    keep TEI's answer."""
    cohere_body = httpx.post(f"{rest}/rerank", json={"model": "m", "query": QUERY, "documents": DOCS}, timeout=30)
    assert cohere_body.status_code == 200, cohere_body.text
    results = cohere_body.json()["results"]
    assert [(r["index"], r["relevance_score"]) for r in results] == [(r.index, r.score) for r in reference]
    assert [r["document"] for r in results] == [{"text": DOCS[r.index]} for r in reference]
    plain = httpx.post(
        f"{rest}/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": False}, timeout=30
    ).json()
    assert all("document" not in r for r in plain["results"])
    # Cohere's own routes keep Cohere's default (the same body from a Jina caller cannot be told apart).
    cohere_route = httpx.post(f"{rest}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30).json()
    assert all("document" not in r for r in cohere_route["results"])
    tei = httpx.post(f"{rest}/rerank", json={"query": QUERY, "texts": DOCS}, timeout=30).json()
    assert [(r["index"], r["score"]) for r in tei] == [(r.index, r.score) for r in reference]
    neither = httpx.post(f"{rest}/rerank", json={"query": QUERY}, timeout=30)
    assert (
        neither.status_code == 422
        and "`texts`" in neither.json()["error"]
        and "`documents`" in neither.json()["message"]
    )


def test_info_as_tei_answers_it_and_models(rest, server):
    """Dify's TEI provider reads GET /info's model_type (must be `reranker`) and limits."""
    with RerankClient(server.grpc_url) as client:
        limits = client.server_limits()
    info = httpx.get(f"{rest}/info", timeout=10)
    assert info.status_code == 200, info.text
    body = info.json()
    assert list(body["model_type"]) == ["reranker"] and body["model_id"] == Settings().served_model
    assert body["max_input_length"] == limits.max_length and body["max_client_batch_size"] == DEFAULT_MAX_DOCUMENTS
    models = httpx.get(f"{rest}/v1/models", timeout=10).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [Settings().served_model]


def test_model_policy(server):
    """Default: any `model` is accepted (clients send Cohere's or their user's names). With
    REST_MODEL_ALIASES: the served names only, others 404 naming them."""
    with rest_service(server.grpc_url, model_aliases=("bge-m3-rerank",)) as url:
        listed = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]]
        assert listed == [Settings().served_model, "bge-m3-rerank"]
        for name in listed:
            ok = httpx.post(f"{url}/v2/rerank", json={"model": name, "query": QUERY, "documents": DOCS}, timeout=30)
            assert ok.status_code == 200, ok.text
        other = httpx.post(f"{url}/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS})
        assert other.status_code == 404 and "model: 'rerank-v3.5' is not served here" in other.json()["message"]
        assert "bge-m3-rerank" in other.json()["message"]


def test_rank_fields_join_the_named_fields(rest, server):
    """Cohere v1 objects without `text`: the fields named in rank_fields, in that order, as
    `field: value` lines (Cohere's YAML form for structured documents)."""
    docs = [{"title": t, "body": b, "id": i} for i, (t, b) in enumerate(zip(["Paris", "Bananas", "Berlin"], DOCS))]
    joined = [f"title: {d['title']}\nbody: {d['body']}" for d in docs]
    with RerankClient(server.grpc_url) as client:
        expected = client.rerank(QUERY, joined)
    answer = httpx.post(
        f"{rest}/v1/rerank",
        json={"query": QUERY, "documents": docs, "rank_fields": ["title", "body"], "return_documents": True},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["index"], r["relevance_score"]) for r in results] == [(r.index, r.score) for r in expected]
    assert [r["document"] for r in results] == [docs[r.index] for r in expected]  # the object as sent
    missing = httpx.post(
        f"{rest}/v1/rerank", json={"query": QUERY, "documents": docs + [{"id": 9}], "rank_fields": ["title"]}
    )
    assert missing.status_code == 422 and missing.json()["message"].startswith("documents[3]: has none of")


@pytest.mark.parametrize("documents,units", [(1, 1), (100, 1), (101, 2), (250, 3)])
def test_search_units_are_billed_per_100_documents(rest, documents, units):
    docs = [f"document {i} about Paris" for i in range(documents)]
    body = httpx.post(f"{rest}/v2/rerank", json={"query": QUERY, "documents": docs, "top_n": 1}, timeout=60).json()
    assert body["meta"]["billed_units"]["search_units"] == units
    assert len(body["results"]) == 1


def test_top_n_zero_is_all(rest):
    """vLLM: top_n 0 = every document."""
    all_of_them = httpx.post(f"{rest}/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 0}, timeout=30)
    assert all_of_them.status_code == 200 and len(all_of_them.json()["results"]) == len(DOCS)


def test_truncate_prompt_tokens_is_applied(rest, server):
    """vLLM's truncate_prompt_tokens: -1 or >= max_length is the server's max_length; a smaller
    value is the request's own max_length (the same answer as our client's `max_length=`); below
    the server's smallest it is refused, naming the field and the limit."""
    with RerankClient(server.grpc_url) as client:
        limits = client.server_limits()
        at_64 = client.rerank(QUERY, DOCS, max_length=64)
    for ok in (-1, limits.max_length, limits.max_length + 1):
        answer = httpx.post(
            f"{rest}/v1/rerank", json={"query": QUERY, "documents": DOCS, "truncate_prompt_tokens": ok}, timeout=30
        )
        assert answer.status_code == 200, (ok, answer.text)
    cut = httpx.post(
        f"{rest}/v1/rerank", json={"query": QUERY, "documents": DOCS, "truncate_prompt_tokens": 64}, timeout=30
    )
    assert cut.status_code == 200, cut.text
    assert [(r["index"], round(r["relevance_score"], 6)) for r in cut.json()["results"]] == [
        (r.index, round(r.score, 6)) for r in at_64
    ]
    refused = httpx.post(
        f"{rest}/v1/rerank", json={"query": QUERY, "documents": DOCS, "truncate_prompt_tokens": 16}, timeout=30
    )
    assert refused.status_code == 400, refused.text
    message = refused.json()["message"]
    assert message.startswith("truncate_prompt_tokens: 16 is below the smallest the server applies, 17 tokens")
    assert f"max_length is {limits.max_length}" in message


def test_base_url_ending_in_v1_gets_a_helpful_error(rest):
    """The SDKs add /v1 or /v2 themselves; a base URL with /v1 reaches /v1/v2/rerank."""
    with pytest.raises(cohere.NotFoundError) as err:
        cohere.ClientV2(api_key="k", base_url=f"{rest}/v1").rerank(
            model="m", query=QUERY, documents=DOCS, request_options=NO_RETRY
        )
    message = err.value.body["message"]
    assert "/v1/v2/rerank" in message and "bare host" in message, message
    with pytest.raises(cohere.NotFoundError) as err:
        cohere.Client(api_key="k", base_url=f"{rest}/v1").rerank(
            model="m", query=QUERY, documents=DOCS, request_options=NO_RETRY
        )
    assert "without /v1" in err.value.body["message"]


def test_malformed_body_is_described_in_plain_words(rest):
    """Not JSON at all is 400 (issue 26 item 6: malformed syntax, as TEI and Cohere answer it;
    it was 422); JSON of the wrong shape stays 422."""
    malformed = httpx.post(
        f"{rest}/v1/rerank",
        content=b'{"query": "q", "documents": ["a",]}',
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["message"].startswith("request body: not valid JSON: Expecting value at line 1")
    not_object = httpx.post(f"{rest}/v2/rerank", json=["q", "a"])
    assert not_object.status_code == 422
    assert not_object.json()["message"] == "request body: expected a JSON object, got a JSON array"


def test_a_field_is_named_once(rest):
    repeated = httpx.post(f"{rest}/v1/rerank", json={"query": QUERY, "documents": ["ok", 7]}).json()["message"]
    assert (
        repeated.startswith("documents[1]: expected a string or an object") and "documents: documents" not in repeated
    )


def test_an_oversized_query_is_called_query(rest, server):
    with RerankClient(server.grpc_url) as client:
        limit = client.server_limits().max_text_bytes
    big_query = httpx.post(f"{rest}/v2/rerank", json={"query": "q" * (limit + 1), "documents": DOCS}, timeout=30)
    assert big_query.status_code == 400
    assert big_query.json()["message"] == f"query: {limit + 1} bytes exceeds the limit of {limit} bytes per text"


def test_a_nul_is_named_by_field_and_index_in_our_words(rest):
    for route, field, key in (("/v2/rerank", "documents", "message"), ("/rerank", "texts", "error")):
        nul = httpx.post(f"{rest}{route}", json={"query": QUERY, field: ["ok", "Par\x00is"]}, timeout=30)
        assert nul.status_code == 400, nul.text
        assert nul.json()[key] == f"{field}[1]: contains a NUL character (\\u0000) at position 3; remove it"
    nul_query = httpx.post(f"{rest}/v2/rerank", json={"query": "q\x00", "documents": DOCS}, timeout=30)
    assert nul_query.status_code == 400 and nul_query.json()["message"].startswith("query: contains a NUL")


def test_lone_surrogate_is_400_naming_the_field_and_the_connection_stays(rest):
    """Issue 26: JSON's \\ud800 escape decodes to a lone surrogate, which has no UTF-8 form."""
    with httpx.Client(base_url=rest, timeout=30) as client:
        for route, field, key in (("/v1/rerank", "documents", "message"), ("/rerank", "texts", "error")):
            body = b'{"query": "q", "' + field.encode() + b'": ["ok", "\\ud800"]}'
            answer = client.post(route, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400, answer.text
            assert answer.json()[key].startswith(f"{field}[1]: contains a lone UTF-16 surrogate (\\ud800)")
            assert client.post(route, json={"query": QUERY, field: DOCS}).status_code == 200  # same connection


def test_api_key_is_checked_before_the_body_is_read(server):
    """Issue 26: a caller without a key cannot make the service wait for (and buffer) a body:
    the 401 comes back at once although the declared body never arrives."""
    import socket

    with rest_service(server.grpc_url, api_keys=("k",)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer wrong\r\nContent-Length: 1000000\r\n\r\n"
            )
            sock.settimeout(5)
            answer = b""
            while chunk := sock.recv(4096):  # until the service closes (Connection: close)
                answer += chunk
        text = answer.decode("latin-1")
        assert text.startswith("HTTP/1.1 401"), text
        assert "invalid API key" in text


def _triton_rerank_requests(server) -> float:
    """Requests the `rerank` ensemble has finished (succeeded or failed), from Triton's metrics."""
    text = httpx.get(server.metrics_url, timeout=5).text
    pattern = r'^nv_inference_request_(?:success|failure)\{model="rerank",[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _settled_triton_requests(server) -> float:
    last = _triton_rerank_requests(server)
    while True:
        time.sleep(1.0)
        now = _triton_rerank_requests(server)
        if now == last:
            return now
        last = now


def test_client_disconnect_cancels_its_triton_requests(rest, server):
    """Issue 26: a caller that gives up must not leave its work running. The same 1,000-document
    request is sent whole, then again with the connection closed as soon as Triton has answered
    its first chunk: the second is recorded as 499 (client closed) and Triton serves fewer of its
    chunks than the whole request needed."""
    import socket

    docs = [f"{i}: " + "Paris is the capital and largest city of France. " * 5 for i in range(DEFAULT_MAX_DOCUMENTS)]
    payload = json.dumps({"query": QUERY, "documents": docs}).encode()
    start = _settled_triton_requests(server)
    headers = {"content-type": "application/json"}
    assert httpx.post(f"{rest}/v2/rerank", content=payload, headers=headers, timeout=300).status_code == 200
    whole = _settled_triton_requests(server) - start
    assert whole >= 2

    host, port = rest.removeprefix("http://").split(":")
    base = _triton_rerank_requests(server)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        deadline = time.monotonic() + 120
        while _triton_rerank_requests(server) == base:  # the request is under way
            assert time.monotonic() < deadline, "Triton never saw the request"
            time.sleep(0.01)
    # The socket is closed: the service hears the disconnect and cancels the handler.
    deadline = time.monotonic() + 60
    while 'reranker_rest_requests_total{route="/v2/rerank",status="499"}' not in httpx.get(f"{rest}/metrics").text:
        assert time.monotonic() < deadline, "the abandoned request was never cancelled"
        time.sleep(0.1)
    cut = _settled_triton_requests(server) - base
    print(f"\nTriton requests: {whole:.0f} for the whole request, {cut:.0f} once its caller left")
    assert cut < whole
