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

ENSEMBLE = "rerank"  # truncate mode (FlagReranker's semantics)
WINDOW_ENSEMBLE = "rerank_windows"  # window mode: a passage scored by its best window
TOKENIZER = "tokenizer"
LENGTH_ROUTER = "length_router"  # sends each row to the cross-encoder of its length class
WINDOW_REDUCE = "window_reduce"  # windows -> one result per passage (max score + span)
CROSS_ENCODER = "cross_encoder"  # the first length class; the others are named by their bound


def cross_encoder_model(index: int, max_length: int) -> str:
    """The Triton model serving length class `index` (export/tensorrt_profiles.py)."""
    return CROSS_ENCODER if index == 0 else f"{CROSS_ENCODER}_{max_length}"


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
# Window mode. In: the stride in passage tokens between window starts (0: the server's default,
# half a window). Between steps: one row per window, its passage's row (owner) and its
# character span. Out: per passage, the best window's span and how many windows were scored.
WINDOW_STRIDE = Tensor("window_stride", "INT32", (1,))
OWNER = Tensor("owner", "INT32", (1,))
WINDOW_SPAN = Tensor("window_span", "INT32", (2,))
SPAN = Tensor("span", "INT32", (2,))  # (start, end) character offsets into the passage
WINDOWS = Tensor("windows", "INT32", (1,))
# Optional in both ensembles (absent: the export's max_length): the request's own tokens per pair
# (FlagReranker's compute_score(max_length=N) rules: query cut to N * 3 // 4, the pair to N); in
# window mode the length of each window's pair. One value per request (every row the same), from
# the published `min_request_max_length` up to the export's max_length.
REQUEST_MAX_LENGTH = Tensor("max_length", "INT32", (1,))

ENSEMBLE_INPUTS = (QUERY, PASSAGE)
# Inputs both ensembles also take, optional (declared after their required inputs).
ENSEMBLE_OPTIONAL_INPUTS = (REQUEST_MAX_LENGTH,)
ENSEMBLE_OUTPUTS = (LOGIT, SCORE, TOKENS, TRUNCATED)
WINDOW_ENSEMBLE_INPUTS = (QUERY, PASSAGE, WINDOW_STRIDE)
WINDOW_ENSEMBLE_OUTPUTS = (LOGIT, SCORE, TOKENS, TRUNCATED, SPAN, WINDOWS)
# window_stride and max_length optional: window_stride present = window mode
TOKENIZER_INPUTS = (QUERY, PASSAGE, WINDOW_STRIDE, REQUEST_MAX_LENGTH)
TOKENIZER_OUTPUTS = (INPUT_IDS, ATTENTION_MASK, TOKENS, TRUNCATED, OWNER, WINDOW_SPAN)
CROSS_ENCODER_INPUTS = (INPUT_IDS, ATTENTION_MASK)
CROSS_ENCODER_OUTPUTS = (LOGIT, SCORE)
WINDOW_REDUCE_INPUTS = (LOGIT, SCORE, TOKENS, TRUNCATED, OWNER, WINDOW_SPAN)
WINDOW_REDUCE_OUTPUTS = (LOGIT, SCORE, TOKENS, TRUNCATED, SPAN, WINDOWS)

# The phrase the tokenizer's per-request window error carries, so a client can tell it from
# other invalid input and split the request instead of failing.
WINDOWS_PER_REQUEST_ERROR = "windows per request"

# Triton's own wording (lower case) for a transient failure, which reaches a BLS caller and
# tritonclient as text: load shed by the dynamic batcher's queue policy, and a dead Python stub or
# a draining server. The client retries them; the length router relays them as UNAVAILABLE.
SHED_LOAD_MESSAGES = ("exceeds maximum queue size", "request timeout expired")
STEP_DOWN_MESSAGES = ("stub process", "not healthy", "server is shutting down", "server not ready")
# What a refusal for size says beside gRPC's RESOURCE_EXHAUSTED (which a rate limit answers too):
# gRPC's own limit ("Received message larger than max (...)") and the front proxy's body cap
# (export/proxy_config.py words it with this phrase). Never retried.
TOO_LARGE_MESSAGE = "larger than"


class Param:
    """Keys of the string parameters in the ensemble's (and tokenizer's) config."""

    MAX_LENGTH = "max_length"  # tokens per pair, special tokens included
    QUERY_MAX_LENGTH = "query_max_length"  # the query's share of max_length
    SPECIAL_TOKENS_PER_PAIR = "special_tokens_per_pair"  # <s> q </s></s> p </s>
    LENGTH_BUCKETS = "length_buckets"  # comma-separated padded lengths
    MAX_TEXT_BYTES = "max_text_bytes"  # UTF-8 bytes per text
    MAX_BATCH_TOKENS = "max_batch_tokens"  # padded tokens any cross-encoder batch may hold
    LENGTH_CLASSES = "length_classes"  # "512:64,2048:16,8192:4": (bound, pairs per batch) per class
    CLASS_MODELS = "class_models"  # the router's: the model of each class, comma-separated
    SPLIT_COST = "split_cost"  # the router's: "run_tokens:attention_width" (when a split pays)
    MAX_WINDOWS_PER_PASSAGE = "max_windows_per_passage"
    MAX_WINDOWS_PER_REQUEST = "max_windows_per_request"
    # The smallest max_length a request may ask for (the optional `max_length` input); a server
    # that does not publish it does not take that input.
    MIN_REQUEST_MAX_LENGTH = "min_request_max_length"
    # Each length class's queue timeout in microseconds, in LENGTH_CLASSES order (derived from the
    # class's cost: export/tensorrt_profiles.py queue_timeout_us): how long the server itself lets
    # a request of that class wait, from which the client derives its default deadline.
    CLASS_QUEUE_TIMEOUTS_US = "class_queue_timeouts_us"
