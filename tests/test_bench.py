"""The benchmark's own logic without running it: same inputs (pre-truncation proven against the
Hugging Face tokenizer the peers load), the length-mix quotas, and the ratio/target analysis
(equal concurrency and best-of, rows whose logits differ excluded)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from benchmarks import bench, same_inputs
from common.pair_tokenizer import load_pair_tokenizer
from export.settings import ServingLimits


def test_pretruncated_pairs_tokenize_identically_for_us_and_the_peers(python_repo, tiny_model):
    limits = ServingLimits()
    ours = load_pair_tokenizer(python_repo / "tokenizer" / "1", limits)
    requests = bench.workload(str(python_repo / "tokenizer" / "1" / "tokenizer.json"), 4, 6, limits.max_length)
    peers = AutoTokenizer.from_pretrained(str(tiny_model), use_safetensors=True)
    inputs = same_inputs.prepare(ours, peers, requests)
    assert inputs.cut >= 1  # the quota puts an over-long passage in: the cut is exercised
    for (query, passages), lengths in zip(inputs.requests, inputs.lengths):
        for passage, n in zip(passages, lengths):
            ids, truncated = same_inputs._ids(ours, query, passage)
            assert not truncated and len(ids) == n <= limits.max_length
            # What the peers' tokenizer makes of the cut pair, untruncated: the same ids.
            assert peers(query, passage, truncation=False)["input_ids"] == ids
    # Infinity's tokenizer would keep up to 8,192 tokens: after the cut there is nothing beyond 512.
    assert max(n for request in inputs.lengths for n in request) <= limits.max_length


def test_same_inputs_refuses_a_peer_tokenizer_that_disagrees(python_repo, tiny_model):
    """Negative control: prepare() compares with the peers' tokenizer and refuses any
    difference (here one id dropped from the end of the peers' pair)."""
    limits = ServingLimits()
    ours = load_pair_tokenizer(python_repo / "tokenizer" / "1", limits)
    requests = bench.workload(str(python_repo / "tokenizer" / "1" / "tokenizer.json"), 1, 2, limits.max_length)
    real = AutoTokenizer.from_pretrained(str(tiny_model), use_safetensors=True)

    def off_by_one(query, passage, truncation):
        return {"input_ids": real(query, passage, truncation=truncation)["input_ids"][:-1]}

    with pytest.raises(AssertionError, match="Hugging Face tokenizer disagrees with ours"):
        same_inputs.prepare(ours, off_by_one, requests)


def _row(system, c, rate, same=True, padding=0.9, p50=100.0):
    return {
        "system": system,
        "concurrency": c,
        "pairs_per_s": rate,
        "pairs_per_s_min": rate * 0.95,
        "pairs_per_s_max": rate * 1.05,
        "same_inputs": same,
        "server_requests_per_call": 1.5,
        "max_abs_logit_vs_ort": 0.0 if same else 1.6,
        "padding_efficiency": padding,
        "p50_ms_per_request": p50,
        "gflops": 1.0,
    }


def test_ratios_at_equal_concurrency_and_at_best_exclude_rows_whose_logits_differ():
    rows = [
        _row(bench.ORT, 1, 4.0),
        _row(bench.ORT, 2, 5.0),
        _row(bench.OURS, 1, 3.0, padding=0.8),
        _row(bench.OURS, 2, 4.8),
        _row("FlagReranker", 1, 2.0),
        _row("FlagReranker", 2, 2.5),
        _row("Infinity", 1, 10.0, same=False),
        _row("Infinity", 2, 10.0, same=False),
    ]
    report = bench.analyse(rows, "bench", [1, 2])
    equal = {line["concurrency"]: line for line in report["ratios_at_equal_concurrency"]}
    assert equal[1]["vs_onnxruntime"] == 0.75 and equal[2]["vs_onnxruntime"] == 0.96
    assert equal[1]["best_peer"] == "FlagReranker" and "vs Infinity" not in equal[1]
    best = {b["system"]: b for b in report["best_of_each_system"]}
    assert best[bench.ORT]["triton_best_over_this_best"] == 0.96 and "Infinity" not in best
    assert any("Infinity" in x for x in report["excluded_from_ratios"])
    missed = [t for t in report["targets"] if "MISSED" in t]
    assert any("concurrency 1" in t and "0.75" in t and "Why:" in t for t in missed)
    assert any("padding" in t and "0.80" in t for t in missed)
    # ORT 5.0 and ours 4.8 (each +-5%) overlap at c=2, 4.0 and 3.0 at c=1 do not: the verdicts say so.
    assert any(
        "Triton / in-process ONNX Runtime at concurrency 2 (trial ranges overlap" in t for t in report["targets"]
    )
    assert not any("concurrency 1 (trial ranges overlap" in t for t in report["targets"])
