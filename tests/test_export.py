"""`python -m export` end to end on a stand-in model: gates, repository layout, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from common.pair_tokenizer import load_pair_tokenizer
from export import certificate, parity
from export.__main__ import main as export_main
from export.model_loading import load_torch_model, resolve
from export.onnx_export import INPUT_NAMES, export_onnx
from export.pipeline import ort_session
from export.settings import ServingLimits

ROOT = Path(__file__).resolve().parent.parent


def _gate(repo: Path) -> dict:
    return json.loads((repo / "cross_encoder" / "parity.json").read_text())


def test_fp32_export_passes_gate_and_documents_it(python_repo):
    doc = _gate(python_repo)
    gate = doc["gates"]["fp32"]
    floor = doc["noise_floor"]["torch_fp32_alone_vs_batched_max_abs_logit"]
    # The bound is calibrated on PyTorch's own batching noise, never below 1e-4.
    assert gate["thresholds"]["max_abs_logit"] == max(1e-4, 10 * floor) > 0
    assert gate["passed"] and gate["max_abs_logit"] <= gate["thresholds"]["max_abs_logit"]
    assert gate["served"] == "served" and "ONNX Runtime CPU" in gate["artifact"]
    assert gate["truncated_pairs"] >= 2 and gate["token_lengths"]["max"] == ServingLimits().max_length
    assert gate["token_lengths"]["min"] <= 16 and gate["top10_same_set"] and gate["non_finite"] == 0
    assert set(doc["versions"]) >= {"torch", "onnxruntime", "transformers"}
    assert len(doc["source"]["files_sha256"]["model.safetensors"]) == 64
    assert doc["export_args"]["backend"] == "python"
    manifest = json.loads((python_repo / "manifest.json").read_text())
    assert [s["stage"] for s in manifest["stages"]][:5] == [
        "resolve",
        "load",
        "onnx_fp32",
        "certificate",
        "parity_fp32",
    ]
    assert manifest["served"]["file"] == "cross_encoder/1/model.onnx"
    assert "export gate fp32" in manifest["served"]["certified_by"]
    for path in (
        "tokenizer/1/tokenizer.json",
        "tokenizer/1/model.py",
        "tokenizer/1/pair_tokenization.py",
        "tokenizer/1/padding_metrics.py",
        "tokenizer/1/deferred_counters.py",
        "cross_encoder/1/model.onnx",
        "cross_encoder/1/model.py",
        "cross_encoder/1/deferred_counters.py",
        "rerank/config.pbtxt",
        "certificate.json",
    ):
        assert (python_repo / path).exists(), path


def test_fp16_export_passes_gate_with_fused_fp16_graph(fp16_repo):
    gate = _gate(fp16_repo)["gates"]
    assert gate["fp32"]["passed"] and gate["fp16"]["passed"]
    assert 0 < gate["fp16"]["max_abs_logit"] <= 0.1 and gate["fp16"]["max_abs_score"] <= 1e-2
    assert gate["fp16"]["served"] == "served" and gate["fp32"]["served"].startswith("proxy")
    graph = onnx.load(str(fp16_repo / "cross_encoder" / "1" / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    weights = {t.data_type for t in graph.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in weights
    io_types = {v.type.tensor_type.elem_type for v in list(graph.graph.input) + list(graph.graph.output)}
    assert io_types == {onnx.TensorProto.INT64, onnx.TensorProto.FLOAT}
    manifest = json.loads((fp16_repo / "manifest.json").read_text())
    assert "SkipLayerNormalization" in manifest["fp16"]["kept_fp32_ops"]
    # Gated on the held-out certificate: the last try passed, every earlier one failed.
    attempts = [a["passed"] for a in manifest["fp16"]["attempts"]]
    assert attempts[-1] and not any(attempts[:-1])


def test_fp16_gate_failure_escalates_then_fails_naming_every_try(tiny_model, tmp_path, monkeypatch, capsys):
    """A gate no fp16 graph can pass: the export converts again with Attention in fp32, gates
    that too, then fails with both tries in the message and writes no repository."""
    from export import certificate
    from export.fp16_conversion import FP32_ESCALATION

    monkeypatch.setattr(
        certificate,
        "FP16",
        certificate.Thresholds(max_abs_logit=1e-9, max_abs_score=1e-9, tie_logit=1e-9, min_kendall_tau=0.95),
    )
    repo = tmp_path / "repo"
    assert (
        export_main(["--model", str(tiny_model), "--repo", str(repo), "--backend", "python", "--precision", "fp16"])
        == 1
    )
    out, err = capsys.readouterr()
    assert "converting again with Attention kept in fp32" in out
    assert out.count("parity fp16: FAIL") == len(FP32_ESCALATION) == 2
    assert "[LayerNormalization, SkipLayerNormalization, Softmax, Attention] in fp32" in err
    assert "--precision fp32" in err and not repo.exists()


def test_gate_catches_an_export_that_ignores_the_attention_mask(tiny_model, tmp_path):
    """Negative control: the gate must fail a subtly broken graph."""
    import torch

    source = resolve(str(tiny_model))
    model = load_torch_model(source)

    class IgnoresMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            logit = self.model(input_ids=input_ids, attention_mask=torch.ones_like(attention_mask)).logits
            return logit, torch.sigmoid(logit)

    path = export_onnx(model, tmp_path / "broken.onnx", ServingLimits().max_length, graph_module=IgnoresMask().eval())
    tokenizer = load_pair_tokenizer(tiny_model, ServingLimits())
    fixture = certificate.build(tokenizer, parity.torch_runner(model), model={}, served={})
    result = parity.run_gate("fp32", fixture, parity.onnx_runner(ort_session(path)))
    assert not result.passed
    assert any("max |d logit|" in f for f in result.failures)
    # The calibrated bound stays far below what a broken mask costs.
    assert result.max_abs_logit > 100 * result.thresholds["max_abs_logit"]


def test_failed_gate_leaves_existing_repository_untouched(tiny_model, python_repo, tmp_path, monkeypatch):
    import torch

    from export import pipeline

    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    def broken_export(model, out_path, max_length, graph_module=None):
        class Halved(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                logit = self.model(input_ids=input_ids, attention_mask=attention_mask).logits * 0.5
                return logit, torch.sigmoid(logit)

        return export_onnx(model, out_path, max_length, graph_module=Halved().eval())

    monkeypatch.setattr(pipeline, "export_onnx", broken_export)
    assert (
        export_main(["--model", str(tiny_model), "--repo", str(repo), "--backend", "python", "--precision", "fp32"])
        == 1
    )
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo.")]


def test_tensorrt_backend_writes_onnx_and_build_script(tiny_model, tmp_path):
    repo = tmp_path / "trt"
    assert (
        export_main(
            [
                "--model",
                str(tiny_model),
                "--repo",
                str(repo),
                "--backend",
                "tensorrt",
                "--precision",
                "fp16",
                "--max-length",
                "2048",
                "--plan-later",  # no TensorRT here: the plans are build_plan.sh's on the GPU host
            ]
        )
        == 0
    )
    script = (repo / "cross_encoder" / "tensorrt" / "build_tries.sh").read_text()
    assert "bash" in (repo / "cross_encoder" / "tensorrt" / "build_plan.sh").read_text()
    # max_length 2,048: two length classes, one plan each with one profile (64 x 512, 16 x 2,048);
    # each class model lists that plan's only profile.
    assert "trtexec" in script and "--fp16" in script and "16x2048" in script and "64x512" in script
    assert 'profile: "0"' in (repo / "cross_encoder_2048" / "config.pbtxt").read_text()
    # No plan without TensorRT here: no empty version folder that would look served (item 8).
    assert not (repo / "cross_encoder" / "1").exists() and not (repo / "cross_encoder_2048" / "1").exists()
    assert (repo / "cross_encoder" / "tensorrt" / "model.onnx").exists()
    assert 'platform: "tensorrt_plan"' in (repo / "cross_encoder" / "config.pbtxt").read_text()
    assert subprocess.run(["bash", "-n", str(repo / "cross_encoder" / "tensorrt" / "build_plan.sh")]).returncode == 0
    manifest = json.loads((repo / "manifest.json").read_text())
    # fp16 plan: the normalisations of the plain graph are pinned to fp32 by name at the first try,
    # Softmax at the second (escalation); no ONNX Runtime fp16 conversion ran.
    pinned = manifest["tensorrt_fp32_layers"]
    graph = onnx.load(str(repo / "cross_encoder" / "tensorrt" / "model.onnx"))
    norms = {n.name for n in graph.graph.node if n.op_type == "LayerNormalization"}
    softmax = {n.name for n in graph.graph.node if n.op_type == "Softmax"}
    assert norms and norms <= set(pinned) and "--layerPrecisions=" in script
    first_try = script.split("try_1()")[0]
    assert softmax and not any(f"{name}:fp32" in first_try for name in softmax - set(pinned))
    assert all(f"{name}:fp32" in script.split("try_1()")[1] for name in softmax)
    plan = manifest["tensorrt_plan"]
    assert plan["design"].startswith("one plan per length class")
    assert [m["model"] for m in plan["memory_estimate"]] == ["cross_encoder", "cross_encoder_2048"]
    assert manifest["fp16"] is None and "fp16" not in _gate(repo)["gates"]
    assert manifest["served"]["file"] == "cross_encoder/1/model.plan"
    assert "plan build" in manifest["served"]["certified_by"]
    assert _gate(repo)["gates"]["fp32"]["served"].startswith("proxy")


def test_fp32_precision_builds_no_fp16_anything(tiny_model, tmp_path):
    for backend in ("tensorrt", "onnxruntime"):
        repo = tmp_path / backend
        # No TensorRT here: the plans are build_plan.sh's on the GPU host (an explicit opt-in).
        later = ["--plan-later"] if backend == "tensorrt" else []
        args = ["--model", str(tiny_model), "--repo", str(repo), "--backend", backend, "--precision", "fp32", *later]
        assert export_main(args) == 0
        manifest = json.loads((repo / "manifest.json").read_text())
        assert manifest["fp16"] is None and manifest["tensorrt_fp32_layers"] == []
        assert list(_gate(repo)["gates"]) == ["fp32"]
    script = (tmp_path / "tensorrt" / "cross_encoder" / "tensorrt" / "build_tries.sh").read_text()
    assert "--fp16" not in script and "layerPrecisions" not in script and "--precision fp32" in script
    config = (tmp_path / "onnxruntime" / "cross_encoder" / "config.pbtxt").read_text()
    assert 'value: "FP32"' in config and "FP16" not in config


def test_exported_graph_has_no_cumsum_and_no_square_mask(python_repo, tmp_path):
    """TensorRT 10.5 runs CumSum as a sequential loop, and a [B, 1, S, S] mask costs GiBs at 8k tokens:
    the graph computes position ids without CumSum and broadcasts a [B, 1, 1, S] mask. Checked on
    every intermediate tensor of a real run, not only on op names."""
    import numpy as np
    import onnxruntime as ort

    path = python_repo / "cross_encoder" / "1" / "model.onnx"
    graph = onnx.load(str(path))
    assert "CumSum" not in {n.op_type for n in graph.graph.node}
    for node in graph.graph.node:
        for name in node.output:
            graph.graph.output.append(onnx.ValueInfoProto(name=name))
    probe = tmp_path / "probe.onnx"
    onnx.save(graph, str(probe))
    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    batch, length = 3, 24
    ids = np.full((batch, length), 5, dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    ids[1, 10:] = 1
    names = [o.name for o in session.get_outputs()]
    shapes = {
        name: value.shape for name, value in zip(names, session.run(names, {"input_ids": ids, "attention_mask": mask}))
    }
    assert (batch, 1, length, length) not in shapes.values()
    assert (batch, 1, 1, length) in shapes.values()


def test_onnxruntime_backend_serves_plain_graph_tensorrt_can_parse(tiny_model, tmp_path):
    import numpy as np

    repo = tmp_path / "ort"
    assert export_main(["--model", str(tiny_model), "--repo", str(repo)]) == 0
    graph = onnx.load(str(repo / "cross_encoder" / "1" / "model.onnx"))
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)  # no com.microsoft ops
    assert graph.opset_import[0].version >= 17
    assert [i.name for i in graph.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.graph.output] == ["logit", "score"]
    config = (repo / "cross_encoder" / "config.pbtxt").read_text()
    assert 'name: "tensorrt"' in config and "trt_layer_norm_fp32_fallback" in config
    # fp16 (the default): the large weights are stored fp16 behind Casts, computation stays fp32,
    # and that served graph is gated with fp16 thresholds and labelled a proxy for the engine.
    from export.onnx_export import FP16_STORAGE_MIN_ELEMENTS

    large = [t for t in graph.graph.initializer if np.prod(t.dims) >= FP16_STORAGE_MIN_ELEMENTS]
    assert large and {t.data_type for t in large} == {onnx.TensorProto.FLOAT16}
    assert not (repo / "cross_encoder" / "1" / "model.onnx.data").exists()
    gate = _gate(repo)["gates"]["fp16"]
    assert gate["passed"] and gate["served"].startswith("proxy") and "fp16-stored weights" in gate["artifact"]
    # Issue 25 item 5: the build pass's one-instance config beside the served one (build_once.py).
    single = (repo / "cross_encoder" / "configs" / "build_once.pbtxt").read_text()
    assert single == config.replace("count: 2", "count: 1") and "count: 2" in config
    # Item 10: no onnxruntime-gpu here, so the GPU gate is recorded as not run, with why.
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["gpu_gate"]["ran"] is False and "onnxruntime-gpu" in manifest["gpu_gate"]["reason"]


def test_fp16_weight_storage_halves_the_graph_and_keeps_fp32_compute(python_repo, tmp_path):
    import numpy as np

    from export.onnx_export import FP16_STORAGE_MIN_ELEMENTS, initializer_bytes, with_fp16_weights
    from export.pipeline import ort_session

    path = python_repo / "cross_encoder" / "1" / "model.onnx"
    converted = tmp_path / "model.onnx"
    original = onnx.load(str(path))
    large = sum(
        int(np.prod(t.dims)) * 4
        for t in original.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) >= FP16_STORAGE_MIN_ELEMENTS
    )
    before_bytes = initializer_bytes(original)
    onnx.save(with_fp16_weights(original), str(converted))
    assert large > 0.5 * before_bytes  # the matrices and embeddings (~all of it for the real model)
    assert initializer_bytes(onnx.load(str(converted))) == before_bytes - large // 2
    ids = np.array([[0, 17, 25, 99, 2, 2, 40, 41, 2, 1]], dtype=np.int64)
    mask = (ids != 1).astype(np.int64)
    before = parity.onnx_runner(ort_session(path))(ids, mask)
    after = parity.onnx_runner(ort_session(converted))(ids, mask)
    assert 0 < np.max(np.abs(before - after)) < 0.05  # weight rounding only: small, not zero


def _write_config(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True)
    config = {
        "model_type": "xlm-roberta",
        "architectures": ["XLMRobertaForSequenceClassification"],
        "id2label": {"0": "LABEL_0"},
    }
    config.update(overrides)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"model_type": "bert", "architectures": ["BertForSequenceClassification"]},
            "expected an XLMRobertaForSequenceClassification",
        ),
        ({"id2label": {"0": "a", "1": "b"}}, "one output label, found 2"),
        ({}, "no \\*.safetensors weights \\(found pickle files \\['pytorch_model.bin'\\]"),
    ],
)
def test_refuses_what_it_cannot_serve(tmp_path, capsys, overrides, message):
    folder = _write_config(tmp_path / "m", **overrides)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    assert export_main(["--model", str(folder), "--repo", str(tmp_path / "repo")]) == 1
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "repo").exists()


def test_hub_unreachable_says_how_to_go_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--repo", str(tmp_path / "r")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "BAAI/bge-reranker-v2-m3" in errors[0] and "MODEL=/path/to/local/dir" in errors[0]
    assert not (tmp_path / "r").exists()


def test_help_lists_every_option():
    proc = subprocess.run([sys.executable, "-m", "export", "--help"], cwd=ROOT, capture_output=True, text=True)
    for flag in ("--model", "--repo", "--backend", "--precision", "--max-length"):
        assert flag in proc.stdout


def test_fp16_range_check_names_nodes_that_overflow(tmp_path):
    from onnx import TensorProto, helper

    from export.fp16_conversion import nodes_out_of_fp16_range

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "big"], ["h"], name="blow_up"),
            helper.make_node("Mul", ["h", "small"], ["y"], name="scale_back"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [
            helper.make_tensor("big", TensorProto.FLOAT, [], [1e5]),
            helper.make_tensor("small", TensorProto.FLOAT, [], [1e-5]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    import numpy as np

    hot, largest = nodes_out_of_fp16_range(model, [{"x": np.ones((3, 4), dtype=np.float32)}], tmp_path)
    assert hot == ["blow_up"] and largest >= 1e5
    assert [o.name for o in model.graph.output] == ["y"]  # the caller's graph is unchanged
    assert not list(tmp_path.iterdir())


def test_external_data_save_leaves_the_model_usable(tmp_path, monkeypatch):
    """Graphs over 2 GB go to `<name>.data`; the in-memory proto must keep its weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import export.onnx_export as onnx_export

    weight = numpy_helper.from_array(np.ones((300, 300), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 300])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 64 * 1024**2 + 1000)  # force the external path
    onnx_export.save_onnx(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").stat().st_size == 300 * 300 * 4
    on_disk = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert on_disk.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    for path in tmp_path.iterdir():
        path.unlink()
    assert numpy_helper.to_array(model.graph.initializer[0]).sum() == 90000


def test_code_differences_names_serving_code_older_than_the_checkout(python_repo, tmp_path):
    """A benchmark reusing an export must not measure the code it was exported with
    (benchmarks/bench.py ensure_model exports again when this names a file)."""
    import shutil

    from export.repository import code_differences

    copy = tmp_path / "repo"
    shutil.copytree(python_repo, copy, ignore=shutil.ignore_patterns("*.onnx*", "tokenizer.json"))
    assert code_differences(copy) == []
    (copy / "tokenizer" / "1" / "model.py").write_text("# the tokenizer as it was\n")
    (copy / "cross_encoder" / "1" / "deferred_counters.py").unlink()
    assert code_differences(copy) == ["cross_encoder/1/deferred_counters.py", "tokenizer/1/model.py"]
