"""Padding efficiency, measured where the padding happens: the tokenizer model counts the
useful tokens (attention_mask ones) and the computed tokens (rows x padded width) of every
response it emits, and exports both as Prometheus counters through the Python backend's
custom-metrics API (`pb_utils.MetricFamily`), on :8002 next to Triton's own `nv_*` metrics.

Why per response and not per cross-encoder batch: Triton's dynamic batcher merges requests only
when every input has the same shape, so the batch the cross-encoder runs is a stack of whole
responses of one width; the sum of per-response padded tokens is exactly the tokens the
cross-encoder computed. Padding efficiency = rate(useful) / rate(padded).

The counts are sent off the request path (deferred_counters.py: summed in memory, sent once a
second by a background thread, the rest at finalize): three metric round trips per response were
~0.2-1 ms of every request.

Kept out of model.py (a few hook lines there) so the tokenizer can change without touching this,
and testable without Triton: `pb_utils` is passed in.
"""

from __future__ import annotations

import numpy as np
from deferred_counters import DeferredCounters

USEFUL_TOKENS = "reranker_tokenizer_useful_tokens_total"
PADDED_TOKENS = "reranker_tokenizer_padded_tokens_total"
PAIRS = "reranker_tokenizer_pairs_total"
DESCRIPTIONS = {
    USEFUL_TOKENS: "Pair tokens the cross-encoder needed (attention_mask ones), special tokens included",
    PADDED_TOKENS: "Tokens the cross-encoder computed: rows x padded (bucket) width of each response",
    PAIRS: "Query-passage pairs tokenized and sent on to the cross-encoder",
}


def count_tokens(attention_mask: np.ndarray) -> tuple[int, int, int]:
    """(useful, padded, pairs) of one padded [rows, width] response."""
    rows, width = attention_mask.shape
    return int(attention_mask.sum()), rows * width, rows


class PaddingMetrics:
    def __init__(self, pb_utils, model_name: str, model_version: str) -> None:
        labels = {"model": model_name, "version": str(model_version)}
        # Keep the family objects alive: a metric is unregistered when its family is freed.
        self._families = {
            name: pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
            for name, description in DESCRIPTIONS.items()
        }
        self._counters = DeferredCounters(
            {name: family.Metric(labels=labels) for name, family in self._families.items()},
            log=pb_utils.Logger.log_warn,
        )

    def record(self, attention_mask: np.ndarray) -> None:
        """Count one response that is about to be sent on to the cross-encoder (no round trip)."""
        useful, padded, pairs = count_tokens(attention_mask)
        for name, value in ((USEFUL_TOKENS, useful), (PADDED_TOKENS, padded), (PAIRS, pairs)):
            self._counters.add(name, value)

    def close(self) -> None:
        """Send what is still counted (the model's finalize)."""
        self._counters.close()
