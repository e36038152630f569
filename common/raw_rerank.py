"""The `rerank` ensemble called with bare tritonclient, no reranker_client in between: the
tests' reference path to the server and the batcher-stall benchmark's call."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient


def rerank_inputs(queries, passages, module=grpcclient):
    q = np.array([[s.encode() if isinstance(s, str) else s] for s in queries], dtype=np.object_)
    p = np.array([[s.encode() if isinstance(s, str) else s] for s in passages], dtype=np.object_)
    inputs = [module.InferInput("query", list(q.shape), "BYTES"), module.InferInput("passage", list(p.shape), "BYTES")]
    inputs[0].set_data_from_numpy(q)
    inputs[1].set_data_from_numpy(p)
    return inputs


def raw_rerank(url: str, queries, passages) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer("rerank", rerank_inputs(queries, passages))
        return {k: result.as_numpy(k).reshape(-1) for k in ("logit", "score", "tokens", "truncated")}
    finally:
        client.close()
