"""Load-test tooling: the workload's length mix, `make perf`'s outputs, the GPU probe's CPU
smoke mode, and the benchmark's padding arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.machine import flops_per_pair
from benchmarks.systems import padded_tokens
from export.settings import ServingLimits
from loadtest.fixed_length import pairs_of_length
from loadtest.perf_analyzer import main as perf_main
from loadtest.workload import make_pairs

ROOT = Path(__file__).resolve().parent.parent


def test_workload_follows_the_documented_length_mix(python_repo):
    tokenizer = str(python_repo / "tokenizer" / "1" / "tokenizer.json")
    max_length = ServingLimits().max_length
    pairs = make_pairs(tokenizer, 600, max_length=max_length, seed=1)
    tokens = np.array([p.passage_tokens for p in pairs])
    assert 0.5 < np.mean((tokens >= 35) & (tokens <= 155)) < 0.7
    assert 0.2 < np.mean((tokens > 155) & (tokens <= 305)) < 0.4
    assert 0.01 < np.mean(tokens > max_length) < 0.07
    assert len({p.query for p in pairs}) >= 10


def test_fixed_length_pairs(python_repo):
    from tokenizers import Tokenizer

    tokenizer_json = str(python_repo / "tokenizer" / "1" / "tokenizer.json")
    tok = Tokenizer.from_file(tokenizer_json)
    for query, passage in pairs_of_length(tokenizer_json, 256, count=8):
        total = (
            len(tok.encode(query, add_special_tokens=False).ids)
            + len(tok.encode(passage, add_special_tokens=False).ids)
            + 4
        )
        assert abs(total - 256) <= 8


def test_make_perf_writes_csv_table_and_plot(python_repo, tmp_path):
    out = tmp_path / "perf"
    assert (
        perf_main(
            [
                "--repo",
                str(python_repo),
                "--concurrency",
                "1,2",
                "--window-requests",
                "32",
                "--stability",
                "200",
                "--batch",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "perf.json").read_text())
    assert [r["concurrency"] for r in report["rows"]] == [1, 2]
    assert all(r["pairs_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in report["rows"])
    assert (out / "perf.png").stat().st_size > 10_000 and "| 2 |" in (out / "perf.md").read_text()
    assert (out / "perf_c1.csv").exists()


def test_gpu_probe_runs_in_cpu_smoke_mode(tmp_path):
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/gpu_probe.py",
            "--device",
            "cpu",
            "--layers",
            "1",
            "--hidden",
            "64",
            "--lengths",
            "16,32",
            "--batches",
            "1,2",
            "--seconds",
            "0.2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(r["pairs_per_s"] > 0 for r in rows)


def test_flops_formula_matches_the_published_one():
    for n in (256, 512, 1024):
        assert flops_per_pair(n, 24, 1024) == 24 * (24 * 1024**2 * n + 4 * 1024 * n**2)
        assert abs(flops_per_pair(n, 24, 1024) - (0.604e9 * n + 98304 * n**2)) / flops_per_pair(n, 24, 1024) < 0.001


def test_padding_arithmetic():
    assert padded_tokens([10, 20, 30, 40], batch=2) == 2 * 20 + 2 * 40
    assert padded_tokens([10, 20, 30, 40], batch=4, buckets=[16, 32, 48]) == 4 * 48
