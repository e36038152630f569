"""What the TensorRT EP receives from the default (onnxruntime, fp16) repository, emulated on CPU.

The served graph goes through ONNX Runtime with exactly the session options its generated
config implies (export/served_session.py: Triton's level mapping), the optimized graph is
written, and its initializers are what the EP would serialize: fp16 weights, under protobuf's
2 GiB. At the tiny stand-in in `make test` (bytes per parameter scaled to the real 568M
parameters), at the real geometry in `make test-slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common import standin_model
from export.onnx_export import FP16_STORAGE_MIN_ELEMENTS, save_onnx, with_fp16_weights
from export.served_session import PROTOBUF_LIMIT_BYTES, ep_view, summarise
from export.triton_config import LONG_CONTEXT_REFERENCE, RepositorySpec, cross_encoder_config, length_classes

ROOT = Path(__file__).resolve().parent.parent


def committed_config(name: str = "cross_encoder") -> mc.ModelConfig:
    text = (ROOT / "model_repository" / name / "config.pbtxt").read_text()
    return text_format.Parse(text, mc.ModelConfig())


def real_stored_bytes() -> tuple[int, int]:
    """(parameters, bytes) of the real bge-reranker-v2-m3 geometry as with_fp16_weights stores
    it (fp16 from FP16_STORAGE_MIN_ELEMENTS elements up, fp32 below), counted without allocating."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    config = standin_model.model_config(standin_model.SHAPES["real"])
    with torch.device("meta"):
        model = XLMRobertaForSequenceClassification(config)
    sizes = [p.numel() for p in model.parameters()]
    return sum(sizes), sum(2 * n if n >= FP16_STORAGE_MIN_ELEMENTS else 4 * n for n in sizes)


@pytest.fixture(scope="module")
def served_fp16_graph(python_repo, tmp_path_factory) -> Path:
    """The onnxruntime backend's fp16 graph, made as the export's fp16_weights stage makes it
    from the same fp32 graph (the python fp32 repository serves that fp32 graph as is)."""
    path = tmp_path_factory.mktemp("served") / "model.onnx"
    save_onnx(with_fp16_weights(onnx.load(str(python_repo / "cross_encoder" / "1" / "model.onnx"))), path)
    return path


def test_every_generated_class_config_disables_folding_before_the_tensorrt_ep():
    # The committed default config and every class of the long-context reference.
    assert committed_config().optimization.graph.level == 2
    spec = LONG_CONTEXT_REFERENCE
    for length_class in length_classes(spec.limits):
        assert cross_encoder_config(spec, length_class).optimization.graph.level == 2
    # The other backends have no ONNX Runtime session in Triton's onnxruntime backend.
    assert not cross_encoder_config(RepositorySpec(backend="tensorrt")).optimization.HasField("graph")


def test_tensorrt_ep_receives_fp16_weights_under_2_gib(served_fp16_graph, tmp_path):
    stored = summarise(onnx.load(str(served_fp16_graph)), "stored", FP16_STORAGE_MIN_ELEMENTS)
    view = ep_view(served_fp16_graph, committed_config(), tmp_path, FP16_STORAGE_MIN_ELEMENTS)
    assert view.graph_level == "ORT_DISABLE_ALL"
    # The EP receives the weights as stored: every large one fp16, nothing re-inflated ...
    assert view.large_dtypes == {"float16"}, view
    assert view.bytes_by_dtype.get("float16") == stored.bytes_by_dtype["float16"] > 0
    # (ONNX Runtime turns Constant nodes into initializers at every level: a few scalars.)
    assert 0 <= view.bytes_by_dtype["float32"] - stored.bytes_by_dtype["float32"] < 1024
    # ... and stored that way, the real model is one protobuf's worth (the slow test measures it).
    parameters, real_bytes = real_stored_bytes()
    assert 560e6 < parameters < 580e6
    assert real_bytes < 0.6 * PROTOBUF_LIMIT_BYTES, f"{real_bytes / 2**30:.2f} GiB"


def test_the_backend_default_level_would_hand_the_ep_fp32_weights(served_fp16_graph, tmp_path):
    """Why the level is set: Triton's default (no `graph` block: ORT_ENABLE_ALL) folds each
    Cast(fp16 weight) into an fp32 initializer before partitioning: 2.27 GB for the real model."""
    config = committed_config()
    config.optimization.ClearField("graph")
    view = ep_view(served_fp16_graph, config, tmp_path, FP16_STORAGE_MIN_ELEMENTS)
    assert view.graph_level == "ORT_ENABLE_ALL"
    assert view.large_dtypes == {"float32"} and "float16" not in view.bytes_by_dtype
    parameters, _ = real_stored_bytes()
    assert 4 * parameters > PROTOBUF_LIMIT_BYTES


@pytest.mark.slow
def test_real_geometry_tensorrt_ep_receives_fp16_weights_under_2_gib(tmp_path_factory):
    """The real 24 x 1024 geometry: its fp32 graph made into the served fp16-weights graph exactly
    as the export's fp16_weights stage does, opened at the default config's session options.
    (The export's gates are left out: they take ~15 minutes here and gate numerics, not bytes.)"""
    import gc

    from export import model_loading
    from export.onnx_export import export_onnx
    from export.settings import DEFAULT_MAX_LENGTH

    model_dir = tmp_path_factory.getbasetemp() / "real-shape-model"
    if not (model_dir / "model.safetensors").exists():
        standin_model.build(model_dir, "real")
    work = tmp_path_factory.mktemp("real-ep-view")
    model = model_loading.load_torch_model(model_loading.resolve(str(model_dir)))
    fp32 = export_onnx(model, work / "fp32" / "model.onnx", DEFAULT_MAX_LENGTH)
    del model
    gc.collect()
    served = work / "served" / "model.onnx"
    served.parent.mkdir()
    save_onnx(with_fp16_weights(onnx.load(str(fp32))), served)
    view = ep_view(served, committed_config(), work, FP16_STORAGE_MIN_ELEMENTS)
    print(f"\nreal geometry, {view.graph_level}: {json.dumps(view.bytes_by_dtype)}")
    assert view.graph_level == "ORT_DISABLE_ALL"
    assert view.large_dtypes == {"float16"}
    assert 560e6 < view.float_parameters < 580e6
    assert view.total_bytes < 0.6 * PROTOBUF_LIMIT_BYTES
    assert view.total_bytes == pytest.approx(real_stored_bytes()[1], rel=0.01)
