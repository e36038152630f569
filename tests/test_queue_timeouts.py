"""Issue 29 item 4, the mechanism (no server): every class model's queue timeout covers the drain
of what ONE caller's requests put in its queue on an idle server, derived from the class's cost
(export/settings.py, export/tensorrt_profiles.py). The measured failure it prevents: at max_length
4,096 one window-mode call on an idle server was shed with "Request timeout expired" because the
long class's own batches took longer than the single 5 s timeout every queue had
(`tests/test_long_documents_call.py` runs that call; `python -m benchmarks.window_call` times it)."""

from __future__ import annotations

import math

import pytest

from export.settings import CROSS_ENCODER_INSTANCES, QUEUE_TIMEOUT_US, ROUTER_INSTANCES, ServingLimits
from export.tensorrt_profiles import length_classes
from export.triton_config import RepositorySpec, all_configs, routed_batch_size
from reranker_client.contract import LENGTH_ROUTER, TOKENIZER


def _timeout_s(config) -> float:
    return config.dynamic_batching.default_queue_policy.default_timeout_microseconds / 1e6


def _drain_tflop(length_class, rows: int) -> float:
    """Written out here from the documented rule: ROUTER_INSTANCES requests of `rows` rows cut into
    the class's batches, CROSS_ENCODER_INSTANCES at a time, each costing its FLOPs on the
    24 x 1024 geometry (0.604e9 n + 98304 n^2 per pair)."""
    n, batch = length_class.max_length, length_class.max_batch
    rounds = math.ceil(ROUTER_INSTANCES * math.ceil(rows / batch) / CROSS_ENCODER_INSTANCES)
    return rounds * batch * (0.604e9 * n + 98_304 * n * n) / 1e12


@pytest.mark.parametrize("max_length", [512, 1024, 4096, 8192])
def test_each_class_waits_as_long_as_its_own_worst_drain_takes(max_length):
    spec = RepositorySpec(limits=ServingLimits(max_length=max_length))
    configs = all_configs(spec)
    classes = length_classes(spec.limits)
    rows = routed_batch_size(spec.limits)
    first = classes[0]
    assert _timeout_s(configs[first.model]) == QUEUE_TIMEOUT_US / 1e6  # the first class as before
    # The tokenizer has no queue of its own to time out: one request per execute, no dynamic batcher
    # (issue 26 item 5: its /dev/shm region holds one request); the class models' queues shed.
    assert not configs[TOKENIZER].HasField("dynamic_batching")
    # The first class's timeout is what its worst drain was given; every class gets as much per TFLOP.
    per_tflop = _timeout_s(configs[first.model]) / _drain_tflop(first, rows)
    timeouts = {}
    for length_class in classes:
        timeouts[length_class.model] = _timeout_s(configs[length_class.model])
        needed = per_tflop * _drain_tflop(length_class, rows)
        assert needed <= timeouts[length_class.model] <= needed + 1, (length_class.model, timeouts, needed)
    # The router has no queue of its own either (issue 26 item 5: one request per execute bounds its
    # /dev/shm region); exactly ROUTER_INSTANCES requests have parts at the class models at a time,
    # the drain above.
    assert not configs[LENGTH_ROUTER].HasField("dynamic_batching")
    if max_length >= 4096:  # where the measured failure was: the long class waits far longer
        assert timeouts[classes[-1].model] > 10 * timeouts[first.model]
