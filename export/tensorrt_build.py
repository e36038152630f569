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
from dataclasses import dataclass
from pathlib import Path

from export import plan_certification
from export.settings import TENSORRT_WORKSPACE_BYTES, ServingLimits
from export.tensorrt_profiles import check_consistency, length_classes, max_batch_for_length, profiles_for

# The serving image is nvcr.io/nvidia/tritonserver:24.10-py3 (Triton 2.51.0, TensorRT 10.5.0);
# the TensorRT image of the same release carries trtexec and the same TensorRT.
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:24.10-py3"
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


@dataclass(frozen=True)
class PlanBuild:
    limits: ServingLimits
    precision: str = "fp16"  # fp32: no fp16 flag, no fp16 anything
    fp32_layers: tuple[str, ...] = ()  # ONNX node names kept fp32 in an fp16 plan
    workspace_bytes: int = TENSORRT_WORKSPACE_BYTES

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        bad = [n for n in self.fp32_layers if "," in n or ":" in n]
        if bad:
            raise ValueError(f"layer names with ',' or ':' cannot be passed to trtexec: {bad}")
        problems = check_consistency(self.limits, profiles_for(self.limits))
        if problems:
            raise ValueError("; ".join(problems))


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


def trtexec_command(onnx_path: str, plan_path: str, build: PlanBuild, timing_cache: str) -> list[str]:
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
            cmd += [
                f"--precisionConstraints={PRECISION_CONSTRAINTS}",
                "--layerPrecisions=" + ",".join(f"{name}:fp32" for name in build.fp32_layers),
                "--layerOutputTypes=" + ",".join(f"{name}:fp32" for name in build.fp32_layers),
            ]
    # trtexec 10.5: each profile is `--profile=N` followed by its own three shape flags; shape
    # flags repeated without --profile are rejected.
    for index, profile in enumerate(profiles_for(build.limits)):
        cmd += [
            f"--profile={index}",
            f"--minShapes={profile.shapes('min')}",
            f"--optShapes={profile.shapes('opt')}",
            f"--maxShapes={profile.shapes('max')}",
        ]
    return cmd


def write_build_files(folder: Path, build: PlanBuild) -> Path:
    """`build_plan.sh` plus what it runs in the container: the certification script and the
    comparison module it imports (copied from the sources, not rewritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in plan_certification.shipped_files():
        shutil.copy2(source, folder / name)
    staging = "/repo/cross_encoder/tensorrt/model.plan.staging"
    build_cmd = trtexec_command(
        "/repo/cross_encoder/tensorrt/model.onnx", staging, build, f"{CONTAINER_TIMING_LINK}/{TIMING_CACHE_FILE}"
    )
    certify_cmd = [
        "python3",
        "/repo/cross_encoder/tensorrt/certify_plan.py",
        "--plan",
        staging,
        "--fixture",
        "/repo/certificate.json",
        "--precision",
        build.precision,
        "--max-batch",
        ",".join(
            f"{b}:{max_batch_for_length(build.limits, profiles_for(build.limits), b)}" for b in build.limits.buckets
        ),
        "--install",
        "/repo/cross_encoder/1/model.plan",
    ]
    inner = (
        f'{TIMING_KEY_SH}; mkdir -p "/cache/$key" && ln -sfn "/cache/$key" {CONTAINER_TIMING_LINK} && '
        f'echo "timing cache /cache/$key" && '
        f"{' '.join(shlex.quote(a) for a in build_cmd)} && "
        f"(python3 -c 'import polygraphy' 2>/dev/null || pip install --quiet --user {POLYGRAPHY}) && "
        f"{' '.join(shlex.quote(a) for a in certify_cmd)}"
    )
    # Every other length-class model serves the same plan with its own profile.
    links = "".join(
        f'ln -f "$repo/cross_encoder/1/model.plan" "$repo/{c.model}/1/model.plan" 2>/dev/null || '
        f'cp "$repo/cross_encoder/1/model.plan" "$repo/{c.model}/1/model.plan"\n'
        for c in length_classes(build.limits)[1:]
    )
    script = folder / "build_plan.sh"
    script.write_text(f"""#!/usr/bin/env bash
# Builds cross_encoder/1/model.plan from tensorrt/model.onnx with the TensorRT release of the
# serving image (Triton 24.10 = TensorRT 10.5.0), on this machine's GPU: a plan only runs on the
# TensorRT version and GPU model it was built with. The plan is built to a staging file,
# certified against ../../certificate.json (held-out pairs, fp32 PyTorch logits) and moved into
# place only if it passes; otherwise the script exits 1 and 1/model.plan is left as it was.
# Precision: {build.precision}. Timing cache: $TRT_CACHE_DIR/<GPU>-sm<cc>-trt<version>/ (default
# {DEFAULT_CACHE_DIR}), reused by every build for that GPU model and TensorRT version.
# Run from anywhere: bash {script.name}
set -euo pipefail
repo="$(cd "$(dirname "${{BASH_SOURCE[0]}}")/../.." && pwd)"
cache="${{{TIMING_CACHE_ENV}:-${{HOME}}/{DEFAULT_CACHE_DIR[2:]}}}"
mkdir -p "$repo/cross_encoder/1" "$cache"
image="${{TENSORRT_IMAGE:-{TENSORRT_IMAGE}}}"
# Files come out owned by the caller, not root; HOME for pip's --user install of polygraphy.
docker run --rm --gpus "${{GPU:-device=0}}" --user "$(id -u):$(id -g)" -e HOME=/tmp \\
  -v "$repo:/repo" -v "$cache:/cache" "$image" bash -c {shlex.quote(inner)}
{links}echo "certified plan installed at $repo/cross_encoder/1/model.plan"
""")
    script.chmod(0o755)
    return script


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _checked(ok, what: str):
    """TensorRT's API reports many failures by return value, not by exception."""
    if ok is None or ok is False or (isinstance(ok, int) and not isinstance(ok, bool) and ok < 0):
        raise RuntimeError(f"TensorRT: {what} failed")
    return ok


def build_serialized_plan(onnx_path: Path, build: PlanBuild, timing_cache: Path, trt=None) -> bytes:
    """The plan in-process with TensorRT's Python API; every call that can fail is checked."""
    if trt is None:
        import tensorrt

        trt = tensorrt

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
    for profile in profiles_for(build.limits):
        trt_profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            trt_profile.set_shape(name, profile.min_shape, profile.opt_shape, profile.max_shape)
        _checked(config.add_optimization_profile(trt_profile), f"add_optimization_profile({profile.name})")
    serialized = _checked(builder.build_serialized_network(network, config), "build_serialized_network")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _pin_fp32_layers(trt, network, names: tuple[str, ...]) -> int:
    """Layers named after the ONNX nodes (the parser names a node's first layer exactly after it,
    further layers `<name>_<n>`) run and output fp32. Returns how many layers were pinned."""
    wanted = set(names)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        base = layer.name.rsplit("_", 1)[0] if layer.name.rsplit("_", 1)[-1].isdigit() else layer.name
        if layer.name in wanted or base in wanted:
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
            pinned += 1
    if names and not pinned:
        raise RuntimeError(f"none of the {len(names)} fp32 layers was found in the parsed network")
    return pinned


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_and_certify_plan(
    onnx_path: Path, plan_path: Path, build: PlanBuild, fixture: dict, timing_cache: Path, trt=None, runner_factory=None
) -> Path:
    """Build, certify, then place: the plan reaches `plan_path` only if the certificate passes."""
    serialized = build_serialized_plan(onnx_path, build, timing_cache, trt)
    factory = runner_factory or plan_certification.polygraphy_runner
    profiles = profiles_for(build.limits)
    with factory(serialized) as run:
        report = plan_certification.certify_plan(
            fixture, run, build.precision, lambda length: max_batch_for_length(build.limits, profiles, length)
        )
    print(report.summary(), flush=True)
    staging = plan_path.with_name(plan_path.name + ".staging")
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(serialized)
    plan_certification.install(staging, plan_path, report)
    return plan_path
