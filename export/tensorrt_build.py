"""TensorRT plan: built here when the `tensorrt` package is importable, otherwise a script
that builds the same plan with trtexec inside the pinned Triton container on the target GPU.

A plan is tied to the TensorRT version and GPU it was built on, so it must be built with the
TensorRT of the serving image (docker/Dockerfile pins it) on the GPU that serves it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from export.settings import ServingLimits
from export.tensorrt_profiles import check_consistency, profiles_for

# The serving image is nvcr.io/nvidia/tritonserver:24.10-py3 (Triton 2.51.0, TensorRT 10.5.0);
# the TensorRT image of the same release carries trtexec and the same TensorRT.
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:24.10-py3"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def trtexec_command(onnx_path: str, plan_path: str, limits: ServingLimits, workspace_mib: int,
                    timing_cache: str) -> list[str]:
    profiles = profiles_for(limits)
    cmd = [TRTEXEC, f"--onnx={onnx_path}", f"--saveEngine={plan_path}", "--fp16",
           f"--memPoolSize=workspace:{workspace_mib}M", f"--timingCacheFile={timing_cache}",
           # LayerNorm/softmax accumulate in fp32 in TensorRT 10's normalisation kernels;
           # keeping the graph IO fp32 matches the ONNX contract.
           "--inputIOFormats=int64:chw,int64:chw", "--outputIOFormats=fp32:chw,fp32:chw"]
    for profile in profiles:
        cmd += [f"--minShapes={profile.shapes('min')}", f"--optShapes={profile.shapes('opt')}",
                f"--maxShapes={profile.shapes('max')}"]
    return cmd


def write_build_script(folder: Path, limits: ServingLimits, workspace_mib: int = 8192) -> Path:
    """`build_plan.sh`: run on the GPU host; writes ../1/model.plan next to this folder."""
    problems = check_consistency(limits, profiles_for(limits))
    if problems:
        raise ValueError("; ".join(problems))
    inner = trtexec_command("/work/tensorrt/model.onnx", "/work/1/model.plan", limits, workspace_mib,
                            "/work/tensorrt/timing.cache")
    script = folder / "build_plan.sh"
    script.write_text(f"""#!/usr/bin/env bash
# Builds cross_encoder/1/model.plan from tensorrt/model.onnx with the TensorRT release of the
# serving image (Triton 24.10 = TensorRT 10.5.0), on this machine's GPU: a plan only runs on
# the TensorRT version and GPU model it was built with. Run from anywhere: bash {script.name}
set -euo pipefail
here="$(cd "$(dirname "${{BASH_SOURCE[0]}}")/.." && pwd)"
mkdir -p "$here/1"
image="${{TENSORRT_IMAGE:-{TENSORRT_IMAGE}}}"
docker run --rm --gpus "${{GPU:-device=0}}" -v "$here:/work" "$image" \\
  {' '.join(shlex.quote(a) for a in inner)}
echo "plan written to $here/1/model.plan"
""")
    script.chmod(0o755)
    return script


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def build_plan(onnx_path: Path, plan_path: Path, limits: ServingLimits, workspace_bytes: int,
               timing_cache: Path) -> Path:
    """Build the plan in-process with TensorRT's Python API (fp16, two profiles)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT could not parse the ONNX: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    cache_bytes = timing_cache.read_bytes() if timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    for profile in profiles_for(limits):
        trt_profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            trt_profile.set_shape(name, profile.min_shape, profile.opt_shape, profile.max_shape)
        config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine")
    plan_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path
