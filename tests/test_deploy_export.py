"""Export-side pieces of the deployment fixes (issue 17): the engine cache key, the ensemble's
placeholder and the ONNX Runtime thread bound. Fast: no model, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export import settings
from export.repository import ENSEMBLE_PLACEHOLDER, write_repository
from export.triton_config import RepositorySpec, cross_encoder_config, engine_cache_prefix_for

COMMITTED = Path(__file__).resolve().parent.parent / "model_repository"


def _accelerator_params(config: mc.ModelConfig) -> dict:
    return dict(config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)


def _fake_graph(folder: Path, weights: bytes) -> Path:
    graph = folder / "model.onnx"
    graph.parent.mkdir(parents=True, exist_ok=True)
    graph.write_bytes(b"same graph structure")
    graph.with_name("model.onnx.data").write_bytes(weights)
    return graph


def test_cache_prefix_follows_the_weights(tmp_path):
    a = engine_cache_prefix_for(_fake_graph(tmp_path / "a", b"\x00" * 1000))
    a_again = engine_cache_prefix_for(_fake_graph(tmp_path / "a2", b"\x00" * 1000))
    fine_tuned = engine_cache_prefix_for(_fake_graph(tmp_path / "b", b"\x00" * 999 + b"\x01"))
    assert a == a_again  # deterministic
    assert a != fine_tuned  # same graph, other weights: another engine
    assert a.startswith("bge_") and len(a) == 20


def _export(tmp_path: Path, backend: str, weights: bytes) -> Path:
    def place(cross_encoder_dir: Path) -> None:
        if backend == "onnxruntime":
            _fake_graph(cross_encoder_dir / "1", weights)

    return write_repository(
        tmp_path / f"repo-{backend}",
        RepositorySpec(backend=backend),
        tmp_path,
        place,
        {"model": {}},
        {},
        {"format": "test"},
    )


def test_export_keys_the_engine_cache_by_the_served_graph(tmp_path):
    repo = _export(tmp_path, "onnxruntime", b"weights")
    config = text_format.Parse((repo / "cross_encoder" / "config.pbtxt").read_text(), mc.ModelConfig())
    prefix = _accelerator_params(config)["trt_engine_cache_prefix"]
    assert prefix == engine_cache_prefix_for(repo / "cross_encoder" / "1" / "model.onnx")
    assert f'"engine_cache_prefix": "{prefix}"' in (repo / "manifest.json").read_text()


@pytest.mark.parametrize("backend", ["onnxruntime", "python", "tensorrt"])
def test_ensemble_version_folder_is_never_empty(tmp_path, backend):
    repo = _export(tmp_path, backend, b"w")
    assert (repo / "rerank" / "1" / ENSEMBLE_PLACEHOLDER).is_file()
    assert (COMMITTED / "rerank" / "1" / ENSEMBLE_PLACEHOLDER).is_file()


def test_bad_prefix_rejected():
    with pytest.raises(ValueError, match="engine_cache_prefix"):
        RepositorySpec(engine_cache_prefix="../other")


def test_gpu_model_thread_pool_is_bounded():
    config = cross_encoder_config(RepositorySpec(backend="onnxruntime"))
    # A model-level parameter in the onnxruntime backend (src/onnxruntime.cc, r24.10).
    assert config.parameters["intra_op_thread_count"].string_value == str(settings.GPU_MODEL_INTRA_OP_THREADS)
    assert settings.GPU_MODEL_INTRA_OP_THREADS >= 1


def test_python_shm_holds_a_worst_tokenizer_execute():
    worst_in = 2 * settings.DEFAULT_MAX_BATCH_SIZE * settings.MAX_TEXT_BYTES
    assert worst_in <= settings.PYTHON_SHM_DEFAULT_BYTES
    assert worst_in <= settings.PYTHON_SHM_GROWTH_BYTES
    flags = settings.server_flags()
    assert f"--backend-config=python,shm-default-byte-size={settings.PYTHON_SHM_DEFAULT_BYTES}" in flags
    assert settings.TERMINATION_GRACE_S > settings.PRESTOP_SLEEP_S + settings.EXIT_TIMEOUT_S
    from reranker_client.endpoints import DNS_REFRESH_S

    assert DNS_REFRESH_S < settings.PRESTOP_SLEEP_S  # clients drop a terminating pod before it stops
