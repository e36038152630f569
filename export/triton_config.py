"""Triton model configs, built as typed `model_config_pb2.ModelConfig` protos.

A misspelt field fails here, at generation time, not when Triton loads the repository.
Every number comes from `ServingLimits`; `tests/test_triton_config.py` compares what this
module generates with the configs committed under `model_repository/` (golden files).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from reranker_client import contract
from reranker_client.contract import CROSS_ENCODER, ENSEMBLE, TOKENIZER, Param

from export.settings import (
    GPU_MODEL_INTRA_OP_THREADS, MAX_QUEUE_DELAY_US, MAX_QUEUE_SIZE, QUEUE_TIMEOUT_US, SPECIAL_TOKENS_PER_PAIR,
    TENSORRT_WORKSPACE_BYTES, TOKENIZER_INSTANCES, TOKENIZER_QUEUE_DELAY_US, TYPICAL_PAIR_TOKENS, ServingLimits,
)
from export.tensorrt_profiles import profiles_for

BACKENDS = ("onnxruntime", "tensorrt", "python")
DEFAULT_ENGINE_CACHE = "/trt-cache"  # a persistent volume in the Helm chart and compose file


@dataclass(frozen=True)
class RepositorySpec:
    backend: str = "onnxruntime"
    precision: str = "fp16"
    limits: ServingLimits = ServingLimits()
    tokenizer_instances: int = TOKENIZER_INSTANCES
    cross_encoder_instances: int = 1
    cpu_threads: int = 0  # Python/ORT backend: intra-op threads (0 = ONNX Runtime decides)
    engine_cache_path: str = DEFAULT_ENGINE_CACHE
    # ONNX Runtime's TensorRT EP names cached engines by graph structure, not by weights: a
    # fine-tuned or re-exported model with the same graph would load the old engine. The export
    # sets this to a hash of the served graph and weights (`engine_cache_prefix_for`); empty in
    # the committed reference configs, which hold no model.
    engine_cache_prefix: str = ""
    workspace_bytes: int = TENSORRT_WORKSPACE_BYTES

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        if self.engine_cache_prefix and not ENGINE_CACHE_PREFIX.fullmatch(self.engine_cache_prefix):
            raise ValueError(f"engine_cache_prefix must match {ENGINE_CACHE_PREFIX.pattern}, "
                             f"got {self.engine_cache_prefix!r}")


# It becomes part of a file name on the cache volume: letters, digits and underscores only.
ENGINE_CACHE_PREFIX = re.compile(r"[A-Za-z0-9_]{1,64}")


def engine_cache_prefix_for(graph: Path) -> str:
    """`bge_<16 hex>`: sha256 over the served ONNX graph and its external data file, in
    1 MiB reads (the fp32 weights are 2.27 GB). Same bytes, same prefix: deterministic."""
    digest = hashlib.sha256()
    for path in (graph, graph.with_name(graph.name + ".data")):
        if path.exists():
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return "bge_" + digest.hexdigest()[:16]


# KServe v2 wire datatype -> config data type (BYTES travels as TYPE_STRING in a config).
CONFIG_TYPES = {"BYTES": mc.TYPE_STRING, "INT64": mc.TYPE_INT64, "INT32": mc.TYPE_INT32,
                "FP32": mc.TYPE_FP32, "BOOL": mc.TYPE_BOOL}


def _inputs(tensors) -> list[mc.ModelInput]:
    return [mc.ModelInput(name=t.name, data_type=CONFIG_TYPES[t.datatype], dims=list(t.dims)) for t in tensors]


def _outputs(tensors) -> list[mc.ModelOutput]:
    return [mc.ModelOutput(name=t.name, data_type=CONFIG_TYPES[t.datatype], dims=list(t.dims)) for t in tensors]


def _dynamic_batching(delay_us: int) -> mc.ModelDynamicBatching:
    return mc.ModelDynamicBatching(
        max_queue_delay_microseconds=delay_us,
        default_queue_policy=mc.ModelQueuePolicy(
            timeout_action=mc.ModelQueuePolicy.REJECT,
            default_timeout_microseconds=QUEUE_TIMEOUT_US,
            allow_timeout_override=True,  # clients may ask for a shorter deadline
            max_queue_size=MAX_QUEUE_SIZE,
        ),
    )


def _set_params(config: mc.ModelConfig, **values) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def long_request_limits(limits: ServingLimits) -> tuple[int, int]:
    """(length above which a request is 'long', pairs allowed in such a request): the first
    TensorRT profile's reach, and the batch of the profile beyond it."""
    profiles = profiles_for(limits)
    if len(profiles) == 1:
        return limits.max_length, limits.max_batch_size
    return profiles[0].max_shape[1], profiles[-1].max_shape[0]


def published_limits(spec: RepositorySpec) -> dict[str, object]:
    """What the tokenizer applies and the ensemble publishes for the client (contract.Param keys)."""
    limits = spec.limits
    long_length, long_pairs = long_request_limits(limits)
    return {Param.MAX_LENGTH: limits.max_length, Param.QUERY_MAX_LENGTH: limits.query_max_length,
            Param.SPECIAL_TOKENS_PER_PAIR: SPECIAL_TOKENS_PER_PAIR,
            Param.LENGTH_BUCKETS: ",".join(map(str, limits.buckets)),
            Param.MAX_TEXT_BYTES: limits.max_text_bytes,
            Param.LONG_REQUEST_LENGTH: long_length, Param.LONG_REQUEST_MAX_PAIRS: long_pairs}


def tokenizer_config(spec: RepositorySpec) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=TOKENIZER, backend="python", max_batch_size=spec.limits.max_batch_size,
        input=_inputs(contract.ENSEMBLE_INPUTS), output=_outputs(contract.TOKENIZER_OUTPUTS),
        # Gather concurrent requests so one execute() tokenizes them in one batch call.
        dynamic_batching=_dynamic_batching(delay_us=TOKENIZER_QUEUE_DELAY_US),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU,
                                              count=spec.tokenizer_instances)],
    )
    _set_params(config, **published_limits(spec))
    return config


WARMUP_FOLDER = "warmup"  # Triton reads warm-up data files from <model>/warmup/


def warmup_mask_file(length: int) -> str:
    return f"attention_mask_ones_{length}"


def warmup_shapes(limits: ServingLimits) -> list[tuple[int, int]]:
    """(batch, length): the smallest and the largest short shape, so the first real request is not slow."""
    return [(1, limits.buckets[0]), (limits.max_batch_size, min(limits.max_length, TYPICAL_PAIR_TOKENS))]


def warmup_files(limits: ServingLimits) -> dict[str, bytes]:
    """File name -> content for <model>/warmup/: an all-ones attention mask per warm-up length (one
    row; Triton repeats it batch_size times). A zero mask would be a row with no real token, which
    no request sends, and which HF's float32-min mask turns into NaN under fp16."""
    import numpy as np

    return {warmup_mask_file(length): np.ones(length, dtype=np.int64).tobytes()
            for _, length in warmup_shapes(limits)}


def _warmup(spec: RepositorySpec) -> list[mc.ModelWarmup]:
    warmups = []
    for batch, length in warmup_shapes(spec.limits):
        inputs = {
            # Token id 0 is <s>: a valid id; the mask says every position is a real token.
            contract.INPUT_IDS.name: mc.ModelWarmup.Input(data_type=mc.TYPE_INT64, dims=[length], zero_data=True),
            contract.ATTENTION_MASK.name: mc.ModelWarmup.Input(data_type=mc.TYPE_INT64, dims=[length],
                                                 input_data_file=warmup_mask_file(length)),
        }
        warmups.append(mc.ModelWarmup(name=f"batch{batch}_len{length}", batch_size=batch, inputs=inputs))
    return warmups


def _tensorrt_accelerator(spec: RepositorySpec) -> mc.ModelOptimizationPolicy:
    profiles = profiles_for(spec.limits)
    params = {
        "precision_mode": "FP16" if spec.precision == "fp16" else "FP32",
        "max_workspace_size_bytes": str(spec.workspace_bytes),
        # Engines take minutes to build: cache them on a volume that outlives the pod.
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": spec.engine_cache_path,
        "trt_timing_cache_enable": "true",
        "trt_timing_cache_path": spec.engine_cache_path,
        **({"trt_engine_cache_prefix": spec.engine_cache_prefix} if spec.engine_cache_prefix else {}),
        "trt_profile_min_shapes": ",".join(p.shapes("min") for p in profiles),
        "trt_profile_opt_shapes": ",".join(p.shapes("opt") for p in profiles),
        "trt_profile_max_shapes": ",".join(p.shapes("max") for p in profiles),
    }
    if spec.precision == "fp16":
        # The EP's counterpart of the plan builders' fp32 pins: LayerNormalization in fp32, the
        # overflow TensorRT 10.5 itself warns about for layernorm after self-attention in fp16.
        params["trt_layer_norm_fp32_fallback"] = "true"
    accelerator = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt", parameters=params)
    policy = mc.ModelOptimizationPolicy()
    policy.execution_accelerators.gpu_execution_accelerator.append(accelerator)
    return policy


def cross_encoder_config(spec: RepositorySpec) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=CROSS_ENCODER, max_batch_size=spec.limits.max_batch_size,
        input=_inputs(contract.CROSS_ENCODER_INPUTS), output=_outputs(contract.CROSS_ENCODER_OUTPUTS),
        dynamic_batching=_dynamic_batching(MAX_QUEUE_DELAY_US),
        model_warmup=_warmup(spec),
    )
    gpu = mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.cross_encoder_instances)
    if spec.backend == "onnxruntime":
        config.backend = "onnxruntime"
        config.default_model_filename = "model.onnx"
        config.instance_group.append(gpu)
        config.optimization.CopyFrom(_tensorrt_accelerator(spec))
        _set_params(config, intra_op_thread_count=GPU_MODEL_INTRA_OP_THREADS)
    elif spec.backend == "tensorrt":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        config.instance_group.append(gpu)
    else:
        config.backend = "python"
        config.instance_group.append(mc.ModelInstanceGroup(
            kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.cross_encoder_instances))
        # The Python model checks every request against these (and the config's max_batch_size)
        # before ONNX Runtime runs: a direct caller of cross_encoder gets INVALID_ARGUMENT, not
        # minutes of CPU. The exported graph bounds the same inputs for the other backends.
        _set_params(config, onnx_file="model.onnx", intra_op_threads=spec.cpu_threads,
                    max_length=spec.limits.max_length, vocab_size=spec.limits.vocab_size)
    return config


def _mapping(tensors) -> dict[str, str]:
    """A step's tensors keep their names inside the ensemble."""
    return {t.name: t.name for t in tensors}


def ensemble_config(spec: RepositorySpec) -> mc.ModelConfig:
    step = mc.ModelEnsembling.Step
    config = mc.ModelConfig(
        name=ENSEMBLE, platform="ensemble", max_batch_size=spec.limits.max_batch_size,
        input=_inputs(contract.ENSEMBLE_INPUTS), output=_outputs(contract.ENSEMBLE_OUTPUTS),
        ensemble_scheduling=mc.ModelEnsembling(step=[
            step(model_name=TOKENIZER, model_version=-1, input_map=_mapping(contract.ENSEMBLE_INPUTS),
                 output_map=_mapping(contract.TOKENIZER_OUTPUTS)),
            step(model_name=CROSS_ENCODER, model_version=-1, input_map=_mapping(contract.CROSS_ENCODER_INPUTS),
                 output_map=_mapping(contract.CROSS_ENCODER_OUTPUTS)),
        ]),
    )
    # The client reads these with the config it fetches anyway: it packs requests by bucket,
    # counts pair tokens with the server's own rules and rejects over-long texts before sending.
    _set_params(config, **published_limits(spec))
    return config


def all_configs(spec: RepositorySpec) -> dict[str, mc.ModelConfig]:
    return {TOKENIZER: tokenizer_config(spec), CROSS_ENCODER: cross_encoder_config(spec),
            ENSEMBLE: ensemble_config(spec)}


HEADER = "# Generated by `python -m export` from export/triton_config.py - edit that, not this.\n"


def to_pbtxt(config: mc.ModelConfig) -> str:
    return HEADER + text_format.MessageToString(config)


def write_reference_configs(repository, spec: RepositorySpec = RepositorySpec()) -> list:
    """The committed model_repository/: default (onnxruntime) configs plus the other backends'
    cross-encoder configs under `cross_encoder/configs/<backend>.pbtxt`, which Triton can pick
    with `--model-config-name=<backend>`."""
    from dataclasses import replace

    repository = Path(repository)
    written = []
    for name, config in all_configs(spec).items():
        path = repository / name / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_pbtxt(config))
        written.append(path)
    warmup = repository / CROSS_ENCODER / WARMUP_FOLDER
    warmup.mkdir(parents=True, exist_ok=True)
    for filename, content in warmup_files(spec.limits).items():
        (warmup / filename).write_bytes(content)
        written.append(warmup / filename)
    for backend in BACKENDS:
        if backend == spec.backend:
            continue
        path = repository / CROSS_ENCODER / "configs" / f"{backend}.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_pbtxt(cross_encoder_config(replace(spec, backend=backend))))
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    for written_path in write_reference_configs(sys.argv[1] if len(sys.argv) > 1 else "model_repository"):
        print(f"wrote {written_path}")
