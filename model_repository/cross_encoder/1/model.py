"""Triton Python-backend model: the cross-encoder on ONNX Runtime (CPU).

The CPU path only, for machines without the native onnxruntime/TensorRT backends (the
pip-installed Triton). The dynamic batcher hands us requests of identical shape; we stack
them into one ONNX Runtime run and split the outputs back, one response per request.

Every model in a Triton repository can be called directly, not only the `rerank` ensemble, so
this model bounds its own inputs (`check_inputs`) before any compute: a direct [16, 4096]
request would otherwise take tens of seconds of CPU and gigabytes of memory. Each length class
is its own model with its own limits (shape_limits.py); every batch run is recorded in gauges.

A batch whose rows span several length buckets is run in parts of different widths where the
padded tokens saved outweigh the cost of one more ONNX Runtime run in this process (routing.plan,
the length router's rule, with `split_cost` measured for an in-process run: export/settings.py
IN_PROCESS_RUN_S). This is how the direct `rerank` path (tokenizer -> this model, one length
class) gets the router's padding savings without the router's Python BLS hop (issue 30).
"""

import json
import os
import sys
from collections import defaultdict

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
import contract  # noqa: E402 - the wire contract, copied here from the client package at export
from deferred_counters import DeferredCounters  # noqa: E402 - the tokenizer's, copied here
from routing import batch_parts, cut, parse_split_cost  # noqa: E402 - the length router's, copied here
from shape_limits import (  # noqa: E402
    METRIC_MAX_LENGTH,
    METRIC_MAX_ROWS,
    METRIC_MAX_TOKENS,
    METRIC_MIN_LENGTH,
    METRIC_RUNS,
    InvalidTokens,
    ShapeRecord,
    check_inputs,
)

PAD_ID = 1  # XLM-R's <pad>; masked out, its value never reaches a score

METRIC_HELP = {
    METRIC_MAX_TOKENS: "Largest batch run since start: rows x padded length",
    METRIC_MAX_ROWS: "Most rows in one batch run since start",
    METRIC_MAX_LENGTH: "Longest padded length run since start",
    METRIC_MIN_LENGTH: "Shortest padded length run since start",
}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        # Limits written by export/triton_config.py from ServingLimits (export/settings.py).
        self.name = config["name"]
        self.min_length = int(params.get("min_length", "1"))
        self.max_length = int(params["max_length"])
        self.vocab_size = int(params["vocab_size"])
        self.max_batch_size = int(config["max_batch_size"])
        # Where a batch is split into runs of different widths (absent: never, one run per shape).
        buckets = params.get(contract.Param.LENGTH_BUCKETS)
        self.buckets = [int(b) for b in buckets.split(",")] if buckets else None
        self.split_cost = parse_split_cost(params.get(contract.Param.SPLIT_COST))
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        # No busy-waiting after a run: the tokenizer's and the other instances' processes share
        # these cores, and a spinning pool takes their time (ONNX Runtime spins by default).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.record = ShapeRecord()
        # The families must outlive their metrics (the backend refuses a metric whose family is gone).
        self.families = {
            name: pb_utils.MetricFamily(name=name, description=text, kind=pb_utils.MetricFamily.GAUGE)
            for name, text in METRIC_HELP.items()
        }
        self.gauges = {name: family.Metric(labels={"model": self.name}) for name, family in self.families.items()}
        self.families[METRIC_RUNS] = pb_utils.MetricFamily(
            name=METRIC_RUNS, description="ONNX Runtime runs made", kind=pb_utils.MetricFamily.COUNTER
        )
        # Sent once a second off the request path (deferred_counters.py): a metric call is a round trip.
        self.counters = DeferredCounters(
            {METRIC_RUNS: self.families[METRIC_RUNS].Metric(labels={"model": self.name})},
            log=pb_utils.Logger.log_warn,
        )

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        feeds, responses = {}, [None] * len(requests)
        for index, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, contract.INPUT_IDS.name)
            mask = pb_utils.get_input_tensor_by_name(request, contract.ATTENTION_MASK.name)
            ids = ids.as_numpy() if ids is not None else None
            mask = mask.as_numpy() if mask is not None else None
            try:
                check_inputs(ids, mask, self.min_length, self.max_length, self.vocab_size, self.max_batch_size)
            except InvalidTokens as err:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"cross_encoder: {err}", pb_utils.TritonError.INVALID_ARG)
                )
                continue
            feeds[index] = (ids, mask)
        # Group requests by padded length: one run per shape, in case shapes are mixed.
        groups = defaultdict(list)
        for index, (ids, _) in feeds.items():
            groups[ids.shape[1]].append(index)
        for indices in groups.values():
            if len(indices) == 1:  # one request: its tensors as they came, no copy
                ids, mask = feeds[indices[0]]
            else:
                ids = np.concatenate([feeds[i][0] for i in indices])
                mask = np.concatenate([feeds[i][1] for i in indices])
            try:
                logit, score = self.run(ids, mask)
            except Exception as err:  # noqa: BLE001 - report to these requests, keep serving
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"cross_encoder: {err}"))
                continue
            start = 0
            for i in indices:
                rows = feeds[i][0].shape[0]
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(contract.LOGIT.name, logit[start : start + rows]),
                        pb_utils.Tensor(contract.SCORE.name, score[start : start + rows]),
                    ]
                )
                start += rows
        return responses

    def run(self, ids, mask):
        """Logits and scores of a [B, L] batch, run in the parts `parts` chooses."""
        parts = batch_parts(mask, self.buckets, self.split_cost)
        logit = np.empty((ids.shape[0], 1), np.float32)
        score = np.empty((ids.shape[0], 1), np.float32)
        made = 0
        try:
            for rows, width in parts:
                part_ids = ids if rows is None else cut(ids, rows, width, PAD_ID)
                part_mask = mask if rows is None else cut(mask, rows, width, 0)
                for name, value in self.record.update(*part_ids.shape).items():
                    self.gauges[name].set(value)
                made += 1
                part_logit, part_score = self.session.run(
                    [contract.LOGIT.name, contract.SCORE.name],
                    {contract.INPUT_IDS.name: part_ids, contract.ATTENTION_MASK.name: part_mask},
                )
                where = slice(None) if rows is None else rows
                logit[where] = part_logit.reshape(-1, 1)
                score[where] = part_score.reshape(-1, 1)
        finally:
            self.counters.add(METRIC_RUNS, made)
        return logit, score
