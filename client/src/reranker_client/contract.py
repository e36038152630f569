"""The wire contract, defined once: model names, tensor names, dtypes and shapes of the
`rerank` ensemble and of the tensors between its steps, and the names of the parameters in
which the server publishes its limits.

It lives in the client package because the client installs alone; the export imports it
(export/triton_config.py builds every Triton config from it), the Python-backend models read
their tensor names from the config they are given, and the client reads the limits from the
ensemble's config at run time instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

ENSEMBLE = "rerank"
TOKENIZER = "tokenizer"
CROSS_ENCODER = "cross_encoder"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # the KServe v2 wire name: "BYTES" (TYPE_STRING in a config), "INT64", ...
    dims: Tuple[int, ...]  # without the batch dimension (every model batches)


QUERY = Tensor("query", "BYTES", (1,))  # UTF-8, one per pair: [B, 1]
PASSAGE = Tensor("passage", "BYTES", (1,))
LOGIT = Tensor("logit", "FP32", (1,))  # raw model output (FlagReranker normalize=False)
SCORE = Tensor("score", "FP32", (1,))  # sigmoid(logit)
TOKENS = Tensor("tokens", "INT32", (1,))  # tokens the model saw, special tokens included
TRUNCATED = Tensor("truncated", "BOOL", (1,))  # query or passage cut to max_length
INPUT_IDS = Tensor("input_ids", "INT64", (-1,))  # right-padded to a length bucket
ATTENTION_MASK = Tensor("attention_mask", "INT64", (-1,))

ENSEMBLE_INPUTS = (QUERY, PASSAGE)
ENSEMBLE_OUTPUTS = (LOGIT, SCORE, TOKENS, TRUNCATED)
TOKENIZER_OUTPUTS = (INPUT_IDS, ATTENTION_MASK, TOKENS, TRUNCATED)
CROSS_ENCODER_INPUTS = (INPUT_IDS, ATTENTION_MASK)
CROSS_ENCODER_OUTPUTS = (LOGIT, SCORE)


class Param:
    """Keys of the string parameters in the ensemble's (and tokenizer's) config."""

    MAX_LENGTH = "max_length"  # tokens per pair, special tokens included
    QUERY_MAX_LENGTH = "query_max_length"  # the query's share of max_length
    SPECIAL_TOKENS_PER_PAIR = "special_tokens_per_pair"  # <s> q </s></s> p </s>
    LENGTH_BUCKETS = "length_buckets"  # comma-separated padded lengths
    MAX_TEXT_BYTES = "max_text_bytes"  # UTF-8 bytes per text
    LONG_REQUEST_LENGTH = "long_request_length"  # a request with a pair longer than this ...
    LONG_REQUEST_MAX_PAIRS = "long_request_max_pairs"  # ... holds at most this many pairs
