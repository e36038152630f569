"""Issue 25 item 8 end to end through `python -m export --backend tensorrt`, with TensorRT stubbed
at its API boundary only (builder, parser, runtime: tests/test_tensorrt_build.fake_tensorrt) and
the built plans answered by ONNX Runtime on the very graph the builder was given (what a correct
plan answers), shifted while too little is pinned to fp32. The pipeline, the pins, the escalation,
the certificate gate and the repository writing are the real ones."""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager

import onnx
import pytest

from export import pipeline, plan_certification
from export.__main__ import main as export_main
from export.parity import onnx_runner
from tests.test_tensorrt_build import _Recorder, fake_tensorrt


@pytest.fixture
def stub_tensorrt(monkeypatch, tmp_path):
    """Install the stand-in `tensorrt` module; returns the list of ONNX files it parsed and the
    plan-runner switch (shift per try)."""
    state = {"parsed": [], "shift_for": lambda k: 0.0, "tries": 0}

    recorder = _Recorder()

    def make(path):
        """Layer names = the node names of the graph given to parse_from_file (the ONNX parser
        names a node's first layer after it)."""
        names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
        return fake_tensorrt(recorder, names)

    trt = fake_tensorrt(recorder, [])
    base_builder = trt.Builder

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            state["parsed"].append(path)
            real = make(path).Builder(None).create_network(0)
            self.network.__class__ = type(real)  # the parsed network's layers
            return True

    trt.OnnxParser = Parser
    trt.Builder = base_builder
    trt.__version__ = "10.5.0"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    # the stub is `tensorrt` in sys.modules: export/trt_import.py load_tensorrt() finds it
    monkeypatch.setenv("TRT_CACHE_DIR", str(tmp_path / "trt-cache"))

    @contextmanager
    def runner(plans):
        run = onnx_runner(pipeline.ort_session(state["parsed"][-1]))
        offset = state["shift_for"](state["tries"])
        state["tries"] += 1
        yield lambda ids, mask: run(ids, mask) + offset

    monkeypatch.setattr(plan_certification, "polygraphy_runner", runner)
    state["recorder"] = recorder
    return state


# Two tiny exports (~1 min each on 2 cores): make test-slow.
pytestmark = pytest.mark.slow

ARGS = ["--backend", "tensorrt", "--precision", "fp16", "--max-length", "2048"]


def test_plan_export_escalates_and_installs_every_class_plan(tiny_model, tmp_path, stub_tensorrt):
    stub_tensorrt["shift_for"] = lambda k: 0.3 if k == 0 else 0.0  # try 0 misses, try 1 passes
    repo = tmp_path / "repo"
    assert export_main(["--model", str(tiny_model), "--repo", str(repo), *ARGS]) == 0
    for model in ("cross_encoder", "cross_encoder_2048"):
        assert (repo / model / "1" / "model.plan").read_bytes() == b"PLAN"
    plan = json.loads((repo / "manifest.json").read_text())["tensorrt_plan"]
    assert [(a["level"], a["passed"]) for a in plan["attempts"]] == [(0, False), (1, True)]
    assert "Softmax" in plan["attempts"][1]["fp32_ops"] and "Softmax" not in plan["attempts"][0]["fp32_ops"]
    assert [m["model"] for m in plan["memory"]] == ["cross_encoder", "cross_encoder_2048"]
    assert all(m["measured"] and m["context_bytes"] == 1 << 20 for m in plan["memory"])


def test_plan_export_that_fails_every_try_leaves_the_old_repository(
    tiny_model, python_repo, tmp_path, stub_tensorrt, capsys
):
    stub_tensorrt["shift_for"] = lambda k: 0.3
    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    assert export_main(["--model", str(tiny_model), "--repo", str(repo), *ARGS]) == 1
    err = capsys.readouterr().err
    assert "no plan passed" in err and "level 0" in err and "level 2" in err and "--precision fp32" in err
    assert stub_tensorrt["tries"] == 3
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
