"""The export as an explicit list of named stages (STAGES) over one ExportContext, each timed
and logged with its peak memory:

    resolve -> load -> onnx_fp32 -> certificate -> parity_fp32
      -> [fp16: convert + gate, escalating]      (python backend, fp16: the only one serving it)
      -> [fp16_weights]                          (onnxruntime backend, fp16: fp16-stored weights)
      -> [int8: quantize + gate, escalating]     (python or onnxruntime backend on CPU, int8)
      -> [tensorrt_fp32_layers]                  (tensorrt backend, fp16)
      -> [tensorrt_parser]                       (tensorrt, onnxruntime: every node in TensorRT's
                                                  ONNX support matrix at its type)
      -> [gpu_gate]                              (onnxruntime: the served graph on ORT's TensorRT+CUDA
                                                  EPs where onnxruntime-gpu is installed)
      -> [tensorrt]                              (tensorrt backend; the plan is certified before use)
      -> repository
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import onnx

from common.pair_tokenizer import load_pair_tokenizer
from export import (
    certificate,
    cpu_isa,
    gpu_gate,
    int8_quantization,
    model_loading,
    parity,
    plan_memory,
    tensorrt_onnx_support,
)
from export.fp16_conversion import FP32_ESCALATION, Fp16Report, convert_to_fp16_in_subprocess, tensorrt_fp32_levels
from export.onnx_export import export_onnx, save_onnx, with_fp16_weights
from export.repository import copy_onnx, write_repository
from export.settings import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL_ID,
    IN_PROCESS_RUN_S,
    TOKENIZER_INSTANCES,
    ServingLimits,
)
from export.tensorrt_build import (
    PLAN_FP32_ESCALATION,
    PlanBuild,
    PlanResult,
    build_and_certify_plan,
    local_device_key,
    timing_cache_path,
    write_build_files,
)
from export.tensorrt_profiles import check_consistency, length_classes, profiles_for
from export.triton_config import RepositorySpec, engine_cache_prefix, split_cost
from export.trt_import import load_tensorrt


class ParityFailed(RuntimeError):
    pass


@dataclass
class ExportArgs:
    model: str = DEFAULT_MODEL_ID
    repo: Path = Path("runs/model_repository")
    backend: str = "onnxruntime"
    precision: str = "fp16"
    max_length: int = DEFAULT_MAX_LENGTH
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    revision: str | None = None
    work_dir: Path | None = None  # keep intermediate ONNX files here
    tokenizer_instances: int = TOKENIZER_INSTANCES
    cpu_threads: int = 0
    # backend tensorrt: leave the plans to cross_encoder/tensorrt/build_plan.sh on the GPU host
    # (an export on a machine without TensorRT). Without it, TensorRT must be importable here.
    plan_later: bool = False


@dataclass
class StageLog:
    stages: list[dict] = field(default_factory=list)

    def run(self, name: str, func, *args, **kwargs):
        print(f"[export] {name} ...", flush=True)
        start = time.perf_counter()
        result = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.stages.append({"stage": name, "seconds": round(seconds, 2), "peak_rss_mib": peak_rss_mib()})
        print(f"[export] {name} done in {seconds:.1f}s (peak memory {peak_rss_mib():.0f} MiB)", flush=True)
        return result


def peak_rss_mib() -> float:
    """Peak resident memory of the largest process so far: the exporter or a finished fp16
    conversion child (Linux reports KiB)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def release_memory() -> None:
    """Collect, then hand glibc's free heap back to the OS: without malloc_trim a process that once
    held the 2.27 GB graph keeps that memory resident for the rest of the export."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def file_mib(path: Path) -> float:
    size = path.stat().st_size
    data = path.with_name(path.name + ".data")
    return (size + (data.stat().st_size if data.exists() else 0)) / 2**20


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tokenizers": tokenizers.__version__,
    }


def run_export(args: ExportArgs) -> dict:
    limits = ServingLimits(max_length=args.max_length, max_batch_size=args.max_batch_size)
    spec = RepositorySpec(
        backend=args.backend,
        precision=args.precision,
        limits=limits,
        tokenizer_instances=args.tokenizer_instances,
        cpu_threads=args.cpu_threads,
    )
    problems = check_consistency(limits, profiles_for(limits))
    if problems:
        raise ValueError("inconsistent limits: " + "; ".join(problems))
    owned_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="export-")) if args.work_dir is None else Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ctx = ExportContext(args=args, spec=spec, work=work)
    try:
        for stage in STAGES:
            if stage.applies(ctx):
                ctx.log.run(stage.name, stage.run, ctx)
        return summary_of(ctx)
    finally:
        if owned_work:
            shutil.rmtree(work, ignore_errors=True)


def served_artifact(backend: str, precision: str) -> dict:
    """What Triton serves for this backend and precision, and what certifies it: the manifest and
    parity.json say it, so no gate is read as covering an artifact it never ran."""
    if precision == "int8":
        where = "a Python-backend model" if backend == "python" else "the onnxruntime backend, KIND_CPU"
        return {
            "file": "cross_encoder/1/model.onnx",
            "runtime": f"ONNX Runtime CPU in {where} (dynamic int8 MatMuls, optimum ORTQuantizer)",
            "certified_by": "export gate int8 (this exact graph on ONNX Runtime CPU of the export host); "
            "self-certification at start and make verify on the serving CPU",
        }
    if backend == "python":
        graph = "fused fp16 ONNX graph" if precision == "fp16" else "fp32 ONNX graph"
        return {
            "file": "cross_encoder/1/model.onnx",
            "runtime": f"ONNX Runtime CPU ({graph})",
            "certified_by": f"export gate {precision} (this exact graph and runtime); make verify on the server",
        }
    if backend == "onnxruntime":
        graph = (
            "the fp32 graph with fp16-stored weights (one file)"
            if precision == "fp16"
            else "the fp32 graph (weights in model.onnx.data above 2 GB)"
        )
        return {
            "file": "cross_encoder/1/model.onnx",
            "runtime": f"ONNX Runtime TensorRT EP, {precision} engine built at first load from {graph}",
            "certified_by": "make verify against the live server on the target GPU (the export gate ran the "
            "fp32 graph on ONNX Runtime CPU: a proxy for the engine, not the engine)",
        }
    return {
        "file": "cross_encoder/1/model.plan",
        "runtime": f"TensorRT plans ({precision}), one per length class (<class model>/1/model.plan), built on the "
        "target GPU",
        "certified_by": "the plan build (certificate checked before the plan is placed) and make verify "
        "(the export gate ran the fp32 graph on ONNX Runtime CPU: a proxy)",
    }


@dataclass
class ExportContext:
    """Everything the stages share: the request, then what each stage produced. A stage's
    outputs are unset until it ran (reading one earlier is an AttributeError, not a None)."""

    args: ExportArgs
    spec: RepositorySpec
    work: Path
    log: StageLog = field(default_factory=StageLog)
    source: model_loading.ModelSource = field(init=False)
    model: Any = field(init=False)  # the PyTorch reference; None once the certificate holds its logits
    model_facts: dict[str, int] = field(init=False)  # parameters, layers, hidden size, heads
    tokenizer_dir: Path = field(init=False)
    pair_tokenizer: Any = field(init=False)
    fp32_path: Path = field(init=False)
    fixture: dict[str, Any] = field(init=False)
    served_onnx: Path = field(init=False)
    reports: dict[str, parity.ParityResult] = field(default_factory=dict)
    fp16_report: Fp16Report | None = None
    fp16_attempts: list[dict[str, Any]] = field(default_factory=list)
    int8_report: int8_quantization.Int8Report | None = None
    int8_attempts: list[dict[str, Any]] = field(default_factory=list)
    int8_gate_cpu: dict[str, Any] | None = None  # export/cpu_isa.describe() where the int8 gate ran
    trt_fp32_layers: list[str] = field(default_factory=list)
    trt_fp32_escalation: list[list[str]] = field(default_factory=list)  # names each further try adds
    plan: PlanResult | None = None  # the certified class plans, when TensorRT is importable here
    gpu_gate: dict[str, Any] | None = None  # onnxruntime backend: whether the GPU gate ran, and why not
    repo: Path = field(init=False)

    @property
    def served(self) -> dict:
        return {
            "backend": self.args.backend,
            "precision": self.args.precision,
            **served_artifact(self.args.backend, self.args.precision),
        }

    @property
    def model_info(self) -> dict:
        return {"id": self.source.model_id, "revision": self.source.revision, "files_sha256": self.source.file_sha256}


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[ExportContext], None]
    applies: Callable[[ExportContext], bool] = lambda ctx: True


def stage_resolve(ctx: ExportContext) -> None:
    ctx.source = model_loading.resolve(ctx.args.model, ctx.args.revision)


def stage_load(ctx: ExportContext) -> None:
    ctx.model = model_loading.load_torch_model(ctx.source)
    ctx.tokenizer_dir = ctx.work / "tokenizer"
    model_loading.load_tokenizer(ctx.source).save_pretrained(ctx.tokenizer_dir)
    config = ctx.model.config
    # The served configs carry the model's own vocabulary size: the Python backend refuses ids
    # outside it (the exported graph clamps them to the same bound).
    ctx.spec = replace(ctx.spec, limits=replace(ctx.spec.limits, vocab_size=config.vocab_size))
    # The router's split cost is counted in this model's tokens (triton_config.split_cost).
    ctx.spec = replace(ctx.spec, model_geometry=(config.num_hidden_layers, config.hidden_size))
    ctx.pair_tokenizer = load_pair_tokenizer(ctx.tokenizer_dir, ctx.spec.limits)
    ctx.model_facts = {
        "parameters": sum(p.numel() for p in ctx.model.parameters()),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads,
    }


def stage_onnx_fp32(ctx: ExportContext) -> None:
    ctx.fp32_path = export_onnx(ctx.model, ctx.work / "fp32" / "model.onnx", ctx.spec.limits.max_length)
    ctx.served_onnx = ctx.fp32_path


def stage_certificate(ctx: ExportContext) -> None:
    ctx.fixture = certificate.build(
        ctx.pair_tokenizer, parity.torch_runner(ctx.model), model=ctx.model_info, served=ctx.served
    )
    # The certificate holds PyTorch's logits: free the model (2.3 GB for the real one) for the rest.
    ctx.model = None
    release_memory()


def stage_parity_fp32(ctx: ExportContext) -> None:
    served = ctx.args.backend == "python" and ctx.args.precision == "fp32"
    ctx.reports["fp32"] = parity.run_gate(
        "fp32",
        ctx.fixture,
        parity.onnx_runner(ort_session(ctx.fp32_path)),
        "fp32 ONNX graph on ONNX Runtime CPU",
        "served" if served else "proxy: the graph TensorRT or the fp16 conversion starts from",
    )
    _print_gate(ctx.reports["fp32"])
    _require(ctx.reports["fp32"])


def stage_fp16(ctx: ExportContext) -> None:
    """Only the python backend serves ONNX Runtime's fused fp16 graph (TensorRT lowers the fp32
    graph itself), so only it pays for the conversion (14-18 GB of RAM for the real model). Each
    level keeps more in fp32 until the held-out gate passes; every try is recorded."""
    fp16_path = ctx.work / "fp16" / "model.onnx"
    fp16_path.parent.mkdir(parents=True, exist_ok=True)
    calibration = parity.calibration_feeds(ctx.pair_tokenizer)

    def convert(level: int, extra_ops) -> tuple[Fp16Report, dict[str, Any]]:
        report = ctx.log.run(
            "fp16_convert" + _level_suffix(level),
            convert_to_fp16_in_subprocess,
            ctx.fp32_path,
            fp16_path,
            ctx.model_facts["heads"],
            ctx.model_facts["hidden_size"],
            calibration,
            extra_ops,
        )
        ctx.fp16_report = report
        return report, {"kept_fp32_ops": report.kept_fp32_ops}

    _escalate(
        ctx,
        "fp16",
        FP32_ESCALATION,
        convert,
        fp16_path,
        "fused fp16 ONNX graph on ONNX Runtime CPU",
        ctx.fp16_attempts,
        lambda extra_ops: f"converting again with {', '.join(extra_ops)} kept in fp32",
    )
    _require(ctx.reports["fp16"], ctx.fp16_attempts)
    ctx.served_onnx = fp16_path


def _level_suffix(level: int) -> str:
    return f"_level{level}" if level else ""


def _escalate(
    ctx: ExportContext,
    precision: str,
    rungs: Sequence[Any],
    build: Callable[[int, Any], tuple[Any, dict[str, Any]]],
    path: Path,
    description: str,
    attempts: list[dict[str, Any]],
    next_try: Callable[[Any], str],
    extra_metrics: bool = False,
    compositions: parity.Compositions | None = None,
) -> None:
    """Build the lossy graph at each rung (each keeps more in fp32) until the held-out gate passes
    on it or the rungs run out; every try is recorded in `attempts` (manifest.json, parity.json)
    and the last gate result stays in ctx.reports[precision] for _require."""
    for level, rung in enumerate(rungs):
        _, record = build(level, rung)
        gate = ctx.log.run(
            f"parity_{precision}" + _level_suffix(level),
            parity.run_gate,
            precision,
            ctx.fixture,
            parity.onnx_runner(ort_session(path)),
            description,
            "served",
            compositions,
        )
        ctx.reports[precision] = gate
        release_memory()
        record.update(max_abs_logit=gate.max_abs_logit, max_abs_score=gate.max_abs_score)
        if extra_metrics:
            record.update(kendall_tau=gate.kendall_tau, padding_max_abs_logit=gate.padding_max_abs_logit)
        if compositions is not None:
            record.update(worst_composition=gate.worst_composition, compositions=gate.compositions)
        record["passed"] = gate.passed
        attempts.append(record)
        _print_gate(gate)
        if gate.passed or level + 1 == len(rungs):
            break
        print(f"[export] {precision} gate failed; {next_try(rungs[level + 1])}", flush=True)


def served_compositions(spec: RepositorySpec) -> parity.Compositions:
    """The batches the served int8 model can form (export/parity.py, Compositions): its length
    classes' batch sizes, and the Python class model's split rule (the onnxruntime backend runs a
    batch whole, which the `served` composition covers either way)."""
    classes = length_classes(spec.limits)

    def class_batch(length: int) -> int:
        return next((c.max_batch for c in classes if length <= c.max_length), classes[-1].max_batch)

    return parity.Compositions(
        class_batch=class_batch,
        split_cost=split_cost(spec, IN_PROCESS_RUN_S) if spec.backend == "python" else None,
    )


def stage_int8(ctx: ExportContext) -> None:
    """Dynamic int8 (export/int8_quantization.py), gated on the held-out certificate with the int8
    thresholds; each failed rung is followed by one that keeps more in fp32, then the export
    refuses. Every try is recorded (manifest.json `int8.attempts`, parity.json)."""
    int8_path = ctx.work / "int8" / "model.onnx"
    layers = ctx.model_facts["layers"]

    def quantize(level: int, rung) -> tuple[int8_quantization.Int8Report, dict[str, Any]]:
        report = ctx.log.run(
            "int8_quantize" + _level_suffix(level),
            int8_quantization.quantize_int8,
            ctx.fp32_path,
            int8_path,
            layers,
            rung,
        )
        ctx.int8_report = report
        # kept_fp32_ops: the shape _require prints
        return report, {
            "rung": rung.name,
            "kept_fp32_ops": [rung.describe(layers)],
            "quantized_matmuls": report.quantized_matmuls,  # read back from the written graph
            "requested_matmuls": report.requested_matmuls,
        }

    _escalate(
        ctx,
        "int8",
        int8_quantization.INT8_ESCALATION,
        quantize,
        int8_path,
        "dynamic int8 ONNX graph on ONNX Runtime CPU",
        ctx.int8_attempts,
        lambda rung: f"quantizing again with {rung.describe(layers)} kept in fp32",
        extra_metrics=True,
        compositions=served_compositions(ctx.spec),
    )
    # The CPU the gate's numbers were taken on (its int8 kernel decides the error: docs/CPU.md):
    # the certificate carries it beside the bounds, so a serving CPU of another ISA is visible.
    # With the shipped weight type: the kernel that ran, and the chart's int8NodeFeatures that pin
    # CPU pods to nodes running it.
    ctx.fixture["served"]["int8_gate_cpu"] = ctx.int8_gate_cpu = cpu_isa.describe(
        weights_uint8=int8_quantization.shipped_recipe().weights_uint8
    )
    _require(ctx.reports["int8"], ctx.int8_attempts)
    ctx.served_onnx = int8_path


def stage_fp16_weights(ctx: ExportContext) -> None:
    """onnxruntime backend at fp16: serve the fp32 computation with fp16-stored weights (under
    2 GB, one file; what the TensorRT EP rounds to anyway) and gate it with fp16 thresholds."""
    path = ctx.work / "fp16_weights" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_onnx(with_fp16_weights(onnx.load(str(ctx.fp32_path))), path)
    release_memory()
    ctx.reports["fp16"] = parity.run_gate(
        "fp16",
        ctx.fixture,
        parity.onnx_runner(ort_session(path)),
        "fp32 computation with fp16-stored weights on ONNX Runtime CPU",
        "proxy: the graph served, before the TensorRT EP lowers it to fp16 on the GPU",
    )
    _print_gate(ctx.reports["fp16"])
    _require(ctx.reports["fp16"])
    ctx.served_onnx = path


def stage_tensorrt_fp32_layers(ctx: ExportContext) -> None:
    """The layers the plan builders pin to fp32 at each try: normalisations and the final sigmoid
    plus whatever leaves the fp16 range on the calibration texts (measured on this very graph),
    then Softmax, then the MatMuls (tensorrt_build.PLAN_FP32_ESCALATION)."""
    first, *more = tensorrt_fp32_levels(
        ctx.fp32_path, parity.calibration_feeds(ctx.pair_tokenizer), ctx.work, PLAN_FP32_ESCALATION
    )
    ctx.trt_fp32_layers, ctx.trt_fp32_escalation = first, more


def stage_gpu_gate(ctx: ExportContext) -> None:
    """onnxruntime backend: the served graph on the certificate through ONNX Runtime's TensorRT and
    CUDA EPs at each class model's served options (export/gpu_gate.py), where onnxruntime-gpu is
    installed (in this environment, or in the one EXPORT_GPU_GATE_PYTHON names: the exporter
    image's); otherwise recorded as not run, with why. A failed GPU gate fails the export."""
    python = os.environ.get(gpu_gate.GPU_GATE_PYTHON_ENV)
    if python:
        record, result = gpu_gate.run_in(python, ctx.served_onnx, ctx.spec, ctx.fixture, ctx.args.precision, ctx.work)
    else:
        record, result = gpu_gate.run(ctx.served_onnx, ctx.spec, ctx.fixture, ctx.args.precision, ctx.work)
    ctx.gpu_gate = record
    if result is None:
        print(f"[export] {record['reason']}", flush=True)
        return
    ctx.reports["gpu"] = result
    if record["onnxruntime"] != gpu_gate.SERVED_ONNXRUNTIME_VERSION:
        print(
            f"[export] note: the GPU gate ran ONNX Runtime {record['onnxruntime']}; the pods serve "
            f"{gpu_gate.SERVED_ONNXRUNTIME_VERSION} (Triton 24.10): partitioning and tactics may differ",
            flush=True,
        )
    _print_gate(result)
    _require(result)


def plan_build(ctx: ExportContext) -> PlanBuild:
    return PlanBuild(
        limits=ctx.spec.limits,
        precision=ctx.args.precision,
        fp32_layers=tuple(ctx.trt_fp32_layers),
        escalation=tuple(tuple(names) for names in ctx.trt_fp32_escalation),
        geometry=plan_memory.Geometry.of(ctx.model_facts),
        instances=ctx.spec.cross_encoder_instances,
    )


def stage_tensorrt_parser(ctx: ExportContext) -> None:
    """Every node of the graph TensorRT will parse is in its ONNX support matrix at its type."""
    tensorrt_onnx_support.check(ctx.fp32_path if ctx.args.backend == "tensorrt" else ctx.served_onnx)


def stage_tensorrt(ctx: ExportContext) -> None:
    """Build and certify the plan here, before the repository is written: only a certified plan
    is ever placed. TensorRT not importable is an error (TensorRTMissing), never a skip: an
    exporter image whose bindings failed to install must not exit 0 without plans. `--plan-later`
    is the explicit choice of build_plan.sh on the GPU host instead (the stage does not run)."""
    tensorrt = load_tensorrt()
    cache = timing_cache_path(local_device_key(tensorrt.__version__))
    print(f"[export] tensorrt: timing cache {cache}", flush=True)
    ctx.plan = build_and_certify_plan(ctx.fp32_path, ctx.work / "plan", plan_build(ctx), ctx.fixture, cache)


def served_sha256(ctx: ExportContext, digest: str) -> dict[str, str]:
    name = "cross_encoder/tensorrt/model.onnx" if ctx.args.backend == "tensorrt" else ctx.served["file"]
    return {name: digest}


def place_model(ctx: ExportContext, cross_encoder_dir: Path) -> None:
    if ctx.args.backend in ("onnxruntime", "python"):
        copy_onnx(ctx.served_onnx, cross_encoder_dir / "1" / "model.onnx")
        return
    copy_onnx(ctx.fp32_path, cross_encoder_dir / "tensorrt" / "model.onnx")
    write_build_files(cross_encoder_dir / "tensorrt", plan_build(ctx))
    if ctx.plan is not None:  # one certified plan per class model (plan_memory.py: why)
        for model, path in ctx.plan.plans.items():
            (cross_encoder_dir.parent / model / "1").mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, cross_encoder_dir.parent / model / "1" / "model.plan")
    else:
        print(
            "[export] tensorrt: the `tensorrt` package is not importable here, so the class models have "
            "no plan yet (and no version folder): build them on the GPU host with "
            "cross_encoder/tensorrt/build_plan.sh, which certifies every class plan and installs all or none",
            flush=True,
        )


def manifest_of(ctx: ExportContext, served: dict[str, str]) -> dict:
    return {
        "model": {**ctx.model_info, "served_sha256": served, **ctx.model_facts},
        "served": ctx.served,
        "export_args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(ctx.args).items()},
        "limits": asdict(ctx.spec.limits),
        "served_graph": ctx.served_onnx.parent.name,
        "certificate": {
            "file": certificate.FILENAME,
            "pairs": len(ctx.fixture["pairs"]),
            "ranking_passages": len(ctx.fixture["ranking"]["passages"]),
            "languages": ctx.fixture["languages"],
            "noise_floor": ctx.fixture["noise_floor"],
        },
        "tensorrt_fp32_layers": ctx.trt_fp32_layers,
        "tensorrt_plan": tensorrt_plan_manifest(ctx),
        "gpu_gate": ctx.gpu_gate,
        "versions": versions(),
        "stages": ctx.log.stages,
        "fp16": {**asdict(ctx.fp16_report), "attempts": ctx.fp16_attempts} if ctx.fp16_report else None,
        "int8": {**asdict(ctx.int8_report), "attempts": ctx.int8_attempts, "gate_cpu": ctx.int8_gate_cpu}
        if ctx.int8_report
        else None,
    }


def tensorrt_plan_manifest(ctx: ExportContext) -> dict | None:
    """The plan design's memory: measured per class when the plans were built here, else the
    estimate from the geometry (build_plan.sh adds the measured figures and its tries)."""
    if ctx.args.backend != "tensorrt":
        return None
    if ctx.plan is not None:
        return ctx.plan.manifest()
    build = plan_build(ctx)
    return {
        "design": "one plan per length class, one profile each",
        "attempts": [],
        "memory_estimate": [c.to_dict() for c in build.tries()[0].estimate()],
        "memory_budget_bytes": build.memory_budget_bytes,
    }


def stage_repository(ctx: ExportContext) -> None:
    # Hashed once (2.27 GB for the real fp32 graph): the certificate, the manifest and the
    # TensorRT EP's engine-cache key all read this digest.
    digest = model_loading.graph_sha256(ctx.served_onnx)
    ctx.fixture["model"]["served_sha256"] = served_sha256(ctx, digest)
    manifest = manifest_of(ctx, ctx.fixture["model"]["served_sha256"])
    if ctx.args.backend == "onnxruntime" and not ctx.spec.on_cpu:
        ctx.spec = replace(ctx.spec, engine_cache_prefix=engine_cache_prefix(digest))
    parity_doc = {
        "source": manifest["model"],
        "served": ctx.served,
        "export_args": manifest["export_args"],
        "versions": manifest["versions"],
        "noise_floor": ctx.fixture["noise_floor"],
        "gates": {k: v.to_dict() for k, v in ctx.reports.items()},
        "fp16_attempts": ctx.fp16_attempts,
        "int8_attempts": ctx.int8_attempts,
    }
    ctx.repo = write_repository(
        ctx.args.repo, ctx.spec, ctx.tokenizer_dir, lambda d: place_model(ctx, d), manifest, parity_doc, ctx.fixture
    )


def _fp16_for(backend: str) -> Callable[[ExportContext], bool]:
    return lambda ctx: ctx.args.precision == "fp16" and ctx.args.backend == backend


STAGES: list[Stage] = [
    Stage("resolve", stage_resolve),
    Stage("load", stage_load),
    Stage("onnx_fp32", stage_onnx_fp32),
    Stage("certificate", stage_certificate),
    Stage("parity_fp32", stage_parity_fp32),
    Stage("fp16", stage_fp16, _fp16_for("python")),
    Stage("fp16_weights", stage_fp16_weights, _fp16_for("onnxruntime")),
    Stage("int8", stage_int8, lambda ctx: ctx.args.precision == "int8"),
    Stage("tensorrt_fp32_layers", stage_tensorrt_fp32_layers, _fp16_for("tensorrt")),
    Stage(
        "tensorrt_parser",
        stage_tensorrt_parser,
        lambda ctx: ctx.args.backend in ("tensorrt", "onnxruntime") and not ctx.spec.on_cpu,
    ),
    Stage("gpu_gate", stage_gpu_gate, lambda ctx: ctx.args.backend == "onnxruntime" and not ctx.spec.on_cpu),
    Stage("tensorrt", stage_tensorrt, lambda ctx: ctx.args.backend == "tensorrt" and not ctx.args.plan_later),
    Stage("repository", stage_repository),
]


def summary_of(ctx: ExportContext) -> dict:
    return {
        "repository": str(ctx.repo),
        "stages": ctx.log.stages,
        "files_mib": {p.name: round(file_mib(p), 1) for p in (ctx.fp32_path, ctx.served_onnx)},
        "peak_rss_mib": round(peak_rss_mib(), 0),
        "parity": {
            k: {"max_abs_logit": v.max_abs_logit, "max_abs_score": v.max_abs_score, "passed": v.passed}
            for k, v in ctx.reports.items()
        },
    }


def _print_gate(result: parity.ParityResult) -> None:
    status = "PASS" if result.passed else "FAIL"
    print(
        f"[export] parity {result.precision}: {status} max|d logit|={result.max_abs_logit:.2e} "
        f"(bound {result.thresholds['max_abs_logit']:.2e}) max|d score|={result.max_abs_score:.2e} "
        f"padding={result.padding_max_abs_logit:.2e} top10 set={result.top10_same_set} "
        f"tau={result.kendall_tau:.4f} ({result.pairs} held-out pairs, {result.truncated_pairs} truncated)",
        flush=True,
    )


def _require(result: parity.ParityResult, attempts: list[dict] | None = None) -> None:
    if result.passed:
        return
    message = f"parity gate ({result.precision}) failed: " + "; ".join(result.failures)
    if attempts:
        message += (
            "; tried "
            + "; ".join(
                f"[{', '.join(a['kept_fp32_ops'])}] in fp32: max|d logit| {a['max_abs_logit']:.3g}, "
                f"max|d score| {a['max_abs_score']:.3g}"
                for a in attempts
            )
            + f". --precision fp32 exports without {result.precision}"
        )
    raise ParityFailed(message)
