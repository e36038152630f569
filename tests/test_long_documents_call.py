"""Issue 29 item 4, end to end: the window-mode call that one caller used to overload an idle
server with (`[~84 KB, ~42 KB, short]` at max_length 4,096: OverloadedError "Request timeout
expired") completes with the client's default settings on CPU, and its time is printed. Slow: a
4,096 repository and its own tritonserver. The mechanism (per-class queue timeouts) is checked
in the default suite by tests/test_queue_timeouts.py; `python -m benchmarks.window_call` times
the call at 512, 4,096 and 8,192."""

from __future__ import annotations

import time

import pytest

from benchmarks.window_call import QUERY, documents
from common.long_context_repo import serve_at
from reranker_client import RerankClient
from tests.conftest import start_server


@pytest.mark.slow
def test_the_4096_window_mode_call_completes_on_an_idle_server(python_repo, tiny_model, tmp_path):
    repo = serve_at(python_repo, tiny_model, tmp_path / "repo-4096", 4096)
    server = start_server(repo, tmp_path)
    try:
        with RerankClient(server.grpc_url) as client:  # default settings: 30 s deadline, 4 in flight
            started = time.monotonic()
            results = client.rerank(QUERY, documents(), long_documents="window")
            seconds = time.monotonic() - started
    finally:
        server.stop()
    windows = [r.windows for r in sorted(results, key=lambda r: r.index)]
    print(f"\n[window call at max_length 4096] {seconds:.2f} s, windows per document {windows}")
    assert len(results) == 3 and windows[0] > windows[1] > windows[2] == 1
