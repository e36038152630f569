"""The models' own counters are sent off the request path (model_repository/tokenizer/1/
deferred_counters.py): `add` makes no metric call (each is a synchronous round trip to the
server process), a background thread sends the sums, `close` sends the rest, and a failed send
loses nothing. The real stub's flusher is exercised against the real server by
tests/test_monitoring.py and tests/test_routing_cost.py (counters reach their exact values)."""

from __future__ import annotations

import threading
import time

import pytest

from common.serving_code import deferred_counters_module


class RecordingMetric:
    """What pb_utils' Metric offers a counter: increment(value); records each call and its thread."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[float, str]] = []
        self.fail_first = fail_first

    def increment(self, value: float) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("Failed to increment metric value: stub is shutting down")
        self.calls.append((value, threading.current_thread().name))

    @property
    def total(self) -> float:
        return sum(v for v, _ in self.calls)


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_add_makes_no_metric_call_and_the_flusher_sends_the_sum_once():
    module = deferred_counters_module()
    metric = RecordingMetric()
    counters = module.DeferredCounters({"runs": metric}, flush_s=0.2)
    try:
        for _ in range(50):
            counters.add("runs", 3)
        assert metric.calls == []  # nothing on the caller's path
        assert wait_until(lambda: metric.total == 150)
        assert len(metric.calls) == 1  # one round trip for 50 adds
        assert metric.calls[0][1] == "deferred-counters"  # sent by the flusher, not the caller
        time.sleep(0.5)
        assert len(metric.calls) == 1  # nothing moved: no call with zero
    finally:
        counters.close()


def test_close_sends_what_is_left_and_stops_the_flusher():
    module = deferred_counters_module()
    useful, padded = RecordingMetric(), RecordingMetric()
    counters = module.DeferredCounters({"useful": useful, "padded": padded}, flush_s=3600)
    counters.add("useful", 5)
    counters.add("padded", 8)
    counters.add("useful", 2)
    assert useful.calls == [] and padded.calls == []
    counters.close()
    assert (useful.total, padded.total) == (7, 8)
    assert not counters._thread.is_alive()


def test_a_failed_send_keeps_its_count_for_the_next_flush():
    module = deferred_counters_module()
    logged: list[str] = []
    metric = RecordingMetric(fail_first=1)
    counters = module.DeferredCounters({"pairs": metric}, flush_s=3600, log=logged.append)
    counters.add("pairs", 4)
    counters.flush()  # fails: kept
    assert metric.calls == [] and "pairs" in logged[0]
    counters.add("pairs", 1)
    counters.close()
    assert metric.total == 5


def test_adds_from_several_threads_are_all_counted():
    module = deferred_counters_module()
    metric = RecordingMetric()
    counters = module.DeferredCounters({"tokens": metric}, flush_s=0.01)

    def work():
        for _ in range(2000):
            counters.add("tokens", 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counters.close()
    assert metric.total == 8000


def test_an_unknown_counter_is_refused_at_the_add():
    module = deferred_counters_module()
    counters = module.DeferredCounters({"runs": RecordingMetric()}, flush_s=3600)
    try:
        with pytest.raises(KeyError):
            counters.add("rnus", 1)
    finally:
        counters.close()
