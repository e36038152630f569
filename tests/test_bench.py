"""The benchmark's own logic without running it: same inputs (pre-truncation proven against the
Hugging Face tokenizer the peers load), the length-mix quotas, and the ratio/target analysis
(equal concurrency and best-of, rows whose logits differ excluded)."""

from __future__ import annotations

import numpy as np
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


def _row(system, c, trials, same=True, padding=0.9, computed=None):
    return {
        "system": system,
        "concurrency": c,
        "trials": trials,
        "pairs_per_s": float(np.median(trials)),
        "same_inputs": same,
        "server_requests_per_call": 1.5,
        "max_abs_logit_vs_ort": 0.0 if same else 1.6,
        "padding_efficiency": padding,
        "computed_tokens_per_s_trials": computed,
    }


def test_paired_ratios_verdicts_and_exclusions():
    """Trials of one index ran under the same load (interleaved): ours tracks ONNX Runtime at
    1.1x trial by trial although the ranges overlap, so the paired verdict is "faster"; a peer
    within noise is "not separated"; rows whose logits differ never enter a ratio."""
    load = np.array([0.5, 1.0, 0.7, 0.9, 0.6, 0.8, 1.0, 0.55])
    ort = list(4.0 * load)
    ours = list(4.4 * load)
    rng = np.random.default_rng(0)
    noisy = list(4.4 * load * rng.uniform(0.8, 1.25, size=8))
    rows = [
        _row(bench.ORT, 1, ort, computed=list(1000 * load)),
        _row(bench.OURS, 1, ours, padding=0.8, computed=list(900 * load)),
        _row(bench.FLAG, 1, noisy),
        _row("Infinity", 1, [10.0] * 8, same=False),
    ]
    report = bench.analyse(rows, "bench", [1])
    lines = {line["vs"]: line for line in report["paired_ratios"]}
    assert lines[bench.ORT]["pairs_per_s"]["verdict"] == "faster"
    assert lines[bench.ORT]["pairs_per_s"]["ci95"][0] > 1.0
    # Padding taken out: per computed token ours is slower here (900 vs 1000 per trial).
    assert lines[bench.ORT]["computed_tokens_per_s"]["verdict"] == "slower"
    assert lines[bench.FLAG]["pairs_per_s"]["verdict"] == "not separated"
    assert "Infinity" not in lines and any("Infinity" in x for x in report["excluded_from_ratios"])
    assert any(f"Triton / {bench.ORT}" in t and ": met" in t for t in report["targets"])
    assert any(f"Triton / {bench.FLAG}" in t and "not settled" in t for t in report["targets"])


def test_flag_reranker_repeated_probe_forward_is_skipped_exactly(tiny_model):
    """FlagEmbedding 1.4.2 runs each call's first batch twice (an "adjust batch size" probe, then
    the scoring loop). The benchmark's FlagReranker answers the repeat from the cache: one
    forward per call instead of two, the same scores, and the skipped forwards counted."""
    from FlagEmbedding import FlagReranker

    from benchmarks import systems

    pairs = [("what is a passport", "a travel document"), ("what is a passport", "a fruit " * 20)]
    shipped = FlagReranker(str(tiny_model), use_fp16=False, devices="cpu")
    counted = systems.TokenCount()
    systems.count_forward(shipped.model, counted)
    expected = shipped.compute_score([list(p) for p in pairs], max_length=512)
    calls_as_shipped = counted.snapshot()
    system = systems.FlagRerankerSystem(tiny_model, 512)
    scores = [system.score(pairs[0][0], [p for _, p in pairs]) for _ in range(2)]
    assert scores[0] == scores[1] == pytest.approx(expected, abs=0)
    assert system.skipped_forwards() == 2  # one per call
    # As shipped the call computed its batch twice; with the cache each call computes it once.
    assert system.tokens.snapshot()[1] == calls_as_shipped[1]  # two calls, one forward each = one call as shipped


def test_cross_encoder_fed_our_chunks_pads_like_our_chunks(tiny_model):
    from benchmarks import systems

    query = "passport renewal"
    passages = ["short one", "a " * 200, "medium passage " * 10, "tiny"]
    chunks = [[0, 3], [2], [1]]
    plain = systems.CrossEncoderSystem(tiny_model, 512)
    chunked = systems.CrossEncoderSystem(tiny_model, 512, chunks=lambda q, p: chunks)
    assert chunked.score(query, passages) == pytest.approx(plain.score(query, passages), abs=1e-5)
    # One forward per chunk, each padded to its own longest pair: less padding than one batch.
    plain_useful, plain_padded = plain.tokens.snapshot()
    useful, padded = chunked.tokens.snapshot()
    assert useful == plain_useful and padded < plain_padded


def test_a_trial_is_timed_over_its_pass_not_over_the_counter_reads(monkeypatch):
    """bench.server_counters waits 1.5 x FLUSH_S for the tokenizer's deferred counters before it
    reads :8002, and Entry.runner reads it before and after its pass: the trial's `seconds` (the
    denominator of every pairs/s rate, interleave.run_interleaved) must not include that wait.
    A fake clock: each scored request takes 0.01 s, each counter read 1.5 s."""
    import threading

    from benchmarks import interleave

    clock, lock = [1000.0], threading.Lock()

    def advance(seconds: float) -> None:
        with lock:
            clock[0] += seconds

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    class Instant:
        def score(self, query, passages):
            advance(0.01)
            return [0.0] * len(passages)

    def counters():
        advance(1.5)  # what server_counters sleeps before its read
        return {"useful": 0.0, "padded": 0.0}

    requests = [("q", ["a", "b"])] * 10
    entry = bench.Entry("triton", Instant(), {}, "server_metrics", counters)
    [trial] = interleave.run_interleaved({"triton": entry.runner(requests, 1, np.zeros(20))}, 1)
    assert trial.results["triton"]["seconds"] == pytest.approx(10 * 0.01)
