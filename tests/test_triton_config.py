"""Generated configs: golden comparison with the committed repository, and their invariants."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.settings import ServingLimits
from export.triton_config import (BACKENDS, CROSS_ENCODER, RepositorySpec, all_configs,
                                  cross_encoder_config, to_pbtxt, write_reference_configs)

COMMITTED = Path(__file__).resolve().parent.parent / "model_repository"


def test_committed_repository_matches_generator(tmp_path):
    written = write_reference_configs(tmp_path)
    assert len([p for p in written if p.suffix == ".pbtxt"]) == 5
    assert len([p for p in written if p.parent.name == "warmup"]) == 2  # one all-ones mask per warm-up length
    for path in written:
        committed = COMMITTED / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `make configs`"


@pytest.mark.parametrize("backend", BACKENDS)
def test_configs_parse_back_and_agree(backend):
    spec = RepositorySpec(backend=backend, limits=ServingLimits(max_length=1024, max_batch_size=32))
    configs = {name: text_format.Parse(to_pbtxt(c), mc.ModelConfig()) for name, c in all_configs(spec).items()}
    ensemble, tokenizer, cross = configs["rerank"], configs["tokenizer"], configs[CROSS_ENCODER]
    # An ensemble may not batch more than any of its models.
    assert ensemble.max_batch_size <= min(tokenizer.max_batch_size, cross.max_batch_size)
    assert ensemble.max_batch_size == 32
    # Every tensor an ensemble step maps exists on the model it maps to.
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) <= {i.name for i in model.input}
        assert set(step.output_map) <= {o.name for o in model.output}
    assert tokenizer.parameters["max_length"].string_value == "1024"
    assert tokenizer.parameters["length_buckets"].string_value.split(",")[-1] == "1024"
    policy = cross.dynamic_batching.default_queue_policy
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT and policy.max_queue_size > 0
    assert len(cross.model_warmup) >= 1


def test_backend_specifics():
    ort = cross_encoder_config(RepositorySpec(backend="onnxruntime"))
    accelerator = ort.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_enable"] == "true"
    assert ort.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    plan = cross_encoder_config(RepositorySpec(backend="tensorrt"))
    assert plan.platform == "tensorrt_plan" and plan.default_model_filename == "model.plan"
    python = cross_encoder_config(RepositorySpec(backend="python"))
    assert python.backend == "python" and python.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_long_profile_limit_reaches_the_tokenizer():
    spec = RepositorySpec(limits=ServingLimits(max_length=8192))
    params = all_configs(spec)["tokenizer"].parameters
    assert params["long_request_length"].string_value == "1024"
    assert params["long_request_max_pairs"].string_value == "4"
    accel = cross_encoder_config(spec).optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.parameters["trt_profile_max_shapes"].count("input_ids:") == 2


def test_bad_spec_rejected():
    with pytest.raises(ValueError, match="backend"):
        RepositorySpec(backend="tflite")
    with pytest.raises(ValueError, match="precision"):
        replace(RepositorySpec(), precision="int8")
