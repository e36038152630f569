"""Server-side padding metrics and the Grafana dashboard, against the real tritonserver.

The tokenizer model counts useful tokens (attention_mask ones) and computed tokens (rows x
bucket width) of every response it emits; known requests must move the counters on :8002 by
exactly those amounts, once the model has sent them (deferred_counters.py: once a second, off the
request path). The dashboard's queries may only name metrics the server exports."""

from __future__ import annotations

import bisect
import json
import re
import time
import urllib.request
from pathlib import Path

from common.raw_rerank import raw_rerank
from tests.server_helpers import counted, counter_flush_s, settle_counters

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "reranker-dashboard.json"
USEFUL, PADDED, PAIRS = (
    "reranker_tokenizer_useful_tokens_total",
    "reranker_tokenizer_padded_tokens_total",
    "reranker_tokenizer_pairs_total",
)


def scrape(server) -> str:
    return urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()


def counter(text: str, name: str) -> float:
    return sum(
        float(v) for v in re.findall(rf'^{name}\{{[^}}]*model="tokenizer"[^}}]*\}} ([0-9.e+]+)$', text, re.MULTILINE)
    )


def buckets(repo: Path) -> list[int]:
    config = (repo / "tokenizer" / "config.pbtxt").read_text()
    value = re.search(r'key: "length_buckets"\s*value \{\s*string_value: "([0-9,]+)"', config).group(1)
    return [int(b) for b in value.split(",")]


def test_padding_counters_match_known_requests_exactly(server, python_repo):
    widths = buckets(python_repo)
    requests = [
        (
            "What is the capital of France?",
            [
                "Paris is the capital of France.",
                "Berlin.",
                "The Eiffel Tower is in Paris, the capital city of France, " * 6,
            ],
        ),
        ("Wer hat das Telefon erfunden?", ["Alexander Graham Bell meldete 1876 ein Patent an."]),
    ]
    settle_counters()
    before = scrape(server)
    expected_useful = expected_padded = expected_pairs = 0
    for query, passages in requests:
        tokens = raw_rerank(server.grpc_url, [query] * len(passages), passages)["tokens"].astype(int)
        # Independent of the tokenizer code: useful = the token counts the ensemble returned,
        # computed = rows x the smallest configured bucket that holds the longest pair.
        expected_useful += int(tokens.sum())
        expected_padded += len(tokens) * widths[bisect.bisect_left(widths, int(tokens.max()))]
        expected_pairs += len(tokens)
    assert expected_padded > expected_useful  # the requests do pad: the check can fail
    for name, expected in ((USEFUL, expected_useful), (PADDED, expected_padded), (PAIRS, expected_pairs)):
        moved = counted(lambda name=name: counter(scrape(server), name) - counter(before, name), expected)
        assert moved == expected, (name, moved, expected)


def test_rejected_requests_are_not_counted(server):
    import pytest
    from tritonclient.utils import InferenceServerException

    settle_counters()
    before = scrape(server)
    with pytest.raises(InferenceServerException):
        raw_rerank(server.grpc_url, ["q"], ["   "])  # whitespace-only passage: refused by the tokenizer
    time.sleep(2.5 * counter_flush_s())  # past the flush that would have sent a count
    after = scrape(server)
    assert counter(after, PADDED) == counter(before, PADDED)


def test_grafana_dashboard_queries_only_metrics_the_server_exports(server):
    dashboard = json.loads(DASHBOARD.read_text())
    raw_rerank(server.grpc_url, ["warm"], ["one pair so every per-model counter exists"])
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", scrape(server), re.MULTILINE))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        named |= set(re.findall(r"\b((?:nv|reranker)_[a-z0-9_]+)\b", expr))
    assert named and named <= exported, sorted(named - exported)
    # What operators were promised: queue time, batch size, request rate, padding efficiency.
    for needed in (
        "nv_inference_queue_duration_us",
        "nv_inference_exec_count",
        "nv_inference_request_success",
        USEFUL,
        PADDED,
    ):
        assert needed in named
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_padding_module_counts_rows_times_width():
    import importlib.util

    import numpy as np

    from common.serving_code import SOURCE_REPOSITORY, deferred_counters_module

    deferred_counters_module()  # what padding_metrics imports, under the name the server uses
    spec = importlib.util.spec_from_file_location(
        "padding_metrics", SOURCE_REPOSITORY / "tokenizer" / "1" / "padding_metrics.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert module.count_tokens(mask) == (5, 8, 2)
