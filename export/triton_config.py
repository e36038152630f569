"""Triton model configs, built as typed `model_config_pb2.ModelConfig` protos.

A misspelt field fails here, at generation time, not when Triton loads the repository.
Every number comes from `ServingLimits`; `tests/test_triton_config.py` compares what this
module generates with the configs committed under `model_repository/` (golden files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common.serving_code import pair_tokenization_module
from export.model_loading import graph_sha256
from export.settings import (
    CPU_MODEL_INTRA_OP_THREADS,
    CPU_ONLY_PRECISIONS,
    CPU_QUEUE_DELAY_US,
    CROSS_ENCODER_INSTANCES,
    DEVICE_FLOPS,
    GPU_MODEL_INTRA_OP_THREADS,
    IN_PROCESS_RUN_S,
    MAX_BATCH_TOKENS,
    MAX_QUEUE_DELAY_US,
    MAX_QUEUE_SIZE,
    MAX_WINDOWS_PER_PASSAGE,
    MAX_WINDOWS_PER_REQUEST,
    MODEL_GEOMETRY,
    PRECISIONS,
    QUEUE_TIMEOUT_US,
    ROUTER_INSTANCES,
    RUN_OVERHEAD_S,
    TENSORRT_WORKSPACE_BYTES,
    TOKENIZER_INSTANCES,
    TYPICAL_PAIR_TOKENS,
    ServingLimits,
    token_flops,
)
from export.tensorrt_profiles import LengthClass, length_classes, profile_for, published_classes, queue_timeout_us
from reranker_client import contract
from reranker_client.contract import (
    ENSEMBLE,
    LENGTH_ROUTER,
    TOKENIZER,
    WINDOW_ENSEMBLE,
    WINDOW_REDUCE,
    Param,
)

BACKENDS = ("onnxruntime", "tensorrt", "python")
DEFAULT_ENGINE_CACHE = "/trt-cache"  # a persistent volume in the Helm chart and compose file


@dataclass(frozen=True)
class RepositorySpec:
    backend: str = "onnxruntime"
    precision: str = "fp16"
    limits: ServingLimits = ServingLimits()
    tokenizer_instances: int = TOKENIZER_INSTANCES
    cross_encoder_instances: int = CROSS_ENCODER_INSTANCES
    cpu_threads: int = 0  # Python/ORT backend: intra-op threads (0 = ONNX Runtime decides)
    engine_cache_path: str = DEFAULT_ENGINE_CACHE
    # ONNX Runtime's TensorRT EP names cached engines by graph structure, not by weights: a
    # fine-tuned or re-exported model with the same graph would load the old engine. The export
    # sets this to a hash of the served graph and weights (`engine_cache_prefix_for`); empty in
    # the committed reference configs, which hold no model.
    engine_cache_prefix: str = ""
    workspace_bytes: int = TENSORRT_WORKSPACE_BYTES
    # (layers, hidden) of the served model: the router's split cost is in its tokens. The export
    # sets it from the model's config; the reference configs use the real model's.
    model_geometry: tuple[int, int] = MODEL_GEOMETRY

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision in CPU_ONLY_PRECISIONS and self.backend == "tensorrt":
            raise ValueError(
                f"precision {self.precision} is a CPU profile (ONNX Runtime's dynamic int8 operators): "
                "use backend onnxruntime (KIND_CPU in the NGC image) or python (the local server)"
            )
        if self.engine_cache_prefix and not ENGINE_CACHE_PREFIX.fullmatch(self.engine_cache_prefix):
            raise ValueError(
                f"engine_cache_prefix must match {ENGINE_CACHE_PREFIX.pattern}, got {self.engine_cache_prefix!r}"
            )

    @property
    def on_cpu(self) -> bool:
        """The cross-encoder runs on CPU instances: every python-backend export, and int8."""
        return self.backend == "python" or self.precision in CPU_ONLY_PRECISIONS


# It becomes part of a file name on the cache volume: letters, digits and underscores only.
ENGINE_CACHE_PREFIX = re.compile(r"[A-Za-z0-9_]{1,64}")


def engine_cache_prefix(graph_digest: str) -> str:
    """`bge_<16 hex>` from the served graph's sha256 (model_loading.graph_sha256): same bytes,
    same prefix."""
    return "bge_" + graph_digest[:16]


def engine_cache_prefix_for(graph: Path) -> str:
    return engine_cache_prefix(graph_sha256(graph))


# KServe v2 wire datatype -> config data type (BYTES travels as TYPE_STRING in a config).
CONFIG_TYPES = {
    "BYTES": mc.TYPE_STRING,
    "INT64": mc.TYPE_INT64,
    "INT32": mc.TYPE_INT32,
    "FP32": mc.TYPE_FP32,
    "BOOL": mc.TYPE_BOOL,
}


def _inputs(tensors, optional=()) -> list[mc.ModelInput]:
    return [
        mc.ModelInput(name=t.name, data_type=CONFIG_TYPES[t.datatype], dims=list(t.dims), optional=t in optional)
        for t in tensors
    ]


def _outputs(tensors) -> list[mc.ModelOutput]:
    return [mc.ModelOutput(name=t.name, data_type=CONFIG_TYPES[t.datatype], dims=list(t.dims)) for t in tensors]


def _dynamic_batching(delay_us: int, timeout_us: int = QUEUE_TIMEOUT_US) -> mc.ModelDynamicBatching:
    return mc.ModelDynamicBatching(
        max_queue_delay_microseconds=delay_us,
        default_queue_policy=mc.ModelQueuePolicy(
            timeout_action=mc.ModelQueuePolicy.REJECT,
            default_timeout_microseconds=timeout_us,
            allow_timeout_override=True,  # clients may ask for a shorter deadline
            max_queue_size=MAX_QUEUE_SIZE,
        ),
    )


def _one_request_per_execute(timeout_us: int = QUEUE_TIMEOUT_US) -> mc.ModelDynamicBatching:
    """A queue with a policy (timeouts, a request's own `timeout`, max_queue_size) that never merges
    requests: each execute holds exactly one, however many are queued. Tritonserver 2.51's batcher
    (core r24.10 src/dynamic_batch_scheduler.cc GetDynamicBatch, lines 536-600) marks the end of a
    batch where the next request would pass the largest preferred size, and with no queue delay
    (`delay_is_exceeded` is false when max_queue_delay is 0, line 591) it sends the marked batch
    (line 596): with preferred sizes [1] that is the first request alone, whatever its rows. With a
    delay it would send "whatever is pending" once the delay passed (lines 612-619), so the delay must
    stay 0 (export/shm_budget.py requests_per_execute checks both). Without `dynamic_batching` at
    all Triton queues nothing (core r24.10 dynamic_batch_scheduler.cc Enqueue hands the request to
    the rate limiter): no timeout applies, so a flood of router work made the health probe (which
    relies on "Request timeout expired" to read busy) time out - review of issue 26."""
    batching = _dynamic_batching(0, timeout_us)
    batching.preferred_batch_size.append(1)
    return batching


def _set_params(config: mc.ModelConfig, **values) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def routed_batch_size(limits: ServingLimits) -> int:
    """Rows the router and the window reducer take per request: a request's pairs, or its windows."""
    return max(limits.max_batch_size, MAX_WINDOWS_PER_REQUEST)


def class_queue_timeouts(spec: RepositorySpec) -> dict[str, int]:
    """Each class model's queue timeout (tensorrt_profiles.queue_timeout_us, for requests of
    `routed_batch_size` rows), and the router's: the longest of them, since a router instance holds
    a request for as long as its slowest class takes."""
    classes = length_classes(spec.limits)
    rows = routed_batch_size(spec.limits)
    timeouts = {c.model: queue_timeout_us(classes, c, rows) for c in classes}
    timeouts[LENGTH_ROUTER] = max(timeouts.values())
    return timeouts


def published_limits(spec: RepositorySpec) -> dict[str, object]:
    """What the tokenizer applies and the ensembles publish for the client (contract.Param keys)."""
    limits = spec.limits
    return {
        Param.MAX_LENGTH: limits.max_length,
        Param.QUERY_MAX_LENGTH: limits.query_max_length,
        # The join format's own count (`<s> q </s></s> p </s>`), from the serving tokenizer code.
        Param.SPECIAL_TOKENS_PER_PAIR: pair_tokenization_module().SPECIAL_TOKENS_PER_PAIR,
        Param.LENGTH_BUCKETS: ",".join(map(str, limits.buckets)),
        Param.MAX_TEXT_BYTES: limits.max_text_bytes,
        Param.MAX_BATCH_TOKENS: MAX_BATCH_TOKENS,
        Param.LENGTH_CLASSES: published_classes(length_classes(limits)),
        Param.MAX_WINDOWS_PER_PASSAGE: MAX_WINDOWS_PER_PASSAGE,
        Param.MAX_WINDOWS_PER_REQUEST: MAX_WINDOWS_PER_REQUEST,
        Param.MIN_REQUEST_MAX_LENGTH: pair_tokenization_module().MIN_REQUEST_MAX_LENGTH,
        Param.CLASS_QUEUE_TIMEOUTS_US: ",".join(
            str(class_queue_timeouts(spec)[c.model]) for c in length_classes(limits)
        ),
    }


def tokenizer_config(spec: RepositorySpec) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=TOKENIZER,
        backend="python",
        max_batch_size=spec.limits.max_batch_size,
        # window_stride is optional: the `rerank` ensemble does not send it (truncate mode), the
        # `rerank_windows` ensemble does. In window mode the outputs have one row per window.
        # max_length is optional in both: a request's own tokens per pair (absent: the export's).
        input=_inputs(contract.TOKENIZER_INPUTS, optional=(contract.WINDOW_STRIDE, contract.REQUEST_MAX_LENGTH)),
        output=_outputs(contract.TOKENIZER_OUTPUTS),
        # One request per execute (issue 26 item 5). Every tensor of an execute sits in the stub's
        # /dev/shm region at once and a region never shrinks; rows do not bound text bytes (one row
        # may carry a whole message), so merging up to max_batch_size requests let a burst of
        # one-pair requests grow each region to 64 messages. A queue that never merges
        # (_one_request_per_execute) keeps the queue policy: a flood is shed here too.
        dynamic_batching=_one_request_per_execute(),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.tokenizer_instances)],
    )
    _set_params(config, **published_limits(spec))
    return config


def split_cost(spec: RepositorySpec, run_s: float | None = None) -> str:
    """The router's `split_cost` parameter, "run_tokens:attention_width" (routing.SplitCost): one
    run's fixed cost (export/settings.py RUN_OVERHEAD_S x DEVICE_FLOPS; `run_s` instead of
    RUN_OVERHEAD_S for a run inside one process, IN_PROCESS_RUN_S) in tokens of this model
    (24 h^2 FLOPs per token and layer outside attention), and 6 h, where attention's 4 h w per
    token equals that."""
    linear, attention = token_flops(*spec.model_geometry)
    run_s = RUN_OVERHEAD_S[spec.backend] if run_s is None else run_s
    run_tokens = run_s * DEVICE_FLOPS[spec.backend] / linear
    return f"{run_tokens:.4g}:{linear // attention}"


def router_config(spec: RepositorySpec) -> mc.ModelConfig:
    """Python model: splits each request's rows by length class and sends each part to its class
    model (BLS, all parts of the request in flight at once)."""
    classes = length_classes(spec.limits)
    config = mc.ModelConfig(
        name=LENGTH_ROUTER,
        backend="python",
        max_batch_size=routed_batch_size(spec.limits),
        input=_inputs(contract.CROSS_ENCODER_INPUTS),
        output=_outputs(contract.CROSS_ENCODER_OUTPUTS),
        # One request per execute (issue 26 item 5). The proxy's gRPC lets a caller name this model,
        # and Triton bounds its -1 dims by nothing but the message, so one row may be as wide as the
        # proxy's cap (32 MiB of int64); every request of an execute sits in the stub's /dev/shm
        # region at once and a region never shrinks (a batcher merging 17 such requests: 128 -> 576
        # MiB). A queue that never merges (_one_request_per_execute), and executes of one stub never
        # overlap: for a non-decoupled model the stub runs an `async def execute` coroutine to
        # completion before it reads the next (python_backend r24.10 src/pb_stub.cc ProcessRequests,
        # lines 684-690: RunCoroutine(execute_return, false /* in_background */)). Its queue keeps
        # the policy: a queued request waits for a whole execute (its slowest class), so it times out
        # after the longest class timeout, or the caller's own `timeout` (the probe's "busy").
        # Cost: only ROUTER_INSTANCES requests have parts at the class models at a time (measured:
        # docs/SECURITY.md).
        dynamic_batching=_one_request_per_execute(class_queue_timeouts(spec)[LENGTH_ROUTER]),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=ROUTER_INSTANCES)],
    )
    _set_params(
        config,
        **{
            Param.LENGTH_BUCKETS: ",".join(map(str, spec.limits.buckets)),
            Param.LENGTH_CLASSES: published_classes(classes),
            Param.CLASS_MODELS: ",".join(c.model for c in classes),
            Param.SPLIT_COST: split_cost(spec),
        },
    )
    return config


def window_reduce_config(spec: RepositorySpec) -> mc.ModelConfig:
    """Python model: one result per passage from its windows (max logit, its span)."""
    return mc.ModelConfig(
        name=WINDOW_REDUCE,
        backend="python",
        max_batch_size=routed_batch_size(spec.limits),
        input=_inputs(contract.WINDOW_REDUCE_INPUTS),
        output=_outputs(contract.WINDOW_REDUCE_OUTPUTS),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )


WARMUP_FOLDER = "warmup"  # Triton reads warm-up data files from <model>/warmup/


def warmup_mask_file(length: int) -> str:
    return f"attention_mask_ones_{length}"


def warmup_shapes(limits: ServingLimits, length_class: LengthClass | None = None) -> list[tuple[int, int]]:
    """(batch, length) a class model warms up on, so the first real request is not slow: the
    first class its smallest and a full typical batch; a long class one row of its shortest
    bucket (a full long batch would take gigabytes on the CPU stand-in for no benefit)."""
    length_class = length_class or length_classes(limits)[0]
    if length_class.index == 0:
        return [(1, limits.buckets[0]), (length_class.max_batch, min(length_class.max_length, TYPICAL_PAIR_TOKENS))]
    return [(1, next(b for b in limits.buckets if b >= length_class.min_length))]


def warmup_files(limits: ServingLimits, length_class: LengthClass | None = None) -> dict[str, bytes]:
    """File name -> content for <model>/warmup/: an all-ones attention mask per warm-up length (one
    row; Triton repeats it batch_size times). A zero mask would be a row with no real token, which
    no request sends, and which HF's float32-min mask turns into NaN under fp16."""
    import numpy as np

    return {
        warmup_mask_file(length): np.ones(length, dtype=np.int64).tobytes()
        for _, length in warmup_shapes(limits, length_class)
    }


def _warmup(spec: RepositorySpec, length_class: LengthClass) -> list[mc.ModelWarmup]:
    warmups = []
    for batch, length in warmup_shapes(spec.limits, length_class):
        inputs = {
            # Token id 0 is <s>: a valid id; the mask says every position is a real token.
            contract.INPUT_IDS.name: mc.ModelWarmup.Input(data_type=mc.TYPE_INT64, dims=[length], zero_data=True),
            contract.ATTENTION_MASK.name: mc.ModelWarmup.Input(
                data_type=mc.TYPE_INT64, dims=[length], input_data_file=warmup_mask_file(length)
            ),
        }
        warmups.append(mc.ModelWarmup(name=f"batch{batch}_len{length}", batch_size=batch, inputs=inputs))
    return warmups


def _tensorrt_accelerator(spec: RepositorySpec, length_class: LengthClass) -> mc.ModelOptimizationPolicy:
    profile = profile_for(length_class)
    # One engine per class model, each with its own profile: the cache names them apart.
    prefix = "_".join(filter(None, [spec.engine_cache_prefix, f"c{length_class.index}" if length_class.index else ""]))
    params = {
        "precision_mode": "FP16" if spec.precision == "fp16" else "FP32",
        "max_workspace_size_bytes": str(spec.workspace_bytes),
        # Engines take minutes to build: cache them on a volume that outlives the pod.
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": spec.engine_cache_path,
        "trt_timing_cache_enable": "true",
        "trt_timing_cache_path": spec.engine_cache_path,
        **({"trt_engine_cache_prefix": prefix} if prefix else {}),
        "trt_profile_min_shapes": profile.shapes("min"),
        "trt_profile_opt_shapes": profile.shapes("opt"),
        "trt_profile_max_shapes": profile.shapes("max"),
    }
    if spec.precision == "fp16":
        # Matches only the Pow+Reduce decomposition of LayerNorm, which our opset-17 graph does not
        # contain: onnx-tensorrt takes a LayerNormalization node's precision from its stash_type
        # (fp32 by default). Kept for graphs exported at a lower opset.
        params["trt_layer_norm_fp32_fallback"] = "true"
    accelerator = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt", parameters=params)
    policy = mc.ModelOptimizationPolicy()
    policy.execution_accelerators.gpu_execution_accelerator.append(accelerator)
    return policy


# Triton's onnxruntime backend maps `optimization { graph { level } }` to ONNX Runtime's session
# graph optimization level (onnxruntime_backend r24.10, src/onnxruntime.cc lines 217-237):
# absent or any other value -> ORT_ENABLE_ALL (the default), -1 -> ORT_ENABLE_BASIC,
# 1 -> ORT_ENABLE_EXTENDED, 2 -> ORT_DISABLE_ALL.
ORT_GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 2: "ORT_DISABLE_ALL"}
ORT_GRAPH_LEVEL_DEFAULT = "ORT_ENABLE_ALL"
ORT_GRAPH_LEVEL_FOR_TENSORRT = 2


def ort_graph_level(config: mc.ModelConfig) -> str:
    """The `onnxruntime.GraphOptimizationLevel` name Triton's onnxruntime backend sets for this
    config (the mapping above)."""
    if not config.optimization.HasField("graph"):
        return ORT_GRAPH_LEVEL_DEFAULT
    return ORT_GRAPH_LEVELS.get(config.optimization.graph.level, ORT_GRAPH_LEVEL_DEFAULT)


def cross_encoder_config(spec: RepositorySpec, length_class: LengthClass | None = None) -> mc.ModelConfig:
    """The model of one length class (the first class by default): its max_batch_size is the
    class's batch, so the dynamic batcher cannot form a batch over MAX_BATCH_TOKENS."""
    length_class = length_class or length_classes(spec.limits)[0]
    config = mc.ModelConfig(
        name=length_class.model,
        max_batch_size=length_class.max_batch,
        input=_inputs(contract.CROSS_ENCODER_INPUTS),
        output=_outputs(contract.CROSS_ENCODER_OUTPUTS),
        dynamic_batching=_dynamic_batching(
            CPU_QUEUE_DELAY_US if spec.on_cpu else MAX_QUEUE_DELAY_US,
            class_queue_timeouts(spec)[length_class.model],
        ),
        model_warmup=_warmup(spec, length_class),
    )
    gpu = mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.cross_encoder_instances)
    if spec.backend == "onnxruntime" and spec.on_cpu:
        # The CPU profile in the NGC image: ONNX Runtime's CPU EP, no accelerator. The graph
        # optimizations stay at ORT_ENABLE_ALL (no `optimization { graph }`): they fuse
        # DynamicQuantizeLinear + MatMulInteger + scale into ONNX Runtime's DynamicQuantizeMatMul
        # and MatMulIntegerToFloat kernels. Threads sized from the pod's CPUs (settings.CPU_POD_CPUS).
        config.backend = "onnxruntime"
        config.default_model_filename = "model.onnx"
        config.instance_group.append(
            mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.cross_encoder_instances)
        )
        _set_params(config, intra_op_thread_count=CPU_MODEL_INTRA_OP_THREADS, inter_op_thread_count=1)
    elif spec.backend == "onnxruntime":
        config.backend = "onnxruntime"
        config.default_model_filename = "model.onnx"
        config.instance_group.append(gpu)
        config.optimization.CopyFrom(_tensorrt_accelerator(spec, length_class))
        # No ONNX Runtime graph optimization before the TensorRT EP takes the graph: from BASIC up,
        # constant folding turns every Cast(fp16 weight) back into an fp32 initializer before
        # partitioning (2.27 GB for the real model), and the EP serializes the subgraph it takes,
        # weights included, into one protobuf (2 GiB limit). tests/test_served_graph.py runs the
        # served graph at the session options this level implies (ort_graph_level).
        config.optimization.graph.level = ORT_GRAPH_LEVEL_FOR_TENSORRT
        _set_params(config, intra_op_thread_count=GPU_MODEL_INTRA_OP_THREADS)
    elif spec.backend == "tensorrt":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        # Every class model loads its own plan, built with one profile: its class's shapes
        # (export/plan_memory.py: a context sized for that profile only). Listed explicitly so
        # the self-certification's check ("plan loaded with its profile") reads it.
        gpu.profile.append("0")
        config.instance_group.append(gpu)
    else:
        config.backend = "python"
        config.instance_group.append(
            mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.cross_encoder_instances)
        )
        # The Python model refuses every shape outside its class (the same shapes as the TensorRT
        # profile: rows of min_length..max_length tokens, at most max_batch_size of them), so the
        # CPU path enforces what a plan would, and a direct caller gets INVALID_ARGUMENT.
        _set_params(
            config,
            onnx_file="model.onnx",
            intra_op_threads=spec.cpu_threads,
            min_length=length_class.min_length,
            max_length=length_class.max_length,
            vocab_size=spec.limits.vocab_size,
            # A batch spanning several buckets runs in parts where that pays (routing.batch_parts):
            # the direct one-class `rerank` path's split, at the cost of a run in this process.
            **{
                Param.LENGTH_BUCKETS: ",".join(map(str, spec.limits.buckets)),
                Param.SPLIT_COST: split_cost(spec, IN_PROCESS_RUN_S),
            },
        )
    return config


def _step(
    model: str, inputs, outputs, inputs_from: dict[str, str] | None = None, outputs_to: dict[str, str] | None = None
) -> mc.ModelEnsembling.Step:
    """A step whose tensors keep their names inside the ensemble, except the inputs it reads
    from `inputs_from[name]` and the outputs it writes to `outputs_to[name]`."""
    inputs_from, outputs_to = inputs_from or {}, outputs_to or {}
    return mc.ModelEnsembling.Step(
        model_name=model,
        model_version=-1,
        input_map={t.name: inputs_from.get(t.name, t.name) for t in inputs},
        output_map={t.name: outputs_to.get(t.name, t.name) for t in outputs},
    )


def _ensemble(spec: RepositorySpec, name: str, inputs, outputs, steps: list) -> mc.ModelConfig:
    # The optional inputs (a request's own max_length) reach the tokenizer step only when sent:
    # checked on tritonserver 2.51, an optional ensemble input left out is left out of the step's
    # request too (tests/test_request_max_length.py sends both).
    optional = contract.ENSEMBLE_OPTIONAL_INPUTS
    config = mc.ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=spec.limits.max_batch_size,
        input=_inputs((*inputs, *optional), optional=optional),
        output=_outputs(outputs),
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )
    # The client reads these with the config it fetches anyway: it packs requests by bucket,
    # counts pair tokens with the server's own rules and rejects over-long texts before sending.
    _set_params(config, **published_limits(spec))
    return config


def ensemble_config(spec: RepositorySpec) -> mc.ModelConfig:
    """`rerank`: tokenizer -> length_router (-> the class models); with one length class (every
    max_length <= the first class bound, 512 by default), tokenizer -> that class model directly:
    the router would only forward the request whole (routing.plan keeps a one-class request one
    part unless a split pays), at the cost of a Python BLS hop per request (issue 30: ~19 ms per
    request on the small stand-in here). The tokenizer already pads each request to the bucket
    of its longest pair, and the ensemble's max_batch_size is within the class's batch. The wire
    contract is unchanged. `rerank_windows` keeps the router: a request's windows may exceed the
    class's batch, and the router cuts them into parts."""
    tokenized = (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.TOKENS, contract.TRUNCATED)
    classes = length_classes(spec.limits)
    scorer = LENGTH_ROUTER
    if len(classes) == 1:
        if spec.limits.max_batch_size > classes[0].max_batch:
            raise ValueError(
                f"max_batch_size {spec.limits.max_batch_size} exceeds the class model's batch {classes[0].max_batch}"
            )
        scorer = classes[0].model
    steps = [
        _step(TOKENIZER, (*contract.ENSEMBLE_INPUTS, *contract.ENSEMBLE_OPTIONAL_INPUTS), tokenized),
        _step(scorer, contract.CROSS_ENCODER_INPUTS, contract.CROSS_ENCODER_OUTPUTS),
    ]
    return _ensemble(spec, ENSEMBLE, contract.ENSEMBLE_INPUTS, contract.ENSEMBLE_OUTPUTS, steps)


# Inside `rerank_windows` the per-window tensors (one row per window) are renamed, so they do not
# collide with the per-passage outputs of the same names.
_PER_WINDOW = {
    t.name: f"window_{t.name}" for t in (contract.LOGIT, contract.SCORE, contract.TOKENS, contract.TRUNCATED)
}


def window_ensemble_config(spec: RepositorySpec) -> mc.ModelConfig:
    """`rerank_windows`: tokenizer (one row per window; the batch grows, bounded by
    MAX_WINDOWS_PER_REQUEST) -> length_router -> window_reduce (back to one row per passage)."""
    steps = [
        _step(TOKENIZER, contract.TOKENIZER_INPUTS, contract.TOKENIZER_OUTPUTS, outputs_to=_PER_WINDOW),
        _step(LENGTH_ROUTER, contract.CROSS_ENCODER_INPUTS, contract.CROSS_ENCODER_OUTPUTS, outputs_to=_PER_WINDOW),
        _step(WINDOW_REDUCE, contract.WINDOW_REDUCE_INPUTS, contract.WINDOW_REDUCE_OUTPUTS, inputs_from=_PER_WINDOW),
    ]
    return _ensemble(spec, WINDOW_ENSEMBLE, contract.WINDOW_ENSEMBLE_INPUTS, contract.WINDOW_ENSEMBLE_OUTPUTS, steps)


# The build pass (docker/build_once.py, issue 25 item 5): Triton loads the instances of one model in
# parallel, and two instances of an onnxruntime class model would each build the same TensorRT
# engine and write the same cache file. The launcher first starts Triton with
# `--model-config-name=build_once` (Triton 2.51 reads <model>/configs/build_once.pbtxt instead of
# config.pbtxt), one instance per class model and one model load at a time, so each engine is built
# once; the serving start then finds every engine in the cache.
BUILD_ONCE_CONFIG = "build_once"


def build_once_config(config: mc.ModelConfig) -> mc.ModelConfig:
    """`config` with one instance: what the build pass loads."""
    single = mc.ModelConfig()
    single.CopyFrom(config)
    for group in single.instance_group:
        group.count = 1
    return single


def all_configs(spec: RepositorySpec) -> dict[str, mc.ModelConfig]:
    configs = {TOKENIZER: tokenizer_config(spec), LENGTH_ROUTER: router_config(spec)}
    for length_class in length_classes(spec.limits):
        configs[length_class.model] = cross_encoder_config(spec, length_class)
    configs[WINDOW_REDUCE] = window_reduce_config(spec)
    configs[ENSEMBLE] = ensemble_config(spec)
    configs[WINDOW_ENSEMBLE] = window_ensemble_config(spec)
    return configs


HEADER = "# Generated by `python -m export` from export/triton_config.py - edit that, not this.\n"


def to_pbtxt(config: mc.ModelConfig) -> str:
    return HEADER + text_format.MessageToString(config)


def write_reference_configs(repository, spec: RepositorySpec = RepositorySpec()) -> list:
    """The committed model_repository/: default (onnxruntime) configs plus the other backends'
    cross-encoder configs under `<class model>/configs/<backend>.pbtxt`, which Triton can pick
    with `--model-config-name=<backend>`, and the CPU int8 profile's (`onnxruntime_int8_cpu`)."""
    from dataclasses import replace

    repository = Path(repository)
    written = []
    for name, config in all_configs(spec).items():
        path = repository / name / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_pbtxt(config))
        written.append(path)
    for length_class in length_classes(spec.limits):
        warmup = repository / length_class.model / WARMUP_FOLDER
        warmup.mkdir(parents=True, exist_ok=True)
        for filename, content in warmup_files(spec.limits, length_class).items():
            (warmup / filename).write_bytes(content)
            written.append(warmup / filename)
        for backend in BACKENDS:
            if backend == spec.backend:
                continue
            path = repository / length_class.model / "configs" / f"{backend}.pbtxt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(to_pbtxt(cross_encoder_config(replace(spec, backend=backend), length_class)))
            written.append(path)
        path = repository / length_class.model / "configs" / f"{CPU_INT8_CONFIG_NAME}.pbtxt"
        cpu_spec = replace(spec, backend="onnxruntime", precision="int8")
        path.write_text(to_pbtxt(cross_encoder_config(cpu_spec, length_class)))
        written.append(path)
    return written


CPU_INT8_CONFIG_NAME = "onnxruntime_int8_cpu"


# The long-context reference (max_length 8,192: three length classes), committed beside the
# tests rather than in model_repository/ (Triton would load every folder there as a model).
LONG_CONTEXT_REFERENCE = RepositorySpec(limits=ServingLimits(max_length=8192))


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "model_repository"
    for written_path in write_reference_configs(target):
        print(f"wrote {written_path}")
    if len(sys.argv) > 2:  # python -m export.triton_config model_repository tests/golden/long_context
        for written_path in write_reference_configs(sys.argv[2], LONG_CONTEXT_REFERENCE):
            print(f"wrote {written_path}")
