"""Generated configs: golden comparison with the committed repository, and their invariants."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.settings import MAX_BATCH_TOKENS, ServingLimits
from export.tensorrt_profiles import class_for_length, length_classes, profile_for
from export.triton_config import (
    BACKENDS,
    LONG_CONTEXT_REFERENCE,
    RepositorySpec,
    all_configs,
    cross_encoder_config,
    to_pbtxt,
    write_reference_configs,
)
from reranker_client.contract import CROSS_ENCODER, LENGTH_ROUTER, WINDOW_ENSEMBLE, Param

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "model_repository"
COMMITTED_LONG = ROOT / "tests" / "golden" / "long_context"  # max_length 8,192: three length classes


@pytest.mark.parametrize(
    "spec, committed, pbtxt", [(RepositorySpec(), COMMITTED, 9), (LONG_CONTEXT_REFERENCE, COMMITTED_LONG, 17)]
)
def test_committed_repository_matches_generator(tmp_path, spec, committed, pbtxt):
    written = write_reference_configs(tmp_path, spec)
    # 6 models (tokenizer, router, reducer, 2 ensembles, >= 1 class) + 2 other-backend configs and
    # the CPU int8 config per class.
    assert len([p for p in written if p.suffix == ".pbtxt"]) == pbtxt
    for path in written:
        golden = committed / path.relative_to(tmp_path)
        assert golden.read_bytes() == path.read_bytes(), (
            f"{golden} is stale: run `python -m export.triton_config model_repository tests/golden/long_context`"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_configs_parse_back_and_agree(backend):
    spec = RepositorySpec(backend=backend, limits=ServingLimits(max_length=1024, max_batch_size=32))
    configs = {name: text_format.Parse(to_pbtxt(c), mc.ModelConfig()) for name, c in all_configs(spec).items()}
    ensemble, tokenizer, cross = configs["rerank"], configs["tokenizer"], configs[CROSS_ENCODER]
    assert ensemble.max_batch_size == 32
    for name in ("rerank", WINDOW_ENSEMBLE):
        for step in configs[name].ensemble_scheduling.step:
            model = configs[step.model_name]
            # An ensemble may not batch more than any of its models.
            assert configs[name].max_batch_size <= model.max_batch_size
            # Every tensor an ensemble step maps exists on the model it maps to, and every required
            # input of the model is mapped.
            assert set(step.input_map) <= {i.name for i in model.input}
            assert {i.name for i in model.input if not i.optional} <= set(step.input_map)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_length_classes_bound_every_batch_and_use_every_profile(backend):
    """max_length 8,192: one model per length class. The dynamic batcher cannot form a batch
    over MAX_BATCH_TOKENS (each class model's max_batch_size x its longest length), every
    TensorRT profile is listed by exactly one class model, and the router and the client read
    the same class table."""
    spec = RepositorySpec(backend=backend, limits=ServingLimits(max_length=8192))
    configs = all_configs(spec)
    classes = length_classes(spec.limits)
    assert [(c.max_length, c.max_batch) for c in classes] == [(512, 64), (2048, 16), (8192, 4)]
    listed_profiles = []
    for c in classes:
        config = configs[c.model]
        assert config.max_batch_size == c.max_batch
        assert config.max_batch_size * c.max_length <= MAX_BATCH_TOKENS
        if backend == "tensorrt":
            listed_profiles += list(config.instance_group[0].profile)
        elif backend == "onnxruntime":
            accel = config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
            assert accel["trt_profile_max_shapes"] == profile_for(c).shapes("max")
            assert accel["trt_profile_min_shapes"] == profile_for(c).shapes("min")
        else:
            params = config.parameters
            assert (params["min_length"].string_value, params["max_length"].string_value) == (
                str(c.min_length),
                str(c.max_length),
            )
    if backend == "tensorrt":
        # Each class model serves its own plan, built with one profile (export/plan_memory.py).
        assert listed_profiles == ["0"] * len(classes)
    router = configs[LENGTH_ROUTER].parameters
    assert router[Param.CLASS_MODELS].string_value.split(",") == [c.model for c in classes]
    published = configs["rerank"].parameters
    assert (
        published[Param.LENGTH_CLASSES].string_value
        == router[Param.LENGTH_CLASSES].string_value
        == "512:64,2048:16,8192:4"
    )
    assert published[Param.MAX_BATCH_TOKENS].string_value == str(MAX_BATCH_TOKENS)
    # Every bucket the tokenizer can emit belongs to exactly one class's range.
    for bucket in spec.limits.buckets:
        owners = [c for c in classes if c.min_length <= bucket <= c.max_length]
        assert owners == [class_for_length(classes, bucket)]


def test_bad_spec_rejected():
    with pytest.raises(ValueError, match="backend"):
        RepositorySpec(backend="tflite")
    with pytest.raises(ValueError, match="precision"):
        replace(RepositorySpec(), precision="int4")
    with pytest.raises(ValueError, match="CPU profile"):
        RepositorySpec(backend="tensorrt", precision="int8")
