"""What the Python-backend cross-encoder accepts, and the metrics that show what it ran (no
Triton import, so tests call these directly).

Each length-class model takes exactly its TensorRT profile's shapes (export/tensorrt_profiles.py
writes them into the config): rows of min_length..max_length tokens, at most max_batch_size of
them. The CPU stand-in thereby enforces what a plan would, and an end-to-end test on CPU fails
where a GPU deployment would.
"""

from __future__ import annotations

# Gauges (Prometheus, on Triton's metrics port), per model: the largest batch this model has run
# since it started, as rows x padded length (tokens), rows, and padded length; and the shortest
# padded length. Tests read them to check that no batch exceeded the class bounds.
METRIC_MAX_TOKENS = "reranker_batch_max_tokens"
METRIC_MAX_ROWS = "reranker_batch_max_rows"
METRIC_MAX_LENGTH = "reranker_batch_max_length"
METRIC_MIN_LENGTH = "reranker_batch_min_length"
# Counter, per model: ONNX Runtime runs made. Beside Triton's nv_inference_exec_count (batches
# handed to this model) it shows how often a batch spanning several buckets was run in parts.
METRIC_RUNS = "reranker_model_runs_total"


class InvalidTokens(ValueError):
    """A request the model refuses; the message names the input and the limit."""


def check_inputs(ids, mask, min_length, max_length, vocab_size, max_batch_size):
    """Refuse what the router never sends: cheap checks, O(size of the request)."""
    if ids is None or mask is None:
        raise InvalidTokens("input_ids and attention_mask are both required")
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise InvalidTokens(
            f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} must be "
            f"[batch, length] of the same shape"
        )
    batch, length = ids.shape
    if not 1 <= batch <= max_batch_size:
        raise InvalidTokens(f"input_ids: batch of {batch} rows, must be 1..max_batch_size={max_batch_size}")
    if not 1 <= length <= max_length:
        raise InvalidTokens(
            f"input_ids: {length} tokens per row exceeds max_length={max_length}"
            if length
            else "input_ids: rows hold no tokens"
        )
    if length < min_length:
        raise InvalidTokens(
            f"input_ids: {length} tokens per row is below this length class's "
            f"min_length={min_length} (rows of {length} tokens belong to a shorter class)"
        )
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise InvalidTokens(
            f"input_ids: id {bad} is outside the vocabulary [0, {vocab_size}) (vocab_size={vocab_size})"
        )
    # Two reductions instead of np.isin (an allocation and a sort-based lookup): ~5 vs ~57 us on an
    # [8, 512] batch here, ~0.15 ms of a served request in the busy stub; the same test on the
    # integer mask the config admits (values in {0, 1} <=> min >= 0 and max <= 1).
    if int(mask.min()) < 0 or int(mask.max()) > 1:
        raise InvalidTokens("attention_mask: values must be 0 or 1")


class ShapeRecord:
    """Running extremes of the batches run; `update` returns those that changed, for the gauges.

    Only the changed ones: every gauge `set` in a Python-backend stub is a synchronous round trip
    to the server process (python_backend r24.10 src/pb_stub.h Stub::SendMessage waits for the
    parent's reply), ~0.4 ms each on 2 busy cores, and four per run were ~1.7 ms of a small
    request's ~17 ms (benchmarks/results/overhead_attribution_tiny.md). Extremes rarely change
    once traffic has been seen, so in steady state a run sets none; a gauge keeps its value."""

    def __init__(self) -> None:
        self.max_tokens = self.max_rows = self.max_length = 0
        self.min_length = None

    def update(self, rows: int, length: int) -> dict[str, int]:
        before = self.values()
        self.max_tokens = max(self.max_tokens, rows * length)
        self.max_rows = max(self.max_rows, rows)
        self.max_length = max(self.max_length, length)
        self.min_length = length if self.min_length is None else min(self.min_length, length)
        return {name: value for name, value in self.values().items() if before.get(name) != value}

    def values(self) -> dict[str, int]:
        extremes = {
            METRIC_MAX_TOKENS: self.max_tokens,
            METRIC_MAX_ROWS: self.max_rows,
            METRIC_MAX_LENGTH: self.max_length,
            METRIC_MIN_LENGTH: self.min_length,
        }
        return {name: value for name, value in extremes.items() if value}
