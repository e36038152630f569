"""Helpers for tests against the real server: its metrics, and a bad call beside a good one.
The bare `rerank` call itself is common/raw_rerank.py (a benchmark uses it too)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

from local_triton.server import TritonServer, server_environment

ROOT = Path(__file__).resolve().parent.parent


def metric(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def counter_flush_s() -> float:
    """How often the models' own counters (reranker_*_total) are sent: they lag traffic by ~this."""
    from common.serving_code import deferred_counters_module

    return float(deferred_counters_module().FLUSH_S)


def settle_counters() -> None:
    """Wait until what earlier requests counted has been sent, so a `before` reading is final."""
    time.sleep(2.5 * counter_flush_s())


def counted(read: Callable[[], float], expected: float, timeout: float | None = None) -> float:
    """`read()` once it equals `expected`, or its last value when `timeout` (default 5 flushes) runs
    out: the models send their counters once every counter_flush_s(), off the request path."""
    deadline = time.monotonic() + (5 * counter_flush_s() if timeout is None else timeout)
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


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


def start_launcher(server: TritonServer, *args: str) -> subprocess.Popen[str]:
    """docker/serve.py, the image's command, with `args`, around `server`'s tritonserver command
    line; its output piped, for `wait_while_running` to show when a wait fails."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "serve.py"), *args, "--", *server.command()],
        env=server_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_while_running(proc: subprocess.Popen[str], done: Callable[[], bool], timeout: float = 240) -> None:
    """Poll `done` until it holds; fail with the launcher's output if it exits first or the time
    runs out."""
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.25)
