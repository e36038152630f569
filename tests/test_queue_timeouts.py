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
from export.shm_budget import requests_per_execute
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
    # The tokenizer's queue never merges (issue 26 item 5: its /dev/shm region holds one request)
    # and still sheds after the default timeout.
    assert requests_per_execute(configs[TOKENIZER]) == 1
    assert _timeout_s(configs[TOKENIZER]) == QUEUE_TIMEOUT_US / 1e6
    # The first class's timeout is what its worst drain was given; every class gets as much per TFLOP.
    per_tflop = _timeout_s(configs[first.model]) / _drain_tflop(first, rows)
    timeouts = {}
    for length_class in classes:
        timeouts[length_class.model] = _timeout_s(configs[length_class.model])
        needed = per_tflop * _drain_tflop(length_class, rows)
        assert needed <= timeouts[length_class.model] <= needed + 1, (length_class.model, timeouts, needed)
    # The router's queue never merges either (issue 26 item 5: one request per execute bounds its
    # /dev/shm region), and a router instance holds a request until its slowest class answers:
    # requests queued behind it wait that long before they are shed.
    assert requests_per_execute(configs[LENGTH_ROUTER]) == 1
    assert _timeout_s(configs[LENGTH_ROUTER]) == max(timeouts.values())
    if max_length >= 4096:  # where the measured failure was: the long class waits far longer
        assert timeouts[classes[-1].model] > 10 * timeouts[first.model]


def test_only_a_queue_without_delay_and_preferred_size_one_holds_one_request_per_execute():
    """shm_budget's bound rests on this reading of core r24.10 GetDynamicBatch: a preferred size
    caps a batch only while no queue delay has passed, so the same preferred size with a delay (or
    none at all) counts as max_batch_size requests."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = all_configs(RepositorySpec())[LENGTH_ROUTER]
    assert requests_per_execute(config) == 1
    delayed = mc.ModelConfig()
    delayed.CopyFrom(config)
    delayed.dynamic_batching.max_queue_delay_microseconds = 200
    assert requests_per_execute(delayed) == config.max_batch_size
    no_preference = mc.ModelConfig()
    no_preference.CopyFrom(config)
    del no_preference.dynamic_batching.preferred_batch_size[:]
    assert requests_per_execute(no_preference) == config.max_batch_size
    no_batcher = mc.ModelConfig()
    no_batcher.CopyFrom(config)
    no_batcher.ClearField("dynamic_batching")
    assert requests_per_execute(no_batcher) == 1
