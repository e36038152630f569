"""The plain functions behind window mode and length routing (no server): the window rule's
invariants, routing by length class within the token bound, the reduction to the best window,
and the class models' shape checks."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from export.settings import MAX_BATCH_TOKENS, ServingLimits
from export.tensorrt_profiles import length_classes
from tests.shape_metrics import shape_limits_module

REPO = Path(__file__).resolve().parent.parent / "model_repository"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pair_windows = _load(REPO / "tokenizer" / "1" / "pair_windows.py", "pair_windows")
routing = _load(REPO / "length_router" / "1" / "routing.py", "routing")
reduction = _load(REPO / "window_reduce" / "1" / "reduction.py", "reduction")


@pytest.mark.parametrize("seed", range(30))
def test_windows_cover_every_token_at_word_boundaries(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 3000)
    starts = [i == 0 or rng.random() < rng.choice([0.02, 0.3, 0.9]) for i in range(n)]
    width = rng.randint(8, 600)
    stride = rng.randint(1, width)
    windows = pair_windows.window_bounds(starts, width, stride)
    assert windows[0][0] == 0 and windows[-1][1] == n
    for (s0, e0), (s1, _) in zip(windows, windows[1:]):
        assert s0 < s1 <= e0  # progress, and no token skipped
        assert s1 - s0 <= stride
    for start, end in windows:
        assert 0 < end - start <= width
        # A window ends before a word start unless no word starts inside its reach.
        if end < n and any(starts[start + 1 : min(start + width, n) + 1]):
            assert starts[end]
    if n <= width:
        assert windows == [(0, n)]


def test_window_rule_refuses_a_stride_wider_than_the_window():
    with pytest.raises(ValueError):
        pair_windows.window_bounds([True] * 10, 4, 5)


def test_char_span_leaves_out_the_space_before_a_word():
    text = "alpha beta gamma"
    offsets = [(0, 5), (5, 10), (10, 16)]  # a word's first token covers the space before it
    assert pair_windows.char_span(text, offsets, 1, 3) == (6, 16)


@pytest.mark.parametrize("max_length", [512, 2048, 8192])
def test_routing_sends_each_row_to_its_class_within_the_token_bound(max_length):
    limits = ServingLimits(max_length=max_length)
    classes = length_classes(limits)
    table = [(c.max_length, c.max_batch) for c in classes]
    rng = np.random.default_rng(max_length)
    lengths = rng.integers(1, max_length + 1, size=300)
    parts = routing.plan(lengths, limits.buckets, table)
    assert sorted(np.concatenate([p.rows for p in parts]).tolist()) == list(range(300))
    for part in parts:
        length_class = classes[part.length_class]
        assert len(part.rows) <= length_class.max_batch
        assert length_class.min_length <= part.width <= length_class.max_length
        assert len(part.rows) * part.width <= MAX_BATCH_TOKENS
        assert (lengths[part.rows] <= part.width).all()
        assert part.width == min(b for b in limits.buckets if b >= lengths[part.rows].max())
    with pytest.raises(routing.RouteError, match=f"max_length={max_length}"):
        routing.plan(np.array([max_length + 1]), limits.buckets, table)


def test_row_lengths_keep_every_real_token():
    mask = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert routing.row_lengths(mask).tolist() == [2, 3, 1, 4]
    ids = np.arange(8).reshape(2, 4)
    assert routing.cut(ids, np.array([1]), 6, fill=1).tolist() == [[4, 5, 6, 7, 1, 1]]


def test_reduction_takes_the_best_window_and_the_first_on_a_tie():
    owner = np.array([0, 0, 1, 1, 1, 2, 0])
    logit = np.array([0.5, 2.0, -1.0, 3.0, 3.0, 0.1, 2.0], dtype=np.float32)
    reduced = reduction.reduce_windows(owner, logit)
    assert reduced.best.tolist() == [1, 3, 5]
    assert reduced.windows.reshape(-1).tolist() == [3, 3, 1]
    with pytest.raises(ValueError, match="no window"):
        reduction.reduce_windows(np.array([0, 2, 2]), np.array([1.0, 2.0, 3.0]))


def test_reduction_work_is_bounded_by_the_request_size_not_an_owner_value():
    """Issue 26: owner [0, 2**25] made bincount allocate 2**25 counters (3 s, 1.6 GB) for a
    2-row request. An owner value at or past the number of windows is refused before any
    allocation sized by it."""
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ValueError, match=r"owner: 33554432 .* below 2"):
        reduction.reduce_windows(np.array([0, 2**25]), np.array([1.0, 2.0]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, f"refusing a 2-row request allocated {peak} bytes"


def test_class_model_shape_checks():
    shapes = shape_limits_module()
    ids, mask = np.zeros((2, 100), np.int64), np.ones((2, 100), np.int64)
    shapes.check_inputs(ids, mask, 16, 512, 1000, 64)
    with pytest.raises(shapes.InvalidTokens, match="min_length=513"):
        shapes.check_inputs(ids, mask, 513, 2048, 1000, 16)
    with pytest.raises(shapes.InvalidTokens, match="max_batch_size=1"):
        shapes.check_inputs(ids, mask, 16, 512, 1000, 1)
    for bad in (2, -1):
        wrong = mask.copy()
        wrong[1, 50] = bad
        with pytest.raises(shapes.InvalidTokens, match="attention_mask: values must be 0 or 1"):
            shapes.check_inputs(ids, wrong, 16, 512, 1000, 64)
    shapes.check_inputs(ids, np.zeros_like(mask), 16, 512, 1000, 64)
    record = shapes.ShapeRecord()
    assert record.update(4, 100) == {  # the first run sets every gauge
        shapes.METRIC_MAX_TOKENS: 400,
        shapes.METRIC_MAX_ROWS: 4,
        shapes.METRIC_MAX_LENGTH: 100,
        shapes.METRIC_MIN_LENGTH: 100,
    }
    assert record.update(1, 300) == {shapes.METRIC_MAX_LENGTH: 300}
    assert record.values() == {
        shapes.METRIC_MAX_TOKENS: 400,
        shapes.METRIC_MAX_ROWS: 4,
        shapes.METRIC_MAX_LENGTH: 300,
        shapes.METRIC_MIN_LENGTH: 100,
    }


def test_a_run_that_changes_no_extreme_sets_no_gauge():
    """Each gauge `set` in a Python-backend stub is a blocking round trip to the server process
    (~0.4 ms on 2 busy cores; four per run cost the tiny stand-in ~7% of its served rate,
    benchmarks/results/overhead_attribution_tiny.md): a run inside the extremes seen sends none."""
    record = shape_limits_module().ShapeRecord()
    record.update(8, 512)
    record.update(1, 16)
    assert record.update(4, 128) == {}
    assert record.update(8, 512) == {}


def test_a_request_within_one_class_stays_one_part_of_its_own_shape():
    limits = ServingLimits(max_length=8192)
    table = [(c.max_length, c.max_batch) for c in length_classes(limits)]
    parts = routing.plan(np.array([30, 200, 480, 17]), limits.buckets, table)
    assert [(p.length_class, p.width, p.rows.tolist()) for p in parts] == [(0, 480, [0, 1, 2, 3])]


def test_router_relays_codes_by_who_is_at_fault():
    """Issue 26 (and its review): a BLS error reaches the router as text; the caller's values
    refused by the class model stay INVALID_ARG, shed load and dead steps are UNAVAILABLE, and a
    shape refusal - which the router guarantees never to cause - is INTERNAL, not the caller's."""
    from reranker_client import contract

    refusals = ("cross_encoder: input_ids: id ", "cross_encoder: attention_mask: values")
    transient = contract.SHED_LOAD_MESSAGES + contract.STEP_DOWN_MESSAGES

    def code(message, refusals):
        return routing.relayed_code(message, refusals, transient)

    assert code("cross_encoder: input_ids: id 1000000000 is outside the vocabulary", refusals) == "INVALID_ARG"
    assert code("cross_encoder: attention_mask: values must be 0 or 1", refusals) == "INVALID_ARG"
    assert code("Request timeout expired", refusals) == "UNAVAILABLE"
    assert code("Stub process 'cross_encoder_0_1' is not healthy.", refusals) == "UNAVAILABLE"
    assert code("exceeds maximum queue size", refusals) == "UNAVAILABLE"
    assert code("cross_encoder: input_ids: 600 tokens per row exceeds max_length=512", refusals) == "INTERNAL"
    assert code("cross_encoder: input_ids: batch of 65 rows, must be 1..max_batch_size=64", refusals) == "INTERNAL"
    assert code("onnxruntime: out of memory", refusals) == "INTERNAL"
