"""Triton Python-backend model: sends each row to the cross-encoder of its length class.

Why: Triton's dynamic batcher merges requests of one shape up to a model's max_batch_size,
whatever their length, so the only bound on what a batch holds is each model's own
max_batch_size. Every length class is its own model (one TensorRT profile each) with
max_batch_size * max_length <= MAX_BATCH_TOKENS; this model splits each request by class
(routing.py) and calls the class models (BLS). All parts of a request are in flight at once,
so the class models batch them with everything else (windows of a window-mode request
included, and the parts the other router instances send).

One request per execute (issue 26 item 5): the config gives this model a queue that never merges
(export/triton_config.py _one_request_per_execute: preferred_batch_size [1], no delay), so Triton
hands each request to an instance alone, and this stub runs one
execute at a time although `execute` is a coroutine: for a non-decoupled model the stub waits for
it to complete before it reads the next batch (python_backend r24.10 src/pb_stub.cc
ProcessRequests, lines 684-690: RunCoroutine(execute_return, false /* in_background */)). So this
stub's /dev/shm region holds one request's inputs, its calls and its answers at a time, however
wide a caller who names this model makes a row. The loop below still takes a list: it is the
backend's interface.
"""

import asyncio
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
import contract  # noqa: E402 - the wire contract, copied here from the client package at export
from routing import RouteError, cut, parse_classes, parse_split_cost, plan, relayed_code, row_lengths  # noqa: E402

PAD_ID = 1  # XLM-R's <pad>; masked out, its value never reaches a score
TRANSIENT = contract.SHED_LOAD_MESSAGES + contract.STEP_DOWN_MESSAGES
# The Python class model's refusals of values the caller chose (cross_encoder/1/shape_limits.py).
CLASS_REFUSALS = (
    f"{contract.CROSS_ENCODER}: {contract.INPUT_IDS.name}: id ",
    f"{contract.CROSS_ENCODER}: {contract.ATTENTION_MASK.name}: values",
)


def _error(message, code=None):
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.buckets = [int(b) for b in params["length_buckets"].split(",")]
        self.classes = parse_classes(params["length_classes"])
        self.models = params[contract.Param.CLASS_MODELS].split(",")
        # Split a class's rows into runs of different widths only where that pays (routing.SplitCost).
        self.split_cost = parse_split_cost(params.get(contract.Param.SPLIT_COST))

    async def execute(self, requests):
        responses = [None] * len(requests)
        jobs = []  # (request, rows, pending BLS call)
        shapes = {}
        for i, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, contract.INPUT_IDS.name)
            mask = pb_utils.get_input_tensor_by_name(request, contract.ATTENTION_MASK.name)
            try:
                if ids is None or mask is None:
                    raise RouteError("input_ids and attention_mask are both required")
                ids, mask = ids.as_numpy(), mask.as_numpy()
                if ids.ndim != 2 or ids.shape != mask.shape:
                    raise RouteError(
                        f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} must be "
                        f"[batch, length] of the same shape"
                    )
                parts = plan(row_lengths(mask), self.buckets, self.classes, self.split_cost)
            except RouteError as err:
                responses[i] = _error(f"length_router: {err}", pb_utils.TritonError.INVALID_ARG)
                continue
            shapes[i] = ids.shape[0]
            for part in parts:
                call = pb_utils.InferenceRequest(
                    model_name=self.models[part.length_class],
                    requested_output_names=[contract.LOGIT.name, contract.SCORE.name],
                    inputs=[
                        pb_utils.Tensor(contract.INPUT_IDS.name, cut(ids, part.rows, part.width, PAD_ID)),
                        pb_utils.Tensor(contract.ATTENTION_MASK.name, cut(mask, part.rows, part.width, 0)),
                    ],
                )
                jobs.append((i, part.rows, call.async_exec()))
        answers = await asyncio.gather(*(job for _, _, job in jobs))
        outputs = {i: (np.zeros((rows, 1), np.float32), np.zeros((rows, 1), np.float32)) for i, rows in shapes.items()}
        for (i, rows, _), answer in zip(jobs, answers):
            if responses[i] is not None:
                continue
            if answer.has_error():
                message = answer.error().message()
                code = relayed_code(message, CLASS_REFUSALS, TRANSIENT)
                responses[i] = _error(message, getattr(pb_utils.TritonError, code))
                continue
            outputs[i][0][rows] = (
                pb_utils.get_output_tensor_by_name(answer, contract.LOGIT.name).as_numpy().reshape(-1, 1)
            )
            outputs[i][1][rows] = (
                pb_utils.get_output_tensor_by_name(answer, contract.SCORE.name).as_numpy().reshape(-1, 1)
            )
        for i, (logit, score) in outputs.items():
            if responses[i] is None:
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(contract.LOGIT.name, logit),
                        pb_utils.Tensor(contract.SCORE.name, score),
                    ]
                )
        return responses
