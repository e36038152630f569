"""benchmarks/interleave.py: round-robin trials in a random order per trial, paired ratios with
bootstrap intervals, verdicts only where the interval excludes 1, and /proc/stat shares."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import interleave


def test_every_trial_runs_every_system_once_in_a_fresh_order():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name) or {"units": 1}) for name in "abcd"}
    trials = interleave.run_interleaved(runners, trials=30, seed=3)
    assert len(trials) == 30 and len(calls) == 120
    for i, trial in enumerate(trials):
        assert sorted(trial.order) == list("abcd")
        assert calls[4 * i : 4 * i + 4] == trial.order  # run in the order recorded
        for result in trial.results.values():
            assert result["seconds"] > 0 and {"idle", "steal", "load_1m", "units"} <= result.keys()
    orders = {tuple(t.order) for t in trials}
    assert len(orders) > 5  # shuffled per trial, not one fixed order
    assert {t.order[0] for t in trials} == set("abcd")  # every system sometimes runs first
    assert [t.order for t in interleave.run_interleaved(runners, 30, seed=3)] == [t.order for t in trials]


def test_paired_ratio_cancels_load_that_both_systems_saw():
    """Trial-to-trial load moves both systems together: their ranges overlap, yet every paired
    ratio is ~1.1, so the interval is tight and above 1."""
    rng = np.random.default_rng(0)
    load = rng.uniform(0.4, 1.0, size=12)
    theirs = 10 * load
    ours = 1.1 * theirs * rng.uniform(0.99, 1.01, size=12)
    assert ours.min() < theirs.max()  # an unpaired min-max comparison could not tell
    ratio = interleave.paired_ratio(list(ours), list(theirs))
    assert 1.05 < ratio.low <= ratio.point <= ratio.high < 1.15
    assert ratio.verdict == "faster"
    assert interleave.paired_ratio(list(theirs), list(ours)).verdict == "slower"


def test_no_verdict_where_the_interval_holds_one():
    rng = np.random.default_rng(1)
    a = list(rng.uniform(0.8, 1.2, size=10))
    b = list(rng.uniform(0.8, 1.2, size=10))
    ratio = interleave.paired_ratio(a, b)
    assert ratio.low < 1 < ratio.high and ratio.verdict == "not separated"
    assert ratio.as_dict()["verdict"] == "not separated" and ratio.as_dict()["trials"] == 10
    assert interleave.verdict(1.01, 1.2) == "faster" and interleave.verdict(0.8, 0.99) == "slower"
    assert interleave.verdict(0.99, 1.01) == "not separated"
    with pytest.raises(ValueError, match="equal, non-empty"):
        interleave.paired_ratio([1.0, 2.0], [1.0])


def test_bootstrap_interval_covers_the_median_and_narrows_with_trials():
    rng = np.random.default_rng(2)
    few, many = rng.normal(5, 1, size=6), rng.normal(5, 1, size=200)
    low_few, high_few = interleave.bootstrap_median(few)
    low_many, high_many = interleave.bootstrap_median(many)
    assert low_few <= np.median(few) <= high_few and low_many <= np.median(many) <= high_many
    assert high_many - low_many < high_few - low_few


def test_idle_and_steal_shares_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n")
    before = interleave.read_proc_stat(str(stat))
    stat.write_text("cpu  200 0 100 900 50 0 0 50 0 0\n")
    after = interleave.read_proc_stat(str(stat))
    # 300 ticks: 150 busy, 100 idle, 50 stolen by the hypervisor.
    assert interleave.cpu_share(before, after) == {"idle": pytest.approx(1 / 3, abs=1e-4), "steal": 0.1667}
    assert interleave.cpu_share({}, after) == {"idle": None, "steal": None}
    assert interleave.read_proc_stat(str(tmp_path / "missing")) == {}
    facts = interleave.cpu_facts()
    assert facts["cores"] and "cpu_mhz_max" in facts
