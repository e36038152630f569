"""The `rerank` ensemble on a real tritonserver: exact reference scores, real batching,
and bad requests failing alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient

from common import calibration_texts
from common.raw_rerank import raw_rerank, rerank_inputs
from export.settings import ServingLimits
from tests.references import flag_scores, flag_token_ids, torch_logits
from tests.server_helpers import bad_and_good_together, metric


def _pairs():
    pairs = calibration_texts.pairs()
    return [q for q, _ in pairs], [p for _, p in pairs]


def test_scores_equal_flagreranker_and_pytorch(server, tiny_model):
    queries, passages = _pairs()
    pairs = list(zip(queries, passages))
    out = {k: [] for k in ("logit", "score", "tokens", "truncated")}
    for start in range(0, len(pairs), 16):  # mixed lengths inside each request
        got = raw_rerank(server.grpc_url, queries[start : start + 16], passages[start : start + 16])
        for k in out:
            out[k].extend(got[k].tolist())
    reference = flag_scores(tiny_model, pairs, normalize=True)
    np.testing.assert_allclose(out["score"], reference, atol=1e-4, rtol=0)
    ids = flag_token_ids(tiny_model, pairs)
    np.testing.assert_allclose(out["logit"], torch_logits(tiny_model, ids), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["logit"], flag_scores(tiny_model, pairs, normalize=False), atol=1e-4, rtol=0)
    assert out["tokens"] == [len(i) for i in ids]
    # truncated <=> the query lost tokens to the 3/4 rule or the pair did not fit in max_length.
    from tests.references import flag_reranker

    tokenizer = flag_reranker(str(tiny_model)).tokenizer
    limits = ServingLimits()
    for row, (q, p) in enumerate(pairs):
        q_len = len(tokenizer(q, add_special_tokens=False)["input_ids"])
        p_len = len(tokenizer(p, add_special_tokens=False)["input_ids"])
        assert out["truncated"][row] == (q_len > limits.query_max_length or q_len + p_len + 4 > limits.max_length), row
    long_query_row = len(pairs) - 1  # calibration_texts puts the over-long query last
    assert out["truncated"][long_query_row] and out["tokens"][long_query_row] < limits.max_length


def test_concurrent_clients_batch_and_stay_correct(server, tiny_model):
    queries, passages = _pairs()
    pairs = list(zip(queries, passages))
    expected = flag_scores(tiny_model, pairs, normalize=True)
    # Requests of 1-4 pairs of similar length, from 8 clients at once.
    order = np.argsort([len(q) + len(p) for q, p in pairs])
    requests = [list(order[i : i + 3]) for i in range(0, len(order), 3)]
    count0 = metric(server.metrics_url, "nv_inference_count", "cross_encoder")
    exec0 = metric(server.metrics_url, "nv_inference_exec_count", "cross_encoder")
    errors, lock = [], threading.Lock()

    def client_loop(worker: int):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for _ in range(4):
            for rows in requests[worker % 3 :: 3]:
                result = client.infer("rerank", rerank_inputs([queries[i] for i in rows], [passages[i] for i in rows]))
                got = result.as_numpy("score").reshape(-1)
                if not np.allclose(got, expected[rows], atol=1e-4):
                    with lock:
                        errors.append((rows, got, expected[rows]))
        client.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client_loop, range(8)))
    assert not errors
    inferences = metric(server.metrics_url, "nv_inference_count", "cross_encoder") - count0
    executions = metric(server.metrics_url, "nv_inference_exec_count", "cross_encoder") - exec0
    print(
        f"\ncross_encoder: {inferences:.0f} pairs in {executions:.0f} executions "
        f"= {inferences / executions:.2f} pairs per execution"
    )
    assert inferences / executions > 1 + 1e-9
    # Report padding efficiency of this workload (useful tokens / computed tokens).
    lengths = np.array([len(i) for i in flag_token_ids(tiny_model, pairs)])
    buckets = ServingLimits().buckets
    computed = sum(len(rows) * next(b for b in buckets if b >= lengths[rows].max()) for rows in requests)
    print(f"padding efficiency (useful/computed tokens): {lengths.sum() / computed:.3f}")


def test_bad_item_fails_alone_while_good_request_succeeds(server, tiny_model):
    good_q, good_p = ["Wie hoch ist der Everest?"] * 2, ["Der Everest ist 8849 m hoch.", "Paris ist schön."]
    expected = flag_scores(tiny_model, list(zip(good_q, good_p)))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    message, scores = bad_and_good_together(
        lambda: client.infer("rerank", rerank_inputs(["query", "query"], ["fine passage", "   "])),
        lambda: raw_rerank(server.grpc_url, good_q, good_p)["score"],
    )
    assert "passage[1]" in message and "empty" in message
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert server.is_ready()
