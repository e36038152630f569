"""Triton Python-backend model: the cross-encoder on ONNX Runtime (CPU).

The CPU path only, for machines without the native onnxruntime/TensorRT backends (the
pip-installed Triton). The dynamic batcher hands us requests of identical shape; we stack
them into one ONNX Runtime run and split the outputs back, one response per request.
"""

import json
import os
from collections import defaultdict

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        feeds = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            feeds.append((ids, mask))
        # Group requests by padded length: one run per shape, in case shapes are mixed.
        groups = defaultdict(list)
        for index, (ids, _) in enumerate(feeds):
            groups[ids.shape[1]].append(index)
        responses = [None] * len(requests)
        for indices in groups.values():
            ids = np.concatenate([feeds[i][0] for i in indices])
            mask = np.concatenate([feeds[i][1] for i in indices])
            try:
                logit, score = self.session.run(["logit", "score"], {"input_ids": ids, "attention_mask": mask})
            except Exception as err:  # noqa: BLE001 - report to these requests, keep serving
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"cross_encoder: {err}"))
                continue
            start = 0
            for i in indices:
                rows = feeds[i][0].shape[0]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("logit", logit[start:start + rows].astype(np.float32)),
                    pb_utils.Tensor("score", score[start:start + rows].astype(np.float32)),
                ])
                start += rows
        return responses
