"""benchmarks/overhead_attribution.py: per-request deltas of Triton's statistics (no server)."""

from __future__ import annotations

from benchmarks.overhead_attribution import delta_ms


def test_a_request_is_attributed_only_to_the_models_that_served_it():
    before = {
        "tokenizer": {"success": 1e6, "queue": 0.0, "executions": 3.0},
        "length_router": {"success": 5e6, "queue": 1e5, "executions": 2.0},
    }
    after = {
        "tokenizer": {"success": 3.5e6, "queue": 2e5, "executions": 4.0},
        "length_router": {"success": 5e6, "queue": 1e5, "executions": 2.0},  # not on this path
        "rerank": {"success": 9e6, "queue": 1e3, "executions": 1.0},  # first request: absent before
    }
    rows = delta_ms(before, after)
    assert rows == {
        "tokenizer": {"success": 2.5, "queue": 0.2, "executions": 1.0},
        "rerank": {"success": 9.0, "queue": 0.001, "executions": 1.0},
    }
