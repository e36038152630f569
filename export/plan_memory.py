"""Device memory of the TensorRT plan design, estimated from the geometry and measured at build.

The design (issue 25 item 4): ONE PLAN PER LENGTH CLASS, each with ONE optimisation profile.
Why not one plan with a profile per class, as before:
- TensorRT 10.5 sizes an execution context created with the default allocation strategy
  (ExecutionContextAllocationStrategy::kSTATIC) for the largest of ALL the engine's profiles
  (NvInferRuntime.h, ICudaEngine::createExecutionContext / getDeviceMemorySizeV2), and Triton's
  tensorrt_backend r24.10 creates its contexts that way (src/instance_state.cc:1700-1701 and 1742:
  `engine_->createExecutionContext()`, no strategy argument), first a default one for profile 0 and
  then one per listed profile. Every instance of every class model would hold contexts sized for
  4 x 8,192 tokens.
- The backend does not share a dynamic-shape engine between instances (src/model_state.cc:242-265:
  "Model with dynamic shapes can't share engine"): each instance deserializes its own copy of the
  weights, so separate plans cost no more weights than one shared plan did.
With one profile per plan, each context is sized for its own class (profile 0 = the listed one,
no second context) and the tactic scratch is capped per plan (settings.PLAN_WORKSPACE_BYTES).

The estimate (bytes), for a class of at most B rows of S tokens (T = B x S tokens), a model of P
parameters, hidden h, FFN f, n heads, I instances, workspace cap W:

    weights      = P x 2 (fp16 plan; 4 for fp32)
    activations  = T x (f + 6h) x 4                  (one layer's live tensors, all counted fp32)
    attention    = 0 with fused attention, else 2 x B x n x S^2 x s  (scores and softmax output,
                   s = 4 when Softmax is pinned to fp32, else 2)
    class        = I x (weights + activations + attention + W)

TensorRT reuses activation memory across layers, so one layer's tensors bound it; counting them
fp32 over-states an fp16 plan. The measured figure (engine.get_device_memory_size_for_profile_v2,
TensorRT >= 10.1, python/src/infer/pyCore.cpp) replaces `activations + attention + W` once a plan
is built, and is written to the manifest under `tensorrt_plan.memory`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from export.settings import (
    CROSS_ENCODER_INSTANCES,
    DEFAULT_VOCAB_SIZE,
    GPU_MEMORY_BUDGET_BYTES,
    PLAN_WORKSPACE_BYTES,
    ServingLimits,
)
from export.tensorrt_profiles import LengthClass, length_classes


@dataclass(frozen=True)
class Geometry:
    parameters: int
    hidden_size: int
    heads: int
    ffn_size: int
    vocab_size: int = DEFAULT_VOCAB_SIZE  # the embedding table stays fp32 in the int8 CPU graph

    @classmethod
    def of(cls, facts: dict) -> Geometry:
        """From the manifest's `model` facts (XLM-RoBERTa: FFN = 4 x hidden)."""
        return cls(
            int(facts["parameters"]), int(facts["hidden_size"]), int(facts["heads"]), 4 * int(facts["hidden_size"])
        )


# bge-reranker-v2-m3 (NOTES.md): 568M parameters, 24 x 1024, 16 heads, FFN 4096.
REAL_GEOMETRY = Geometry(parameters=568_000_000, hidden_size=1024, heads=16, ffn_size=4096)


@dataclass(frozen=True)
class ClassMemory:
    model: str
    max_batch: int
    max_length: int
    instances: int
    weights_bytes: int  # per instance
    context_bytes: int  # per instance: activations + attention + workspace (or measured)
    measured: bool

    @property
    def total_bytes(self) -> int:
        return self.instances * (self.weights_bytes + self.context_bytes)

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}


def attention_bytes(length_class: LengthClass, geometry: Geometry, fused: bool, softmax_fp32: bool) -> int:
    if fused:
        return 0
    return 2 * length_class.max_batch * geometry.heads * length_class.max_length**2 * (4 if softmax_fp32 else 2)


def estimate_class(
    length_class: LengthClass,
    geometry: Geometry,
    precision: str = "fp16",
    fused_attention: bool = True,
    softmax_fp32: bool = False,
    instances: int = CROSS_ENCODER_INSTANCES,
    workspace_bytes: int = PLAN_WORKSPACE_BYTES,
) -> ClassMemory:
    tokens = length_class.max_batch * length_class.max_length
    activations = tokens * (geometry.ffn_size + 6 * geometry.hidden_size) * 4
    context = activations + attention_bytes(length_class, geometry, fused_attention, softmax_fp32) + workspace_bytes
    weights = geometry.parameters * (2 if precision == "fp16" else 4)
    return ClassMemory(
        length_class.model,
        length_class.max_batch,
        length_class.max_length,
        instances,
        weights,
        context,
        False,
    )


def estimate(limits: ServingLimits, geometry: Geometry = REAL_GEOMETRY, **kwargs) -> list[ClassMemory]:
    return [estimate_class(c, geometry, **kwargs) for c in length_classes(limits)]


def measured_class(estimated: ClassMemory, plan_bytes: int, context_bytes: int) -> ClassMemory:
    """The built plan's own figures: its size stands for the weights it deserializes, and
    TensorRT's per-profile context memory for activations + attention + scratch."""
    return ClassMemory(
        estimated.model,
        estimated.max_batch,
        estimated.max_length,
        estimated.instances,
        plan_bytes,
        context_bytes,
        True,
    )


def over_budget(classes: list[ClassMemory], budget: int = GPU_MEMORY_BUDGET_BYTES) -> str:
    """'' when the classes fit `budget`, else why not (per class, GiB)."""
    total = sum(c.total_bytes for c in classes)
    if total <= budget:
        return ""
    parts = ", ".join(f"{c.model} {c.total_bytes / 2**30:.1f}" for c in classes)
    return f"plan memory {total / 2**30:.1f} GiB ({parts}) exceeds the budget of {budget / 2**30:.1f} GiB"


def table(classes: list[ClassMemory], budget: int = GPU_MEMORY_BUDGET_BYTES) -> str:
    rows = [
        "| class model | rows x tokens | instances | weights / instance | context / instance | class total |",
        "|---|---|---|---|---|---|",
    ]
    for c in classes:
        rows.append(
            f"| {c.model} | {c.max_batch} x {c.max_length} | {c.instances} | {c.weights_bytes / 2**30:.2f} GiB | "
            f"{c.context_bytes / 2**30:.2f} GiB{'' if c.measured else ' (est.)'} | {c.total_bytes / 2**30:.2f} GiB |"
        )
    total = sum(c.total_bytes for c in classes)
    rows.append(f"| all | | | | | {total / 2**30:.2f} GiB of {budget / 2**30:.2f} GiB |")
    return "\n".join(rows)


# --- Host memory of the pod (issue 25 item 5: count the host copies against the memory limit) ---
# Assumptions, stated because only a GPU host can measure them (docs/GPU.md): tritonserver with its
# backends loaded; one Python-backend stub process (tokenizers, numpy, tritonclient).
TRITON_BASE_HOST_BYTES = 1 << 30
PYTHON_STUB_HOST_BYTES = 300 << 20


@dataclass(frozen=True)
class HostMemory:
    steady_bytes: int  # after every model loaded
    peak_bytes: int  # steady + the largest transient while loading/building (one builder at a time)
    parts: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def host_estimate(
    backend: str,
    limits: ServingLimits,
    geometry: Geometry = REAL_GEOMETRY,
    precision: str = "fp16",
    instances: int = CROSS_ENCODER_INSTANCES,
    python_stubs: int = 0,
    shm_bytes: int = 0,
    device: str = "gpu",
) -> HostMemory:
    """Bytes of host memory the pod holds, counted against its memory limit.

    - onnxruntime: every instance's ONNX Runtime session keeps the served graph's initializers
      (fp16-stored: P x 2; fp32: P x 4) - instances do not share them - and the TensorRT EP builds
      its engine on the host side: network weights in fp32 (P x 4) plus the serialized engine
      (P x 2) while it is written; with the build pass (docker/build_once.py) one build at a time.
    - tensorrt: tensorrt_backend reads the whole plan file into host memory to deserialize it
      (~P x 2 per instance, freed after); steady host memory is small (weights live on the device).
    - device "cpu" (the int8 CPU profile, deploy/helm/values/cpu.yaml): every instance's session
      holds the graph (int8: the encoder's weights at 1 byte, the embedding table fp32) and the
      activations of its largest batch on the host, attention unfused with fp32 scores (ONNX
      Runtime's CPU EP runs the exported MatMul-Softmax-MatMul as it is); its arena keeps them.
    - Python stubs (tokenizer, router, window reduce) and the /dev/shm emptyDir (medium Memory:
      counts against the limit) with Triton itself.
    """
    if device == "cpu":
        return _cpu_host_estimate(limits, geometry, precision, instances, python_stubs, shm_bytes)
    classes = len(length_classes(limits))
    weight = 2 if precision == "fp16" else 4
    parts = {"triton": TRITON_BASE_HOST_BYTES, "python_stubs": python_stubs * PYTHON_STUB_HOST_BYTES, "shm": shm_bytes}
    if backend == "onnxruntime":
        parts["onnxruntime_sessions"] = classes * instances * geometry.parameters * weight
        transient = geometry.parameters * (4 + 2)
    elif backend == "tensorrt":
        parts["plans"] = 0
        transient = geometry.parameters * 2 * min(4, classes * instances)  # up to 4 models load at once
    else:  # python: ONNX Runtime CPU sessions hold the graph and its fp32 compute
        parts["onnxruntime_sessions"] = classes * instances * geometry.parameters * weight
        transient = 0
    steady = sum(parts.values())
    return HostMemory(steady, steady + transient, parts)


def _cpu_host_estimate(
    limits: ServingLimits, geometry: Geometry, precision: str, instances: int, python_stubs: int, shm_bytes: int
) -> HostMemory:
    classes = length_classes(limits)
    embeddings = geometry.vocab_size * geometry.hidden_size
    if precision == "int8":
        graph = (geometry.parameters - embeddings) + embeddings * 4
    else:
        graph = geometry.parameters * (2 if precision == "fp16" else 4)
    largest = max(classes, key=lambda c: c.max_batch * c.max_length)
    activations = largest.max_batch * largest.max_length * (geometry.ffn_size + 6 * geometry.hidden_size) * 4
    activations += attention_bytes(largest, geometry, fused=False, softmax_fp32=True)
    parts = {
        "triton": TRITON_BASE_HOST_BYTES,
        "python_stubs": python_stubs * PYTHON_STUB_HOST_BYTES,
        "shm": shm_bytes,
        "onnxruntime_sessions": len(classes) * instances * graph,
        "cpu_activations": instances * activations,
    }
    steady = sum(parts.values())
    return HostMemory(steady, steady, parts)


# --- The pod's memory request and limit, derived from the host need (issue 25 item 5) ---
# Headroom over the estimate, on both figures. Why 25%: the estimate's constants (Triton's base, a
# Python stub) are assumptions no GPU host has measured yet, malloc keeps freed pages, and the
# kubelet OOM-kills a container at its limit with no grace. Defined here only; the chart's values
# files carry the results (tests/test_pod_memory.py renders each and checks it).
HOST_MEMORY_HEADROOM = 0.25


@dataclass(frozen=True)
class PodMemory:
    host: HostMemory
    request_bytes: int  # steady need + headroom, rounded up to a whole GiB
    limit_bytes: int  # peak need (one engine build, a plan being read) + headroom, likewise

    @property
    def request(self) -> str:
        return f"{self.request_bytes >> 30}Gi"

    @property
    def limit(self) -> str:
        return f"{self.limit_bytes >> 30}Gi"


def _whole_gib(size: float) -> int:
    return -(-int(size) // (1 << 30)) << 30


def pod_memory(host: HostMemory, headroom: float = HOST_MEMORY_HEADROOM) -> PodMemory:
    """The memory request and limit a pod with this host need should carry."""
    return PodMemory(host, _whole_gib(host.steady_bytes * (1 + headroom)), _whole_gib(host.peak_bytes * (1 + headroom)))


def served_pod_memory(
    backend: str, max_length: int, precision: str = "fp16", shm_bytes: int = 2 << 30, geometry: Geometry = REAL_GEOMETRY
) -> PodMemory:
    """pod_memory of the repository `make export BACKEND=.. PRECISION=.. MAX_LENGTH=..` writes: its
    class models, its instance counts and its Python stubs, from the generated configs."""
    from export.settings import CPU_ONLY_PRECISIONS
    from export.triton_config import RepositorySpec, all_configs

    spec = RepositorySpec(backend=backend, precision=precision, limits=ServingLimits(max_length=max_length))
    stubs = sum(g.count for c in all_configs(spec).values() if c.backend == "python" for g in c.instance_group)
    host = host_estimate(
        backend,
        spec.limits,
        geometry,
        precision=precision,
        instances=spec.cross_encoder_instances,
        python_stubs=stubs,
        shm_bytes=shm_bytes,
        device="cpu" if precision in CPU_ONLY_PRECISIONS else "gpu",
    )
    return pod_memory(host)


def main(argv: list[str] | None = None) -> None:
    """python -m export.plan_memory --max-length 8192 [--unfused --softmax-fp32] [--host BACKEND]"""
    import argparse

    parser = argparse.ArgumentParser(description="estimated device memory per class model of the plan design")
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16")
    parser.add_argument("--unfused", action="store_true", help="attention not fused (score tensors materialised)")
    parser.add_argument("--softmax-fp32", action="store_true")
    parser.add_argument(
        "--host",
        choices=("onnxruntime", "tensorrt"),
        default=None,
        help="print the pod's host memory need and the memory request/limit derived from it instead",
    )
    parser.add_argument("--bytes", action="store_true", help="with --host: '<peak need> <limit>' in bytes only")
    parser.add_argument("--out", type=Path, default=None, help="write there instead of printing")
    args = parser.parse_args(argv)
    if args.host:
        pod = served_pod_memory(args.host, args.max_length, args.precision)
        if args.bytes:
            text = f"{pod.host.peak_bytes} {pod.limit_bytes}"
            if args.out is None:
                print(text)
            else:
                args.out.write_text(text + "\n")
            return
        parts = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in pod.host.parts.items() if v)
        print(
            f"{args.host} {args.precision} max_length {args.max_length}: "
            f"steady {pod.host.steady_bytes / 2**30:.2f} GiB ({parts}), "
            f"peak {pod.host.peak_bytes / 2**30:.2f} GiB; with {HOST_MEMORY_HEADROOM:.0%} headroom: "
            f"resources.requests.memory {pod.request}, resources.limits.memory {pod.limit}"
        )
        return
    found = estimate(
        ServingLimits(max_length=args.max_length),
        precision="fp16" if args.precision == "int8" else args.precision,
        fused_attention=not args.unfused,
        softmax_fp32=args.softmax_fp32,
    )
    print(table(found))
    problem = over_budget(found)
    print(problem or "fits the 24 GB budget")


if __name__ == "__main__":
    main()
