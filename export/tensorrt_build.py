"""TensorRT plan: built in-process when the `tensorrt` package is importable, otherwise by
`cross_encoder/tensorrt/build_plan.sh` (trtexec in the pinned TensorRT container) on the GPU
host. Either way the plan is certified against the repository's certificate BEFORE it is
placed at `cross_encoder/1/model.plan`; a plan that misses a bound is never installed.

A plan is tied to the TensorRT version and GPU it was built on, so it must be built with the
TensorRT of the serving image (docker/Dockerfile pins it) on the GPU model that serves it.

Both builders take the same `PlanBuild`: precision honoured (fp32 builds no fp16 anything),
one optimisation profile per `tensorrt_profiles.Profile`, fp16 plans with the measured fp32
layers pinned by precision constraints, a timing cache in one fixed place reused by every
build, and no inference on made-up inputs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from export import plan_certification, plan_memory
from export.settings import CROSS_ENCODER_INSTANCES, GPU_MEMORY_BUDGET_BYTES, PLAN_WORKSPACE_BYTES, ServingLimits
from export.tensorrt_profiles import (
    LengthClass,
    check_consistency,
    length_classes,
    max_batch_for_length,
    profile_for,
    profiles_for,
)
from export.trt_import import load_tensorrt

# The serving image is nvcr.io/nvidia/tritonserver:24.10-py3 (Triton 2.51.0, TensorRT 10.5.0);
# the TensorRT image of the same release carries trtexec and the same TensorRT. build_plan.sh runs
# in the exporter image built FROM it (docker/Dockerfile target exporter): trtexec, TensorRT
# 10.5.0's Python bindings and Polygraphy pinned by requirements/, so nothing is fetched at build
# time (issue 25 item 9; GPU hosts often have no network).
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:24.10-py3"
EXPORTER_IMAGE = "bge-reranker-exporter:0.1.0"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
# Polygraphy runs the built plan for the certificate (it brings its own CUDA wrapper).
POLYGRAPHY = "polygraphy==0.49.26"
# The timing cache: one file per GPU model, compute capability and TensorRT version, reused by
# every build with that key, like the engine cache. Keyed because a cache from another device is
# handled differently by the two builders: the in-process builder sets it with
# ignore_mismatch=False and fails on it; trtexec passes ignoreMismatch=true and silently reuses
# it. TRT_CACHE_DIR overrides the folder that holds one subfolder per key.
TIMING_CACHE_ENV = "TRT_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/bge-reranker/tensorrt"
TIMING_CACHE_FILE = "timing.cache"
# The same key in build_plan.sh's container (nvidia-smi sees only the GPU passed with --gpus):
# `<name>-sm<compute capability>-trt<TensorRT version>`, every other character a '-'.
TIMING_KEY_SH = (
    "key=\"$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -n1 | sed 's/, */-sm/')"
    "-trt$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || echo unknown)\"; "
    "key=\"$(printf %s \"$key\" | tr -c 'A-Za-z0-9.' '-' | sed 's/^-*//; s/-*$//')\""
)
CONTAINER_TIMING_LINK = "/tmp/timing-cache"
# Layer precision constraints are "prefer": TensorRT keeps the pinned layers fp32 where a kernel
# exists and warns where it fuses them away; "obey" would fail the whole build instead. The
# certificate, checked on the built plan, is what decides.
PRECISION_CONSTRAINTS = "prefer"

# fp16 escalation on the plan path (issue 25 item 8), one definition for both builders: the ONNX
# op types pinned to fp32 at each try, cumulative. A plan that misses its certificate is rebuilt
# with the next level pinned too; every try is recorded; after the last one the export fails.
# Level 0 leaves Softmax to TensorRT: its fused attention kernels take the MatMul-Softmax-MatMul
# pattern as one fp16 kernel (the score matrix never exists in memory), and an fp32 output type
# pinned on the Softmax asks for the [B, heads, S, S] tensor that fusion removes - at 4 x 8,192
# tokens that tensor alone is 17 GB in fp32 (export/plan_memory.py). Whether TensorRT 10.5 fuses
# with or without the pin is only visible on a GPU; the design does not depend on it: levels 1-2
# pin Softmax (then the attention MatMuls) and are estimated unfused, and a level whose estimate
# exceeds the memory budget is skipped (recorded), not built.
PLAN_FP32_ESCALATION: tuple[tuple[str, ...], ...] = (("LayerNormalization", "Sigmoid"), ("Softmax",), ("MatMul",))
UNFUSED_ATTENTION_OPS = ("Softmax", "MatMul")


def layer_matches(pattern: str, layer_name: str) -> bool:
    """trtexec's rule for a --layerPrecisions/--layerOutputTypes key (TensorRT 10.5
    samples/common/sampleUtils.h findPlausible -> matchStringWithOneWildcard): the exact name, or a
    pattern with one '*' standing for any string. The in-process builder pins by this same rule."""
    if "*" not in pattern:
        return pattern == layer_name
    head, tail = pattern.split("*", 1)
    return len(layer_name) >= len(head) + len(tail) and layer_name.startswith(head) and layer_name.endswith(tail)


def pinned_layers(layer_names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """The layers both builders pin for `patterns` (exact ONNX node names: TensorRT's ONNX parser
    gives a node's first layer the node's name; layers it adds for the same node get other names
    and are pinned by neither builder)."""
    return [name for name in layer_names if any(layer_matches(p, name) for p in patterns)]


@dataclass(frozen=True)
class PlanBuild:
    limits: ServingLimits
    precision: str = "fp16"  # fp32: no fp16 flag, no fp16 anything
    fp32_layers: tuple[str, ...] = ()  # ONNX node names kept fp32 in an fp16 plan (this try's)
    # Names each further try pins on top (PLAN_FP32_ESCALATION levels 1..): tried in order when
    # the certificate fails.
    escalation: tuple[tuple[str, ...], ...] = ()
    workspace_bytes: int = PLAN_WORKSPACE_BYTES
    geometry: plan_memory.Geometry | None = None  # the model's, for the memory estimate
    instances: int = CROSS_ENCODER_INSTANCES
    memory_budget_bytes: int = GPU_MEMORY_BUDGET_BYTES
    level: int = 0
    level_ops: tuple[str, ...] = field(default=PLAN_FP32_ESCALATION[0])

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        bad = [n for level in (self.fp32_layers, *self.escalation) for n in level if "," in n or ":" in n]
        if bad:
            raise ValueError(f"layer names with ',' or ':' cannot be passed to trtexec: {bad}")
        problems = check_consistency(self.limits, profiles_for(self.limits))
        if problems:
            raise ValueError("; ".join(problems))

    def tries(self) -> list[PlanBuild]:
        """This build, then one per escalation level, each pinning its own and every earlier
        level's names. An fp32 plan has one try (nothing to pin)."""
        if self.precision == "fp32":
            return [replace(self, fp32_layers=(), escalation=())]
        builds, names, ops = [], tuple(self.fp32_layers), tuple(self.level_ops)
        for level, extra in enumerate(((), *self.escalation)):
            names = names + tuple(n for n in extra if n not in names)
            if level:
                ops = ops + PLAN_FP32_ESCALATION[min(level, len(PLAN_FP32_ESCALATION) - 1)]
            builds.append(replace(self, fp32_layers=names, escalation=(), level=level, level_ops=ops))
        return builds

    @property
    def attention_fused(self) -> bool:
        """What the memory estimate assumes: fused unless Softmax or MatMul is pinned."""
        return not any(op in self.level_ops for op in UNFUSED_ATTENTION_OPS)

    def estimate(self) -> list[plan_memory.ClassMemory]:
        geometry = self.geometry or plan_memory.REAL_GEOMETRY
        return plan_memory.estimate(
            self.limits,
            geometry,
            precision=self.precision,
            fused_attention=self.attention_fused,
            softmax_fp32="Softmax" in self.level_ops or self.precision == "fp32",
            instances=self.instances,
            workspace_bytes=self.workspace_bytes,
        )


def device_key(name: str, compute_capability: str, trt_version: str) -> str:
    """`<name>-sm<cc>-trt<version>` with every character outside [A-Za-z0-9.] a '-' (TIMING_KEY_SH)."""
    return re.sub(r"[^A-Za-z0-9.]", "-", f"{name}-sm{compute_capability}-trt{trt_version}").strip("-")


def local_device_key(trt_version: str) -> str:
    """This machine's first visible GPU (CUDA_VISIBLE_DEVICES applies to nvidia-smi's view only
    through -i; the exporter runs in a container given one GPU)."""
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()[0]
        name, capability = (part.strip() for part in line.split(",", 1))
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        name, capability = "unknown-gpu", "unknown"
    return device_key(name, capability, trt_version)


def timing_cache_path(key: str) -> Path:
    return Path(os.environ.get(TIMING_CACHE_ENV, DEFAULT_CACHE_DIR)).expanduser() / key / TIMING_CACHE_FILE


def trtexec_command(
    onnx_path: str, plan_path: str, build: PlanBuild, timing_cache: str, length_class: LengthClass
) -> list[str]:
    """One class's plan: one optimisation profile, the class's own shapes (plan_memory.py: why)."""
    cmd = [
        TRTEXEC,
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        f"--memPoolSize=workspace:{build.workspace_bytes >> 20}M",
        f"--timingCacheFile={timing_cache}",
        # Build only: trtexec's own inference would feed random INT64 ids (negative ones too)
        # into the embedding; the certificate runs real token ids instead.
        "--skipInference",
        "--inputIOFormats=int64:chw,int64:chw",
        "--outputIOFormats=fp32:chw,fp32:chw",
    ]
    if build.precision == "fp16":
        cmd.append("--fp16")
        if build.fp32_layers:
            # The same patterns the in-process builder matches with layer_matches (trtexec's rule).
            cmd += [
                f"--precisionConstraints={PRECISION_CONSTRAINTS}",
                "--layerPrecisions=" + ",".join(f"{name}:fp32" for name in build.fp32_layers),
                "--layerOutputTypes=" + ",".join(f"{name}:fp32" for name in build.fp32_layers),
            ]
    # trtexec 10.5: a profile is `--profile=N` followed by its own three shape flags.
    profile = profile_for(length_class)
    cmd += [
        "--profile=0",
        f"--minShapes={profile.shapes('min')}",
        f"--optShapes={profile.shapes('opt')}",
        f"--maxShapes={profile.shapes('max')}",
    ]
    return cmd


def _staging(model: str) -> str:
    return f"/repo/cross_encoder/tensorrt/{model}.plan.staging"


def write_build_files(folder: Path, build: PlanBuild) -> Path:
    """`build_plan.sh` plus what it runs in the container: the certification script and the
    comparison module it imports (copied from the sources, not rewritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in plan_certification.shipped_files():
        shutil.copy2(source, folder / name)
    classes = length_classes(build.limits)
    tries = build.tries()
    functions = []
    for attempt in tries:
        steps = [
            " ".join(
                shlex.quote(a)
                for a in trtexec_command(
                    "/repo/cross_encoder/tensorrt/model.onnx",
                    _staging(c.model),
                    attempt,
                    f"{CONTAINER_TIMING_LINK}/{TIMING_CACHE_FILE}",
                    c,
                )
            )
            for c in classes
        ]
        certify_cmd = [
            "python3",
            "/repo/cross_encoder/tensorrt/certify_plan.py",
            *[arg for c in classes for arg in ("--plan", f"{c.model}={_staging(c.model)}")],
            "--fixture",
            "/repo/certificate.json",
            "--precision",
            attempt.precision,
            "--max-batch",
            ",".join(
                f"{b}:{max_batch_for_length(build.limits, profiles_for(build.limits), b)}" for b in build.limits.buckets
            ),
            "--install-root",
            "/repo",
            "--level",
            str(attempt.level),
            "--pinned",
            str(len(attempt.fp32_layers)),
            "--instances",
            str(build.instances),
            "--memory-budget",
            str(build.memory_budget_bytes),
            "--manifest",
            "/repo/manifest.json",
        ]
        functions.append(
            f"try_{attempt.level}() {{  # fp32 pinned: {', '.join(attempt.level_ops) or 'nothing'}\n  "
            + " && \\\n  ".join(steps + [" ".join(shlex.quote(a) for a in certify_cmd)])
            + "\n}\n"
        )
    levels = " ".join(str(t.level) for t in tries)
    inner = (
        f'{TIMING_KEY_SH}; mkdir -p "/cache/$key" && ln -sfn "/cache/$key" {CONTAINER_TIMING_LINK} && '
        f'echo "timing cache /cache/$key" && '
        # Nothing is fetched at build time (GPU hosts often have no network): the image must bring
        # Polygraphy (the exporter image does: requirements pin it).
        "{ python3 -c 'import polygraphy' 2>/dev/null || { echo \"error: polygraphy is not installed in "
        f"$TENSORRT_IMAGE_NAME; use an image that has it (the exporter image {EXPORTER_IMAGE} pins "
        f'{POLYGRAPHY})" >&2; exit 3; }}; }} && '
        f"source /repo/cross_encoder/tensorrt/build_tries.sh && for level in {levels}; do "
        'if "try_$level"; then exit 0; fi; echo "plan try $level failed its certificate or memory budget" >&2; '
        "done; exit 1"
    )
    (folder / "build_tries.sh").write_text(
        "# One function per try (build_plan.sh runs them in order until one passes), generated by\n"
        "# export/tensorrt_build.py from PLAN_FP32_ESCALATION: each builds one plan per length class\n"
        "# (one profile each) to staging files, then certifies them all; certify_plan.py installs all\n"
        "# of them into <class model>/1/model.plan, or none.\n" + "\n".join(functions)
    )
    script = folder / "build_plan.sh"
    script.write_text(f"""#!/usr/bin/env bash
# Builds one plan per length class ({", ".join(c.model for c in classes)}) from tensorrt/model.onnx
# with the TensorRT release of the serving image (Triton 24.10 = TensorRT 10.5.0), on this
# machine's GPU: a plan only runs on the TensorRT version and GPU model it was built with. The
# plans are built to staging files, certified together against ../../certificate.json (held-out
# pairs, fp32 PyTorch logits) and their device memory checked against the budget; only then is
# each moved into <class model>/1/model.plan. A failed try is rebuilt with more layers pinned to
# fp32 (build_tries.sh); when every try fails the script exits 1 and no class folder changes.
# Precision: {build.precision}. Timing cache: $TRT_CACHE_DIR/<GPU>-sm<cc>-trt<version>/ (default
# {DEFAULT_CACHE_DIR}). GPU: $GPU (default device=0). Image: $TENSORRT_IMAGE.
# Run from anywhere: bash {script.name}
set -euo pipefail
repo="$(cd "$(dirname "${{BASH_SOURCE[0]}}")/../.." && pwd)"
cache="${{{TIMING_CACHE_ENV}:-${{HOME}}/{DEFAULT_CACHE_DIR[2:]}}}"
mkdir -p "$cache"
image="${{TENSORRT_IMAGE:-{EXPORTER_IMAGE}}}"
# One build at a time per cache (issue 25 item 5): a second build_plan.sh on this host waits here
# instead of building the same plans and writing the same timing cache at the same time.
exec 9>"$cache/.build_plan.lock"
flock 9
${{DOCKER:-docker}} run --rm --gpus "${{GPU:-device=0}}" --user "$(id -u):$(id -g)" -e HOME=/tmp \\
  -e TENSORRT_IMAGE_NAME="$image" -v "$repo:/repo" -v "$cache:/cache" --entrypoint bash "$image" \\
  -c {shlex.quote(inner)}
echo "certified plans installed: $repo/<class model>/1/model.plan"
""")
    script.chmod(0o755)
    return script


def _checked(ok, what: str):
    """TensorRT's API reports many failures by return value, not by exception."""
    if ok is None or ok is False or (isinstance(ok, int) and not isinstance(ok, bool) and ok < 0):
        raise RuntimeError(f"TensorRT: {what} failed")
    return ok


def build_serialized_plan(
    onnx_path: Path, build: PlanBuild, timing_cache: Path, length_class: LengthClass, trt=None
) -> bytes:
    """One class's plan in-process with TensorRT's Python API; every call that can fail is checked."""
    if trt is None:
        trt = load_tensorrt()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _checked(builder.create_network(0), "create_network")  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT could not parse the ONNX: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, build.workspace_bytes)
    if build.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _pin_fp32_layers(trt, network, build.fp32_layers)
        if pinned:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    cache_bytes = timing_cache.read_bytes() if timing_cache.exists() else b""
    cache = _checked(config.create_timing_cache(cache_bytes), "create_timing_cache")
    _checked(config.set_timing_cache(cache, ignore_mismatch=False), "set_timing_cache")
    profile = profile_for(length_class)
    trt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        trt_profile.set_shape(network.get_input(i).name, profile.min_shape, profile.opt_shape, profile.max_shape)
    _checked(config.add_optimization_profile(trt_profile), f"add_optimization_profile({profile.name})")
    serialized = _checked(builder.build_serialized_network(network, config), "build_serialized_network")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def context_memory_bytes(serialized: bytes, trt=None) -> int:
    """Device memory of an execution context on the plan's only profile, as TensorRT reports it
    (ICudaEngine.get_device_memory_size_for_profile_v2, TensorRT >= 10.1: NVIDIA/TensorRT
    release/10.5 python/src/infer/pyCore.cpp). Needs the GPU the plan was built for."""
    if trt is None:
        trt = load_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = _checked(runtime.deserialize_cuda_engine(serialized), "deserialize_cuda_engine")
    return int(_checked(engine.get_device_memory_size_for_profile_v2(0), "get_device_memory_size_for_profile_v2"))


def _pin_fp32_layers(trt, network, names: tuple[str, ...]) -> int:
    """Pin the layers `pinned_layers` picks (trtexec's matching rule) to fp32 compute and output.
    Returns how many layers were pinned."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    chosen = set(pinned_layers([layer.name for layer in layers], names))
    for layer in layers:
        if layer.name in chosen:
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
    if names and not chosen:
        raise RuntimeError(f"none of the {len(names)} fp32 layers was found in the parsed network")
    return len(chosen)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class PlanResult:
    plans: dict[str, Path]  # class model -> certified plan (staged beside the work files)
    attempts: list[dict]
    memory: list[dict]

    def manifest(self) -> dict:
        return {
            "design": "one plan per length class, one profile each",
            "attempts": self.attempts,
            "memory": self.memory,
        }


def build_and_certify_plan(
    onnx_path: Path, out_dir: Path, build: PlanBuild, fixture: dict, timing_cache: Path, trt=None, runner_factory=None
) -> PlanResult:
    """Build every class's plan, check their measured memory against the budget and certify them
    together; on a miss, rebuild with the next escalation level pinned. Plans reach `out_dir` only
    from a passing try. Raises PlanRejected naming every try when none passes."""
    factory = runner_factory or plan_certification.polygraphy_runner
    classes = length_classes(build.limits)
    attempts: list[dict] = []
    for attempt in build.tries():
        estimated = attempt.estimate()
        record: dict = {
            "level": attempt.level,
            "fp32_ops": list(attempt.level_ops) if attempt.precision == "fp16" else [],
            "pinned_layers": len(attempt.fp32_layers),
            "estimated_bytes": sum(c.total_bytes for c in estimated),
        }
        attempts.append(record)
        plans = {c.model: build_serialized_plan(onnx_path, attempt, timing_cache, c, trt) for c in classes}
        measured = [
            plan_memory.measured_class(e, len(plans[e.model]), context_memory_bytes(plans[e.model], trt))
            for e in estimated
        ]
        record["measured_bytes"] = sum(c.total_bytes for c in measured)
        problem = plan_memory.over_budget(measured, build.memory_budget_bytes)
        if problem:
            record.update(passed=False, failures=[problem])
            print(f"[plan] try {attempt.level}: {problem}", flush=True)
            continue
        with factory(plans) as run:
            report = plan_certification.certify_plan(
                fixture, run, attempt.precision, lambda length: max_batch_for_length(build.limits, [], length)
            )
        print(f"[plan] try {attempt.level} ({', '.join(record['fp32_ops']) or 'fp32'}): {report.summary()}", flush=True)
        record.update(
            passed=report.passed,
            failures=list(report.failures),
            max_abs_logit=report.max_abs_logit,
            max_abs_score=report.max_abs_score,
        )
        if report.passed:
            out_dir.mkdir(parents=True, exist_ok=True)
            paths = {}
            for model, data in plans.items():
                paths[model] = out_dir / f"{model}.plan"
                _write_atomically(paths[model], data)
            return PlanResult(paths, attempts, [c.to_dict() for c in measured])
    raise plan_certification.PlanRejected(
        "no plan passed; tried "
        + "; ".join(
            f"level {a['level']} (fp32: {', '.join(a['fp32_ops']) or 'all'}): {'; '.join(a['failures'])}"
            for a in attempts
        )
        + ". --precision fp32 exports without fp16"
    )
