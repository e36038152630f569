"""Soak: 20,000 requests with perf_analyzer; no errors, and server memory (tritonserver plus
its Python stubs) grows < 10% after warm-up."""

from __future__ import annotations

from pathlib import Path

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


def test_soak_20k_requests_no_errors_bounded_memory(python_repo, tmp_path):
    srv = start_server(python_repo, tmp_path)
    try:
        data = tmp_path / "input.json"
        write_input_data(data, str(python_repo / "tokenizer" / "1" / "tokenizer.json"), DEFAULT_MAX_LENGTH, entries=256)
        warm = run(
            srv.grpc_url, data, tmp_path / "warm.csv", batch=1, concurrency=[4], extra=["--request-count", "3000"]
        )
        assert warm.returncode == 0, warm.stdout[-2000:]
        before = process_tree_rss_mib(srv.process.pid)
        ok0 = metric(srv.metrics_url, "nv_inference_request_success", "rerank")
        fail0 = metric(srv.metrics_url, "nv_inference_request_failure", "rerank")
        soak = run(
            srv.grpc_url, data, tmp_path / "soak.csv", batch=1, concurrency=[4], extra=["--request-count", "20000"]
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
        assert succeeded >= 20000 and failed == 0
        assert growth < 0.10
        assert srv.is_ready()
    finally:
        srv.stop()
