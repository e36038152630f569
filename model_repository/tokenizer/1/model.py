"""Triton Python-backend model: query/passage text -> bucket-padded token tensors.

All requests of one execute() are tokenized in a single batch call; a bad request gets its
own error response and the others still succeed. The logic lives in pair_tokenization.py.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
from pair_tokenization import InvalidInput, PairTokenizer  # noqa: E402
from padding_metrics import PaddingMetrics  # noqa: E402


def _texts(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InvalidInput(f"{name}: missing input")
    return tensor.as_numpy().reshape(-1).tolist()


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
        )
        self.long_length = int(params["long_request_length"])
        self.long_max_pairs = int(params["long_request_max_pairs"])
        self.padding = PaddingMetrics(pb_utils, args["model_name"], args["model_version"])

    def _check_long(self, batch):
        """TensorRT's long profile holds few pairs; say so instead of failing in the engine."""
        width = batch.input_ids.shape[1]
        if width > self.long_length and batch.input_ids.shape[0] > self.long_max_pairs:
            raise InvalidInput(
                f"passage: a request with pairs longer than {self.long_length} tokens may hold at "
                f"most {self.long_max_pairs} pairs, got {batch.input_ids.shape[0]}")

    def execute(self, requests):
        parsed, responses = [], [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                parsed.append((i, _texts(request, "query"), _texts(request, "passage")))
            except InvalidInput as err:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))
        results = self.tokenizer.tokenize_requests([(q, p) for _, q, p in parsed])
        for (i, _, _), result in zip(parsed, results):
            try:
                if isinstance(result, InvalidInput):
                    raise result
                self._check_long(result)
            except InvalidInput as err:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))
                continue
            responses[i] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", result.input_ids),
                pb_utils.Tensor("attention_mask", result.attention_mask),
                pb_utils.Tensor("tokens", result.tokens),
                pb_utils.Tensor("truncated", result.truncated),
            ])
            self.padding.record(result.attention_mask)
        return responses
