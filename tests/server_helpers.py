"""Helpers for tests against the real server: its metrics, and a bad call beside a good one.
The bare `rerank` call itself is common/raw_rerank.py (a benchmark uses it too)."""

from __future__ import annotations

import re
import urllib.request


def metric(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def bad_and_good_together(bad_call, good_call, timeout: float = 60):
    """Start a failing call and a valid one at the same moment; return (error text, good result).
    Shows that a bad request fails alone while another is in flight."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tritonclient.utils import InferenceServerException

    barrier = threading.Barrier(2)

    def bad():
        barrier.wait()
        try:
            bad_call()
        except InferenceServerException as err:
            return str(err)
        raise AssertionError("the bad request was accepted")

    def good():
        barrier.wait()
        return good_call()

    with ThreadPoolExecutor(2) as pool:
        bad_future, good_future = pool.submit(bad), pool.submit(good)
        return bad_future.result(timeout=timeout), good_future.result(timeout=timeout)
