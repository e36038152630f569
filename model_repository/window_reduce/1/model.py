"""Triton Python-backend model: window mode's last step, from one row per window back to one
row per passage (the ensemble's batch). Each passage gets its best window's logit, score,
tokens and character span, and the number of windows scored; the logic is in reduction.py."""

import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(__file__))
import contract  # noqa: E402 - the wire contract, copied here from the client package at export
from reduction import reduce_windows  # noqa: E402

PER_WINDOW = tuple(t.name for t in (contract.LOGIT, contract.SCORE, contract.TOKENS, contract.TRUNCATED))


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            arrays = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in (*PER_WINDOW, contract.OWNER.name, contract.WINDOW_SPAN.name)
            }
            try:
                reduced = reduce_windows(arrays[contract.OWNER.name], arrays[contract.LOGIT.name])
            except ValueError as err:
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"window_reduce: {err}", pb_utils.TritonError.INVALID_ARG)
                    )
                )
                continue
            best = reduced.best
            outputs = [
                pb_utils.Tensor(name, np.ascontiguousarray(arrays[name].reshape(-1, 1)[best])) for name in PER_WINDOW
            ]
            outputs.append(
                pb_utils.Tensor(
                    contract.SPAN.name, np.ascontiguousarray(arrays[contract.WINDOW_SPAN.name].reshape(-1, 2)[best])
                )
            )
            outputs.append(pb_utils.Tensor(contract.WINDOWS.name, reduced.windows))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
