"""The compatibility matrix: the REST service (rest/) called by the real clients a user points at
it, unmodified, against the real local tritonserver. Each row runs the client and asserts the
client's own parsed result (indices and scores, best first, equal to our client's), the route
it reached (from the service's own request counter) and, where the client reads more (usage,
billed units, returned text), that too. docs/REST.md prints the matrix; a test below keeps the
two in step.

Packages (requirements/dev.txt): the cohere SDK (newest, 7.x: `Client` and `ClientV2`) and
LiteLLM (`cohere/`, `jina_ai/`, `huggingface/`, `hosted_vllm/`, `infinity/` providers). The
oldest supported cohere SDK (5.18, langchain-cohere 0.6's floor; cohere 5 and 7 cannot share a
venv) and langchain-cohere run in a throwaway venv: test_oldest_cohere_sdk_and_langchain_cohere,
marked slow. Clients that are applications (Dify, RAGFlow, Open WebUI) or whose client is plain
HTTP (vLLM's own examples) are replayed from their recorded request shapes: the exact JSON body,
path and response parsing of the upstream source file named in each row."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Tuple
from urllib.parse import urljoin

import cohere
import httpx
import pytest

# LiteLLM fetches a model price list from GitHub at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402

from reranker_client import RerankClient  # noqa: E402
from reranker_rest.metrics import ROUTES  # noqa: E402
from tests.rest_helpers import DOCS, QUERY  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS_MD = ROOT / "docs" / "REST.md"
TOP = 3
NO_RETRY = {"max_retries": 0}  # the SDK would retry 5xx itself and hide our answer

Ranked = List[Tuple[int, float]]


@pytest.fixture(scope="module")
def reference(server) -> Ranked:
    """Our client's answer for (QUERY, DOCS), best first: what every row must reproduce."""
    with RerankClient(server.grpc_url) as client:
        return [(r.index, r.score) for r in client.rerank(QUERY, DOCS)]


def route_counts(url: str) -> Dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    counts: Dict[str, float] = {}
    for route, status, value in re.findall(
        r'^reranker_rest_requests_total\{route="([^"]+)",status="(\d+)"\} (\S+)$', text, re.M
    ):
        if status == "200":
            counts[route] = counts.get(route, 0) + float(value)
    return counts


# --- the rows: each returns the client's parsed (index, score) pairs, best first -------------


def cohere_v1(url: str) -> Ranked:
    answer = cohere.Client(api_key="k", base_url=url, timeout=30).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=TOP, return_documents=True, request_options=NO_RETRY
    )
    assert [r.document.text for r in answer.results] == [DOCS[r.index] for r in answer.results]
    assert answer.meta.billed_units.search_units == 1
    return [(r.index, r.relevance_score) for r in answer.results]


def cohere_v2(url: str) -> Ranked:
    answer = cohere.ClientV2(api_key="k", base_url=url, timeout=30).rerank(
        model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=TOP, request_options=NO_RETRY
    )
    assert answer.meta.api_version.version == "2"
    return [(r.index, r.relevance_score) for r in answer.results]


def _litellm(provider: str, url: str, **extra) -> Ranked:
    answer = litellm.rerank(
        model=f"{provider}/bge-reranker-v2-m3",
        query=QUERY,
        documents=DOCS,
        top_n=TOP,
        api_base=url,
        api_key="k",
        num_retries=0,
        **extra,
    )
    return [(r["index"], r["relevance_score"]) for r in answer.results]


def litellm_cohere(url: str) -> Ranked:
    return _litellm("cohere", url)


def litellm_jina_ai(url: str) -> Ranked:
    return _litellm("jina_ai", url)


def litellm_huggingface(url: str) -> Ranked:
    """LiteLLM puts top_n into the TEI body; the server honours it (review of issue 28)."""
    got = _litellm("huggingface", url)
    assert len(got) == TOP
    return got


def litellm_hosted_vllm(url: str) -> Ranked:
    return _litellm("hosted_vllm", url)


def litellm_infinity(url: str) -> Ranked:
    """api_base = http://HOST:PORT/infinity: Infinity's answer shape (a returned document is the
    text itself), which this provider reads (LiteLLM asks for documents by default)."""
    answer = litellm.rerank(
        model="infinity/bge-reranker-v2-m3",
        query=QUERY,
        documents=DOCS,
        top_n=TOP,
        api_base=f"{url}/infinity",
        api_key="k",
        num_retries=0,
    )
    assert [r["document"]["text"] for r in answer.results] == [DOCS[r["index"]] for r in answer.results]
    return [(r["index"], r["relevance_score"]) for r in answer.results]


def litellm_infinity_bare(url: str) -> Ranked:
    """api_base = the bare host reaches /rerank (vLLM's shape): served when documents are not
    asked for; with documents, LiteLLM's infinity/ parser wants Infinity's shape (row above)."""
    return _litellm("infinity", url, return_documents=False)


def dify_tei(url: str) -> Ranked:
    """Dify's TEI provider (langgenius/dify api/core/model_runtime/model_providers/huggingface_tei/
    tei_helper.py and rerank/rerank.py; since Dify 1.0 the same code in langgenius/dify-official-
    plugins models/huggingface_tei): validate_credentials reads GET {server_url}/info, takes the
    first key of `model_type` and accepts only "embedding"/"reranker" (then "reranker" for a rerank
    model); invoke_rerank POSTs {"query", "texts", "return_text": true} to {server_url}/rerank and
    reads each result's index, text and score, best first, keeping top_n."""
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k"}
    info = httpx.get(f"{url}/info", headers=headers, timeout=10).json()
    model_type = list(info.get("model_type", {}).keys())[0]
    assert model_type == "reranker"
    assert info.get("max_input_length", 512) > 0 and info.get("max_client_batch_size", 1) >= len(DOCS)
    response = httpx.post(
        f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, headers=headers, timeout=30
    )
    response.raise_for_status()
    docs = [(r["index"], r["text"], r["score"]) for r in response.json()][:TOP]
    assert [text for _, text, _ in docs] == [DOCS[i] for i, _, _ in docs]
    return [(i, score) for i, _, score in docs]


def ragflow(url: str) -> Ranked:
    """RAGFlow "OpenAI-API-Compatible" rerank (infiniflow/ragflow rag/llm/rerank_model.py,
    OpenAI_APIRerank): the user gives a bare host; the client joins "/rerank" to it (urljoin with
    an absolute path in the older releases, so a base ending in /v1 reaches /rerank too), POSTs
    {"model", "query", "documents", "top_n": len(texts)} and reads rank[d["index"]] =
    d["relevance_score"] over res["results"] (scores in input order; RAGFlow sorts them itself)."""
    base_url = url + "/v1"
    endpoint = urljoin(base_url, "/rerank") if base_url.find("/rerank") == -1 else base_url
    data = {"model": "bge-reranker-v2-m3___OpenAI-API", "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    data["model"] = data["model"].split("___")[0]
    res = httpx.post(endpoint, json=data, headers={"Authorization": "Bearer k"}, timeout=30).json()
    rank = [0.0] * len(DOCS)
    for d in res["results"]:
        rank[d["index"]] = d["relevance_score"]
    return sorted(enumerate(rank), key=lambda p: -p[1])[:TOP]


def open_webui(url: str) -> Ranked:
    """Open WebUI's external reranker (open-webui/open-webui backend/open_webui/retrieval/models/
    external.py, ExternalReranker.predict): the user gives the full URL (default
    http://localhost:8080/v1/rerank); it POSTs {"model", "query", "documents", "top_n": len(docs)}
    and returns [relevance_score] sorted by index (input order)."""
    payload = {"model": "reranker", "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    r = httpx.post(f"{url}/v1/rerank", json=payload, headers={"Authorization": "Bearer k"}, timeout=30)
    r.raise_for_status()
    scores = [result["relevance_score"] for result in sorted(r.json()["results"], key=lambda x: x["index"])]
    return sorted(enumerate(scores), key=lambda p: -p[1])[:TOP]


def vllm_rerank(url: str) -> Ranked:
    """vLLM's rerank client example (vllm-project/vllm examples/online_serving/jinaai_rerank_client.py,
    now examples/pooling/score/rerank_api_online.py): POST {"model", "query", "documents"} to
    /rerank; the answer's results carry index, relevance_score and the document's text."""
    data = {"model": "BAAI/bge-reranker-base", "query": QUERY, "documents": DOCS}
    r = httpx.post(f"{url}/rerank", json=data, headers={"accept": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["document"]["text"] for x in results] == [DOCS[x["index"]] for x in results]
    return [(x["index"], x["relevance_score"]) for x in results][:TOP]


# (row id, client, how it is exercised, route it must reach, call)
MATRIX: List[Tuple[str, str, str, str, Callable[[str], Ranked]]] = [
    ("cohere-v1", "cohere SDK 7.3.1 `Client`", "real package", "/v1/rerank", cohere_v1),
    ("cohere-v2", "cohere SDK 7.3.1 `ClientV2`", "real package", "/v2/rerank", cohere_v2),
    ("litellm-cohere", "LiteLLM 1.110.2 `cohere/`", "real package", "/v2/rerank", litellm_cohere),
    ("litellm-jina_ai", "LiteLLM 1.110.2 `jina_ai/`", "real package", "/v1/rerank", litellm_jina_ai),
    ("litellm-huggingface", "LiteLLM 1.110.2 `huggingface/` (TEI)", "real package", "/rerank", litellm_huggingface),
    ("litellm-hosted_vllm", "LiteLLM 1.110.2 `hosted_vllm/`", "real package", "/rerank", litellm_hosted_vllm),
    (
        "litellm-infinity",
        "LiteLLM 1.110.2 `infinity/`, api_base `.../infinity`",
        "real package",
        "/infinity/rerank",
        litellm_infinity,
    ),
    (
        "litellm-infinity-bare",
        "LiteLLM 1.110.2 `infinity/`, bare host, `return_documents=False`",
        "real package",
        "/rerank",
        litellm_infinity_bare,
    ),
    ("dify-tei", "Dify TEI provider (`/info`, then `/rerank`)", "recorded request shape", "/rerank", dify_tei),
    ("ragflow", "RAGFlow OpenAI-API-Compatible", "recorded request shape", "/rerank", ragflow),
    ("open-webui", "Open WebUI external reranker", "recorded request shape", "/v1/rerank", open_webui),
    ("vllm", "vLLM rerank client example", "recorded request shape", "/rerank", vllm_rerank),
]


@pytest.mark.parametrize("row", MATRIX, ids=[row[0] for row in MATRIX])
def test_matrix(rest, reference, row):
    _, _, _, route, call = row
    before = route_counts(rest)
    got = call(rest)
    after = route_counts(rest)
    assert route in ROUTES
    assert after.get(route, 0) - before.get(route, 0) >= 1, (before, after)
    assert [i for i, _ in got] == [i for i, _ in reference[:TOP]]
    assert [s for _, s in got] == pytest.approx([s for _, s in reference[:TOP]], abs=1e-6)


def test_docs_print_the_matrix():
    """docs/REST.md's table has a line per row, with its route."""
    text = DOCS_MD.read_text(encoding="utf-8")
    for row_id, _client, how, route, _ in MATRIX:
        line = next((line for line in text.splitlines() if f"`{row_id}`" in line), None)
        assert line is not None, f"docs/REST.md lacks the matrix row {row_id}"
        assert f"`{route}`" in line and how in line, line


# --- the oldest supported cohere SDK and langchain-cohere, in a throwaway venv (slow) --------

OLD_REQUIREMENTS = ["cohere==5.18.0", "langchain-cohere==0.6.0"]


def _old_venv() -> Path:
    key = hashlib.sha256(json.dumps(OLD_REQUIREMENTS).encode() + sys.version.encode()).hexdigest()[:16]
    return ROOT / "runs" / f"venv-cohere5-{key}"


OLD_SCRIPT = r"""
import json, sys
import cohere
from langchain_core.documents import Document
from langchain_cohere import CohereRerank

url, query, docs, top = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
out = {"version": cohere.__version__ if hasattr(cohere, "__version__") else "?"}
v1 = cohere.Client(api_key="k", base_url=url).rerank(model="m", query=query, documents=docs, top_n=top)
out["v1"] = [[r.index, r.relevance_score] for r in v1.results]
v2 = cohere.ClientV2(api_key="k", base_url=url).rerank(model="m", query=query, documents=docs, top_n=top)
out["v2"] = [[r.index, r.relevance_score] for r in v2.results]
reranker = CohereRerank(model="rerank-v3.5", cohere_api_key="k", base_url=url, top_n=top)
kept = reranker.compress_documents([Document(page_content=d) for d in docs], query)
out["langchain"] = [[docs.index(d.page_content), d.metadata["relevance_score"]] for d in kept]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_oldest_cohere_sdk_and_langchain_cohere(rest, reference):
    venv = _old_venv()
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        try:
            urllib.request.urlopen("https://pypi.org/simple/cohere/", timeout=15).close()
        except OSError:
            pytest.skip("PyPI not reachable: the cohere 5 venv cannot be built")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *OLD_REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (venv / ".installed").touch()
    run = subprocess.run(
        [str(python), "-c", OLD_SCRIPT, rest, QUERY, json.dumps(DOCS), str(TOP)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("v1", "v2", "langchain"):
        assert [i for i, _ in out[key]] == [i for i, _ in reference[:TOP]], (key, out)
        assert [s for _, s in out[key]] == pytest.approx([s for _, s in reference[:TOP]], abs=1e-6), key


def test_cohere_v2_max_tokens_per_doc_applies_flagrerankers_rules_at_that_length(rest, server, tiny_model):
    """Issue 29 item 3: `max_tokens_per_doc=64` through the real cohere SDK scores every pair as
    FlagReranker.compute_score(max_length=64) does (the pair cut to 64 tokens: query to 48, then
    the document), equal to our client's `max_length=64`; the answer's extras say so (every pair
    <= 64 tokens, the long document `truncated`)."""
    import numpy as np

    from common.calibration_texts import long_passage
    from tests.references import flag_scores

    docs = [*DOCS, long_passage(3)]
    answer = cohere.ClientV2(api_key="k", base_url=rest, timeout=30).rerank(
        model="rerank-v3.5", query=QUERY, documents=docs, max_tokens_per_doc=64, request_options=NO_RETRY
    )
    got = sorted(answer.results, key=lambda r: r.index)
    assert [r.index for r in got] == list(range(len(docs)))
    expected = flag_scores(tiny_model, [(QUERY, d) for d in docs], max_length=64)  # sigmoid, as relevance_score
    np.testing.assert_allclose([r.relevance_score for r in got], expected, atol=1e-5)
    full = flag_scores(tiny_model, [(QUERY, docs[-1])])[0]
    assert abs(got[-1].relevance_score - full) > 1e-4  # the cut is real: at 512 the long document scores otherwise
    with RerankClient(server.grpc_url) as client:
        ours = client.rerank(QUERY, docs, max_length=64)
    assert [(r.index, round(r.score, 6)) for r in ours] == [
        (r.index, round(r.relevance_score, 6)) for r in answer.results
    ]
    raw = httpx.post(
        f"{rest}/v2/rerank", json={"query": QUERY, "documents": docs, "max_tokens_per_doc": 64}, timeout=30
    ).json()
    by_index = {r["index"]: r for r in raw["results"]}
    assert max(r["tokens"] for r in raw["results"]) <= 64 and by_index[len(docs) - 1]["truncated"]
    assert "max_length of 64 tokens" in raw["meta"]["warnings"][0]
