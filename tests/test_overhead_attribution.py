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


def test_the_fixed_cost_by_request_size_is_served_minus_the_same_runs_per_trial():
    """benchmarks/overhead_by_request_size.py: per trial, ms per request = passages / pairs per second;
    the fixed cost is served minus the same runs in process (the split's padding saving left out)."""
    from benchmarks.overhead_by_request_size import summarise
    from benchmarks.serving_overhead import IN_PROCESS, IN_PROCESS_PARTS, SERVED

    # 8 passages per request; served 400 pairs/s = 20 ms, same runs 500 = 16 ms, one run 320 = 25 ms.
    trials = [
        {
            SERVED: {"pairs_per_s": 400.0 * k},
            IN_PROCESS_PARTS: {"pairs_per_s": 500.0 * k},
            IN_PROCESS: {"pairs_per_s": 320.0 * k},
        }
        for k in (1.0, 1.0, 1.0)
    ]
    ratio = {"ratio": 1.25, "ci95": [1.2, 1.3], "trials": 3, "verdict": "faster"}
    row = summarise(
        {
            "passages_per_request": 8,
            "trials": trials,
            "ratio_served_over_in_process": ratio,
            "ratio_served_over_in_process_same_runs": {**ratio, "ratio": 0.8},
            "cross_encoder_runs_per_request": 1.0,
        }
    )
    assert row["passages_per_request"] == 8
    assert (row["served_ms_per_request"], row["same_runs_in_process_ms_per_request"]) == (20.0, 16.0)
    assert row["in_process_ms_per_request"] == 25.0
    assert row["fixed_cost_ms"] == 4.0 and row["fixed_cost_ms_ci95"] == [4.0, 4.0]
    assert row["work_needed_for_target_ms"] == 76.0  # 0.95 = w / (w + 4)  <=>  w = 19 x 4
