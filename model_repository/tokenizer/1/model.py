"""Triton Python-backend model: query/passage text -> bucket-padded token tensors.

Two modes, chosen per request by the optional `window_stride` input (and in both, the optional
`max_length` input: the request's own tokens per pair, FlagReranker's rules at that length):
- truncate (the `rerank` ensemble, no window_stride): one row per pair, FlagReranker's tokenization;
- window (the `rerank_windows` ensemble): one row per window of each passage, plus the passage
  each window belongs to (`owner`) and its character span (`window_span`); the batch grows,
  bounded by max_windows_per_request.
All requests of one execute() are tokenized in one batch call per mode; a bad request gets its
own error response and the others still succeed. The logic lives in pair_tokenization.py.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
import contract  # noqa: E402 - the wire contract, copied here from the client package at export
from padding_metrics import PaddingMetrics  # noqa: E402
from pair_tokenization import InvalidInput, PairTokenizer, WindowBatch  # noqa: E402


def _texts(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InvalidInput(f"{name}: missing input")
    return tensor.as_numpy().reshape(-1).tolist()


def _max_length(request):
    """The request's own max_length (optional input; None: the export's). One value per request:
    it sets the request's padded length, which every row shares."""
    tensor = pb_utils.get_input_tensor_by_name(request, contract.REQUEST_MAX_LENGTH.name)
    if tensor is None:
        return None
    values = sorted({int(v) for v in tensor.as_numpy().reshape(-1).tolist()})
    if len(values) != 1:
        raise InvalidInput(
            f"{contract.REQUEST_MAX_LENGTH.name}: one value per request, every row the same; got {values[:4]}"
        )
    return values[0]


def _error(err):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))


def _response(batch, owner, span):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(contract.INPUT_IDS.name, batch.input_ids),
            pb_utils.Tensor(contract.ATTENTION_MASK.name, batch.attention_mask),
            pb_utils.Tensor(contract.TOKENS.name, batch.tokens),
            pb_utils.Tensor(contract.TRUNCATED.name, batch.truncated),
            pb_utils.Tensor(contract.OWNER.name, owner),
            pb_utils.Tensor(contract.WINDOW_SPAN.name, span),
        ]
    )


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = PairTokenizer(
            os.path.join(version_dir, "tokenizer.json"),
            max_length=int(params["max_length"]),
            query_max_length=int(params["query_max_length"]),
            buckets=[int(b) for b in params["length_buckets"].split(",")],
            max_text_bytes=int(params["max_text_bytes"]),
            max_windows_per_passage=int(params["max_windows_per_passage"]),
            max_windows_per_request=int(params["max_windows_per_request"]),
        )
        # Useful vs computed (padded) tokens of every request emitted, on :8002 (padding_metrics.py),
        # sent once a second off the request path.
        self.padding = PaddingMetrics(pb_utils, args["model_name"], args["model_version"])

    def finalize(self):
        self.padding.close()

    def execute(self, requests):
        truncate, window, responses = [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                texts = (_texts(request, contract.QUERY.name), _texts(request, contract.PASSAGE.name))
                max_length = _max_length(request)
                stride = pb_utils.get_input_tensor_by_name(request, contract.WINDOW_STRIDE.name)
                if stride is None:
                    truncate.append((i, texts, max_length))
                else:
                    strides = stride.as_numpy().reshape(-1).astype(np.int64).tolist()
                    window.append((i, (*texts, strides, max_length), max_length))
            except InvalidInput as err:
                responses[i] = _error(err)
        results = self.tokenizer.tokenize_requests([t for _, t, _ in truncate], max_lengths=[m for *_, m in truncate])
        results += self.tokenizer.tokenize_window_requests([t for _, t, _ in window])
        for (i, *_), result in zip(truncate + window, results):
            if isinstance(result, InvalidInput):
                responses[i] = _error(result)
            elif isinstance(result, WindowBatch):
                responses[i] = _response(result.pairs, result.owner, result.span)
                self.padding.record(result.pairs.attention_mask)
            else:  # truncate mode: every pair is its own "window" over the whole (cut) passage
                rows = result.input_ids.shape[0]
                responses[i] = _response(
                    result, np.arange(rows, dtype=np.int32).reshape(-1, 1), np.zeros((rows, 2), dtype=np.int32)
                )
                self.padding.record(result.attention_mask)
        return responses
