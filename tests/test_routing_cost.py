"""Issue 30 item 4: no router hop where there is one length class, and a request split into runs
of different widths only where the padding saved outweighs the cost of a run."""

from __future__ import annotations

import importlib.util
import itertools
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from export.settings import DEVICE_FLOPS, IN_PROCESS_RUN_S, RUN_OVERHEAD_S, ServingLimits
from export.shm_budget import requests_per_execute
from export.tensorrt_profiles import length_classes
from export.triton_config import RepositorySpec, all_configs, split_cost
from reranker_client.contract import (
    CROSS_ENCODER,
    ENSEMBLE,
    LENGTH_ROUTER,
    TOKENIZER,
    WINDOW_ENSEMBLE,
    WINDOW_REDUCE,
    Param,
)

REPO = Path(__file__).resolve().parent.parent / "model_repository"


def _routing():
    spec = importlib.util.spec_from_file_location("routing_under_test", REPO / "length_router" / "1" / "routing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


routing = _routing()


def _steps(config) -> list[str]:
    return [step.model_name for step in config.ensemble_scheduling.step]


@pytest.mark.parametrize("backend", ["python", "onnxruntime", "tensorrt"])
def test_one_class_rerank_calls_its_class_model_directly(backend):
    configs = all_configs(RepositorySpec(backend=backend))
    (only,) = length_classes(ServingLimits())
    assert _steps(configs[ENSEMBLE]) == [TOKENIZER, only.model]
    # The ensemble's batch fits the class model's, so the batcher never refuses a tokenized request.
    assert configs[ENSEMBLE].max_batch_size <= configs[only.model].max_batch_size
    # Window mode keeps the router: a request's windows may exceed the class's batch.
    assert _steps(configs[WINDOW_ENSEMBLE]) == [TOKENIZER, LENGTH_ROUTER, WINDOW_REDUCE]
    # Several classes: the router sends each row to its class.
    long = all_configs(RepositorySpec(backend=backend, limits=ServingLimits(max_length=8192)))
    assert _steps(long[ENSEMBLE]) == [TOKENIZER, LENGTH_ROUTER]


def _real_cost(backend: str):
    return routing.parse_split_cost(split_cost(RepositorySpec(backend=backend)))


def test_split_only_where_the_padding_saved_outweighs_a_run():
    limits = ServingLimits()
    table = [(c.max_length, c.max_batch) for c in length_classes(limits)]
    lengths = np.array([30, 200, 480, 17, 25, 190])

    def shapes(cost):
        return [(p.width, sorted(p.rows.tolist())) for p in routing.plan(lengths, limits.buckets, table, cost)]

    # No cost given: one run of the request's own shape, as the tokenizer padded it.
    assert shapes(routing.NEVER_SPLIT) == [(480, [0, 1, 2, 3, 4, 5])]
    # The real model on this CPU: a run costs less than a token, so every bucket is its own run.
    cpu = _real_cost("python")
    assert cpu.run_tokens < 16
    assert shapes(cpu) == [(32, [0, 3, 4]), (192, [5]), (208, [1]), (480, [2])]
    # On a GPU a run costs hundreds of tokens: splitting 5 short rows off a 480 saves
    # 5 x (480 - ~200) padded tokens; splitting the 32s off the 208s saves 3 x 176 less than a run.
    gpu = _real_cost("tensorrt")
    assert gpu.run_tokens > 200
    assert shapes(gpu) == [(208, [0, 1, 3, 4, 5]), (480, [2])]


def _brute_force(widths: list[int], cost, batch: int) -> float:
    """The cheapest split of width-sorted rows into contiguous runs, over every partition."""
    edges = [0] + [i for i in range(1, len(widths)) if widths[i] != widths[i - 1]] + [len(widths)]
    inner = edges[1:-1]
    best = float("inf")
    for k in range(len(inner) + 1):
        for cuts in itertools.combinations(inner, k):
            bounds = [0, *cuts, len(widths)]
            total = 0.0
            for a, b in zip(bounds, bounds[1:]):
                total += -(-(b - a) // batch) * cost.run_tokens + (b - a) * widths[b - 1] * (
                    1 + widths[b - 1] / cost.attention_width
                )
            best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_split_plan_is_the_cheapest_contiguous_split(seed):
    rng = random.Random(seed)
    limits = ServingLimits(max_length=rng.choice([512, 2048]))
    table = [(c.max_length, c.max_batch) for c in length_classes(limits)]
    cost = routing.SplitCost(rng.choice([0.5, 40.0, 300.0, 3000.0]), 6144.0)
    lengths = np.array([rng.randint(1, limits.max_length) for _ in range(rng.randint(1, 40))])
    parts = routing.plan(lengths, limits.buckets, table, cost)
    assert sorted(np.concatenate([p.rows for p in parts]).tolist()) == list(range(len(lengths)))
    planned = sum(cost.of(len(p.rows), p.width) for p in parts)
    for index, (_, batch) in enumerate(table):
        members = sorted(int(n) for n in lengths if routing.bisect.bisect_left(limits.buckets, n) < len(limits.buckets))
        widths = sorted(
            limits.buckets[routing.bisect.bisect_left(limits.buckets, n)]
            for n in members
            if next(
                i
                for i, (bound, _) in enumerate(table)
                if limits.buckets[routing.bisect.bisect_left(limits.buckets, n)] <= bound
            )
            == index
        )
        if widths:
            mine = sum(cost.of(len(p.rows), p.width) for p in parts if p.length_class == index)
            assert mine == pytest.approx(_brute_force(widths, cost, batch))
    for part in parts:
        assert len(part.rows) <= table[part.length_class][1]
    assert planned > 0


def test_router_config_carries_the_models_own_split_cost():
    """The cost is in the served model's tokens (from its geometry), so a small model splits far
    less often than the real one on the same device."""
    spec = RepositorySpec(backend="python")
    tiny = replace(spec, model_geometry=(2, 64))
    for s, layers, hidden in ((spec, 24, 1024), (tiny, 2, 64)):
        cost = routing.parse_split_cost(all_configs(s)[LENGTH_ROUTER].parameters[Param.SPLIT_COST].string_value)
        expected = RUN_OVERHEAD_S["python"] * DEVICE_FLOPS["python"] / (layers * 24 * hidden**2)
        assert cost.run_tokens == pytest.approx(expected, rel=1e-3)
        assert cost.attention_width == 6 * hidden
    ratio = (
        routing.parse_split_cost(split_cost(tiny)).run_tokens / routing.parse_split_cost(split_cost(spec)).run_tokens
    )
    assert ratio == pytest.approx(24 * 1024**2 / (2 * 64**2), rel=1e-3)  # a tiny token is that much cheaper


def _mask(lengths: list[int], width: int) -> np.ndarray:
    return (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int64)


def test_direct_path_class_model_splits_a_batch_where_a_run_in_process_pays():
    """The direct one-class path has no router, so the Python class model applies the router's
    rule inside its own runs (routing.batch_parts), at the cost of a run in its own process."""
    limits = ServingLimits()
    config = all_configs(RepositorySpec(backend="python", model_geometry=(2, 64)))[CROSS_ENCODER]
    params = {k: v.string_value for k, v in config.parameters.items()}
    buckets = [int(b) for b in params[Param.LENGTH_BUCKETS].split(",")]
    assert buckets == limits.buckets
    cost = routing.parse_split_cost(params[Param.SPLIT_COST])
    # A run in process, not a Triton request: far cheaper than the router's run.
    assert cost.run_tokens == pytest.approx(IN_PROCESS_RUN_S * DEVICE_FLOPS["python"] / (2 * 24 * 64**2), rel=1e-3)
    assert cost.run_tokens < routing.parse_split_cost(split_cost(RepositorySpec(model_geometry=(2, 64)))).run_tokens
    # A request padded to 512 whose rows span buckets: two 317-320s run at 320, the rest at 512.
    mask = _mask([317, 320, 441, 461, 480, 512, 512, 512], 512)
    parts = [(rows.tolist(), width) for rows, width in routing.batch_parts(mask, buckets, cost)]
    assert parts[0] == ([0, 1], 320) and parts[-1][1] == 512
    assert sorted(r for rows, _ in parts for r in rows) == list(range(8))
    # Rows of one bucket, one row, or no split rule: the batch as it came, one run, no copy.
    assert routing.batch_parts(_mask([200, 201, 208], 208), buckets, cost) == [(None, 208)]
    assert routing.batch_parts(_mask([17], 512), buckets, cost) == [(None, 512)]
    assert routing.batch_parts(mask, None, cost) == [(None, 512)]
    # A width off the buckets (a direct caller's) is never widened: 20 stays 20, not 32.
    narrow = routing.batch_parts(_mask([3, 20], 20), buckets, routing.SplitCost(0.0, 384.0))
    assert [width for _, width in narrow] == [16, 20]
    # The GPU backends' class models are native: no Python to split in, so no split rule there.
    for backend in ("onnxruntime", "tensorrt"):
        assert Param.SPLIT_COST not in all_configs(RepositorySpec(backend=backend))[CROSS_ENCODER].parameters


def test_no_batcher_wait_for_a_request_that_arrives_alone():
    """Triton holds a lone request for the whole max_queue_delay (measured: 0.33-0.48 ms in the
    tokenizer's queue per request at 200 us); every Python step of the CPU path waits for none."""
    for backend in ("python", "onnxruntime", "tensorrt"):
        configs = all_configs(RepositorySpec(backend=backend))
        # The tokenizer's and the router's queues never merge (one request per execute, issue 26
        # item 5) and hold no request back.
        for model in (TOKENIZER, LENGTH_ROUTER):
            assert requests_per_execute(configs[model]) == 1, (backend, model)
            assert configs[model].dynamic_batching.max_queue_delay_microseconds == 0, (backend, model)
    assert (
        all_configs(RepositorySpec(backend="python"))[CROSS_ENCODER].dynamic_batching.max_queue_delay_microseconds == 0
    )


def test_served_rerank_runs_each_request_once_without_the_router(server, python_repo):
    """Through the real server: a mixed-length request is one cross-encoder run and no router
    call (before: tokenizer -> length_router -> cross_encoder, a Python BLS hop per request)."""
    from common.raw_rerank import raw_rerank
    from tests.server_helpers import counted, metric, settle_counters

    def counts():
        return {
            model: metric(server.metrics_url, "nv_inference_exec_count", model)
            for model in ("cross_encoder", LENGTH_ROUTER)
        }

    def onnx_runs():
        return metric(server.metrics_url, "reranker_model_runs_total", "cross_encoder")

    settle_counters()  # reranker_model_runs_total is sent once a second, off the request path
    before, runs_before = counts(), onnx_runs()
    passages = ["short", "a somewhat longer passage about renewing a passport " * 3, "word " * 300]
    out = raw_rerank(server.grpc_url, ["passport renewal"] * 3, passages)
    after = counts()
    assert after["cross_encoder"] - before["cross_encoder"] == 1
    assert after[LENGTH_ROUTER] == before[LENGTH_ROUTER]
    assert out["tokens"].tolist()[0] < out["tokens"].tolist()[2]
    # ... and inside that one execute the class model ran the rows in the parts of the router's rule
    # (its saving without its hop), with the logits of the request run whole.
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from common.pair_tokenizer import load_pair_tokenizer

    batch = load_pair_tokenizer(python_repo / TOKENIZER / "1", ServingLimits()).tokenize_request(
        ["passport renewal"] * 3, passages
    )
    served = text_format.Parse((python_repo / CROSS_ENCODER / "config.pbtxt").read_text(), mc.ModelConfig())
    buckets = [int(b) for b in served.parameters[Param.LENGTH_BUCKETS].string_value.split(",")]
    cost = routing.parse_split_cost(served.parameters[Param.SPLIT_COST].string_value)
    parts = routing.batch_parts(batch.attention_mask, buckets, cost)
    assert len(parts) >= 2 and parts[0][1] < batch.input_ids.shape[1]
    assert counted(lambda: onnx_runs() - runs_before, len(parts)) == len(parts)
    session = ort.InferenceSession(str(python_repo / CROSS_ENCODER / "1" / "model.onnx"))
    whole = session.run(["logit"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})[0]
    assert np.abs(whole.reshape(-1) - out["logit"]).max() <= 1e-4  # fp32 tolerance of a narrower padding
