"""Issue 25 item 10, dry run: the export's GPU gate. What it would hand ONNX Runtime on a GPU host
(providers, provider options and session options, from the generated class configs, as Triton's
onnxruntime backend r24.10 maps them) is asserted; the gate itself runs for real with only the
onnxruntime module stubbed at its boundary (a session that reports the GPU EPs and answers with a
real CPU session on the same graph); without onnxruntime-gpu (here) it is skipped with a message."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import onnxruntime
import pytest

from export import gpu_gate, pipeline
from export.settings import GPU_MODEL_INTRA_OP_THREADS, TENSORRT_WORKSPACE_BYTES, ServingLimits
from export.tensorrt_profiles import length_classes, profile_for
from export.triton_config import RepositorySpec, cross_encoder_config


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_provider_and_session_options_follow_each_class_config(tmp_path, precision):
    spec = RepositorySpec(backend="onnxruntime", precision=precision, limits=ServingLimits(max_length=8192))
    for length_class in length_classes(spec.limits):
        config = cross_encoder_config(spec, length_class)
        (trt_name, trt), (cuda_name, cuda) = gpu_gate.provider_options(config, tmp_path)
        assert (trt_name, cuda_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
        assert ("trt_fp16_enable" in trt) == (precision == "fp16") and trt.get("trt_fp16_enable", "1") == "1"
        assert "precision_mode" not in trt and "max_workspace_size_bytes" not in trt
        assert trt["trt_max_workspace_size"] == str(TENSORRT_WORKSPACE_BYTES)
        profile = profile_for(length_class)
        assert trt["trt_profile_min_shapes"] == profile.shapes("min")
        assert trt["trt_profile_max_shapes"] == profile.shapes("max")
        assert trt["trt_engine_cache_enable"] == "true"
        assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path)  # never the pod's
        assert cuda == {"device_id": "0", "do_copy_in_default_stream": "1", "arena_extend_strategy": "kNextPowerOfTwo"}
        options = gpu_gate.session_options(config)
        assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert options.intra_op_num_threads == GPU_MODEL_INTRA_OP_THREADS


def _ctx(python_repo: Path, tmp_path: Path, precision: str = "fp16"):
    fixture = json.loads((python_repo / "certificate.json").read_text())
    spec = RepositorySpec(backend="onnxruntime", precision=precision)
    return types.SimpleNamespace(
        served_onnx=python_repo / "cross_encoder" / "1" / "model.onnx",
        spec=spec,
        fixture=fixture,
        args=types.SimpleNamespace(precision=precision),
        reports={},
        work=tmp_path,
        gpu_gate=None,
    )


def test_gate_is_skipped_with_a_message_without_onnxruntime_gpu(python_repo, tmp_path, capsys):
    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()  # this machine, CI
    ctx = _ctx(python_repo, tmp_path)
    pipeline.stage_gpu_gate(ctx)
    out = capsys.readouterr().out
    assert "GPU gate not run" in out and "install onnxruntime-gpu" in out and "TensorrtExecutionProvider" in out
    assert ctx.gpu_gate["ran"] is False and "onnxruntime-gpu" in ctx.gpu_gate["reason"] and ctx.reports == {}


def _stub_ort(calls: list, taken: list[str], shift: float = 0.0):
    """onnxruntime-gpu's surface as the gate uses it; answers with a real CPU session."""

    class Session:
        def __init__(self, path, sess_options, providers, provider_options):
            calls.append((path, sess_options, providers, provider_options))
            self.real = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return taken

        def run(self, names, feeds):
            return [out + shift for out in self.real.run(names, feeds)]

    return types.SimpleNamespace(
        __version__="1.19.2",
        get_available_providers=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        InferenceSession=Session,
    )


def test_gate_scores_the_served_graph_through_the_gpu_eps(python_repo, tmp_path, monkeypatch):
    calls: list = []
    taken = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(gpu_gate, "load_ort", lambda: _stub_ort(calls, taken))
    ctx = _ctx(python_repo, tmp_path)
    pipeline.stage_gpu_gate(ctx)
    assert ctx.gpu_gate == {"ran": True, "passed": True, "providers": taken[:2], "onnxruntime": "1.19.2"}
    assert ctx.reports["gpu"].passed and ctx.reports["gpu"].served.startswith("served")
    (path, options, providers, provider_options) = calls[0]  # max_length 512: one class model
    assert path == str(ctx.served_onnx) and providers == taken[:2]
    assert (
        provider_options[0]["trt_fp16_enable"] == "1" and provider_options[0]["trt_engine_cache_path"] != "/trt-cache"
    )
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_gate_fails_the_export_when_tensorrt_did_not_take_the_graph(python_repo, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_gate, "load_ort", lambda: _stub_ort([], ["CUDAExecutionProvider", "CPUExecutionProvider"]))
    with pytest.raises(gpu_gate.GpuGateError, match="not the TensorRT EP first"):
        pipeline.stage_gpu_gate(_ctx(python_repo, tmp_path))


def test_gate_fails_the_export_when_the_gpu_numerics_miss_the_certificate(python_repo, tmp_path, monkeypatch):
    taken = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    monkeypatch.setattr(gpu_gate, "load_ort", lambda: _stub_ort([], taken, shift=0.3))
    ctx = _ctx(python_repo, tmp_path)
    with pytest.raises(pipeline.ParityFailed, match="max \\|d logit\\|"):
        pipeline.stage_gpu_gate(ctx)
    assert ctx.gpu_gate["passed"] is False


# --- With the real onnxruntime module: only its provider discovery emulated (issue 25 item 10) ---

GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gate_runs_when_onnxruntime_lists_the_gpu_eps_and_catches_the_real_fallback(
    python_repo, tmp_path, monkeypatch, capsys
):
    """onnxruntime-gpu is recognised by its provider list alone: with the TensorRT and CUDA EPs listed,
    the gate runs instead of skipping. The sessions are real; this CPU build of ONNX Runtime drops the
    EPs it lacks and runs the graph on the CPU EP, which is the silent fallback the gate exists to
    refuse: the export fails naming it."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(GPU_PROVIDERS))
    with pytest.raises(gpu_gate.GpuGateError, match="runs on \\['CPUExecutionProvider'\\], not the TensorRT EP"):
        pipeline.stage_gpu_gate(_ctx(python_repo, tmp_path))
    assert "GPU gate not run" not in capsys.readouterr().out


def test_gate_scores_the_certificate_with_real_sessions_when_tensorrt_takes_the_graph(
    python_repo, tmp_path, monkeypatch
):
    """The provider list and each session's reported providers say TensorRT took the graph (what
    onnxruntime-gpu reports on a GPU); everything else is real: the sessions are created with the
    providers, provider options and session options the class configs imply, and the certificate is
    scored by them (here on the CPU EP)."""
    created = []
    real_init = onnxruntime.InferenceSession.__init__

    def recording_init(self, path, sess_options=None, providers=None, provider_options=None, **kwargs):
        created.append((providers, provider_options, sess_options))
        real_init(self, path, sess_options=sess_options, providers=providers, provider_options=provider_options)

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(GPU_PROVIDERS))
    monkeypatch.setattr(onnxruntime.InferenceSession, "__init__", recording_init)
    monkeypatch.setattr(onnxruntime.InferenceSession, "get_providers", lambda self: list(GPU_PROVIDERS))
    ctx = _ctx(python_repo, tmp_path)
    pipeline.stage_gpu_gate(ctx)
    assert ctx.gpu_gate["ran"] is True and ctx.gpu_gate["passed"] is True
    assert ctx.gpu_gate["onnxruntime"] == onnxruntime.__version__
    assert ctx.reports["gpu"].passed and ctx.reports["gpu"].pairs > 0
    [(providers, options, sess_options)] = created  # max_length 512: one class model
    assert providers == GPU_PROVIDERS[:2] and options[0]["trt_fp16_enable"] == "1"
    assert sess_options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL


SITE_EMULATION = """
import onnxruntime
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
onnxruntime.get_available_providers = lambda: list(GPU)
onnxruntime.InferenceSession.get_providers = lambda self: list(GPU)
"""


def test_gate_in_its_own_environment_through_a_subprocess(python_repo, tmp_path, monkeypatch, capsys):
    """The exporter image's way (EXPORT_GPU_GATE_PYTHON: the onnxruntime-gpu venv): the export hands
    the request to that interpreter as JSON and reads the verdict back. Here the interpreter is this
    one, with only the provider discovery emulated at its start (sitecustomize); the sessions and
    the scoring in the child are real."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_EMULATION)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv(gpu_gate.GPU_GATE_PYTHON_ENV, sys.executable)
    ctx = _ctx(python_repo, tmp_path)
    pipeline.stage_gpu_gate(ctx)
    assert ctx.gpu_gate["ran"] is True and ctx.gpu_gate["passed"] is True
    assert ctx.gpu_gate["onnxruntime"] == onnxruntime.__version__
    assert ctx.reports["gpu"].passed and ctx.reports["gpu"].pairs > 0
    assert "parity fp16: PASS" in capsys.readouterr().out
    # Without the emulation the child's CPU onnxruntime says why the gate did not run.
    (site / "sitecustomize.py").write_text("")
    ctx = _ctx(python_repo, tmp_path)
    pipeline.stage_gpu_gate(ctx)
    assert ctx.gpu_gate["ran"] is False and "install onnxruntime-gpu" in ctx.gpu_gate["reason"]
