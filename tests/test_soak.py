"""Soak with perf_analyzer: no errors, and server memory (tritonserver plus its Python stubs)
grows < 10% after warm-up. `make test` runs a short soak (500 warm-up + 3,000 requests, under a
minute on 2 cores); `make test-slow` runs the long one (3,000 + 20,000), where a slow leak has the
time to show."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.settings import DEFAULT_MAX_LENGTH
from loadtest.perf_analyzer import run, write_input_data
from tests.conftest import start_server
from tests.server_helpers import metric


def process_tree_rss_mib(pid: int) -> float:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in (Path("/proc") / str(current) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        stack += children.get(current, [])
    return total / 1024


@pytest.mark.parametrize(
    ("warm_up", "requests"),
    [pytest.param(500, 3000, id="short"), pytest.param(3000, 20000, id="20k", marks=pytest.mark.slow)],
)
def test_soak_no_errors_bounded_memory(python_repo, tmp_path, warm_up, requests):
    srv = start_server(python_repo, tmp_path)
    try:
        data = tmp_path / "input.json"
        write_input_data(data, str(python_repo / "tokenizer" / "1" / "tokenizer.json"), DEFAULT_MAX_LENGTH, entries=256)
        warm = run(
            srv.grpc_url, data, tmp_path / "warm.csv", batch=1, concurrency=[4], extra=["--request-count", str(warm_up)]
        )
        assert warm.returncode == 0, warm.stdout[-2000:]
        before = process_tree_rss_mib(srv.process.pid)
        ok0 = metric(srv.metrics_url, "nv_inference_request_success", "rerank")
        fail0 = metric(srv.metrics_url, "nv_inference_request_failure", "rerank")
        soak = run(
            srv.grpc_url,
            data,
            tmp_path / "soak.csv",
            batch=1,
            concurrency=[4],
            extra=["--request-count", str(requests)],
        )
        assert soak.returncode == 0, soak.stdout[-2000:]
        after = process_tree_rss_mib(srv.process.pid)
        succeeded = metric(srv.metrics_url, "nv_inference_request_success", "rerank") - ok0
        failed = metric(srv.metrics_url, "nv_inference_request_failure", "rerank") - fail0
        growth = (after - before) / before
        print(
            f"\nsoak: {succeeded:.0f} requests succeeded, {failed:.0f} failed; server RSS "
            f"{before:.0f} MiB after warm-up -> {after:.0f} MiB ({growth:+.1%})"
        )
        assert succeeded >= requests and failed == 0
        assert growth < 0.10
        assert srv.is_ready()
    finally:
        srv.stop()
