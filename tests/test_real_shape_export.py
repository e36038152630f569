"""Opt-in (make test-slow): export a model of the real geometry - 24 x 1024, vocab 250002,
568M parameters, 2.27 GB in fp32 - proving the external-data path and the memory figure."""

from __future__ import annotations

import json

import pytest

from common import standin_model
from export.__main__ import main as export_main


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_shape_export(tmp_path_factory, precision):
    model_dir = tmp_path_factory.getbasetemp() / "real-shape-model"
    if not (model_dir / "model.safetensors").exists():
        standin_model.build(model_dir, "real")
    repo = tmp_path_factory.mktemp("real") / "repo"
    assert (
        export_main(["--model", str(model_dir), "--repo", str(repo), "--backend", "python", "--precision", precision])
        == 0
    )
    served = repo / "cross_encoder" / "1" / "model.onnx"
    manifest = json.loads((repo / "manifest.json").read_text())
    gates = json.loads((repo / "cross_encoder" / "parity.json").read_text())["gates"]
    assert all(g["passed"] for g in gates.values())
    assert 560e6 < manifest["model"]["parameters"] < 580e6
    peak = max(stage["peak_rss_mib"] for stage in manifest["stages"])
    if precision == "fp32":
        data = served.with_name("model.onnx.data")
        assert data.exists() and data.stat().st_size > 2.0e9  # weights beside the graph, one file
        assert served.stat().st_size < 50e6
    else:
        assert served.stat().st_size < 1.3e9 and not served.with_name("model.onnx.data").exists()
    print(
        f"\nreal shape {precision}: peak RSS {peak:.0f} MiB (largest process); stages "
        + ", ".join(f"{s['stage']} {s['seconds']}s" for s in manifest["stages"])
    )
    for name, gate in gates.items():
        print(f"gate {name}: max|d logit| {gate['max_abs_logit']:.3g}, max|d score| {gate['max_abs_score']:.3g}")
    if manifest["fp16"]:
        print("fp16 tries:", json.dumps(manifest["fp16"]["attempts"]))
