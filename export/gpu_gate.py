"""The export's GPU gate (issue 25 item 10): where `onnxruntime-gpu` is installed and sees a GPU, the
served graph is scored on the certificate through ONNX Runtime's TensorRT and CUDA EPs with the
session options and provider options Triton's onnxruntime backend derives from each class model's
generated config, so the fp16 numerics of the engine TensorRT builds are certified at export as
well as at pod start (docker/self_certify.py). Where it is absent (this machine, CI) the gate says
so, is recorded as not run, and the export goes on.

The mapping is the backend's (onnxruntime_backend r24.10, src/onnxruntime.cc):
- session options: served_session.session_options (graph level from `optimization.graph.level`,
  lines 217-237; `intra_op_thread_count`);
- TensorRT EP first (lines 440-705): `precision_mode` FP16 -> `trt_fp16_enable=1` (454-468), FP32 ->
  nothing; `max_workspace_size_bytes` -> `trt_max_workspace_size` (469-475); every other
  `trt_*` parameter passes under its own name (e.g. 520-535, 636-647);
- then the CUDA EP with its defaults plus `device_id`, `do_copy_in_default_stream=1` and
  `arena_extend_strategy=kNextPowerOfTwo` (lines 755-862);
- ONNX Runtime places a node neither takes on the CPU.
The engine and timing caches go to the gate's own folder, never the pod's cache path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from export import parity
from export.onnx_export import INPUT_NAMES, OUTPUT_NAMES
from export.served_session import session_options
from export.settings import ServingLimits
from export.tensorrt_profiles import LengthClass, class_for_length, length_classes
from export.triton_config import RepositorySpec, cross_encoder_config

# The ONNX Runtime Triton 24.10's onnxruntime backend is built with (triton-inference-server/server
# r24.10 build.py, TRITON_VERSION_MAP "2.51.0": ORT "1.19.2"): the exporter image installs
# onnxruntime-gpu at this version (requirements/export.txt), so the gate partitions the graph and
# builds the engine with the pods' ONNX Runtime; another version is named in the gate's record.
SERVED_ONNXRUNTIME_VERSION = "1.19.2"
# The exporter image keeps onnxruntime-gpu in an environment of its own (requirements/gpu-gate.txt):
# the export's other stages run the CPU onnxruntime the tests ran (the two wheels install one
# `onnxruntime` module and cannot share an environment, and ONNX Runtime 1.19.2's transformers
# optimizer and fp16 kernels give other numerics: the tiny stand-in's fp16 export fails its gate on
# it). Where this variable names that environment's python, the gate runs there (run_in).
GPU_GATE_PYTHON_ENV = "EXPORT_GPU_GATE_PYTHON"
TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CUDA_DEFAULTS = {"device_id": "0", "do_copy_in_default_stream": "1", "arena_extend_strategy": "kNextPowerOfTwo"}
CACHE_PATH_KEYS = ("trt_engine_cache_path", "trt_timing_cache_path")


class GpuGateError(RuntimeError):
    """The GPU gate could not score the served graph as served (an EP missing from the session)."""


def accelerator_parameters(config: mc.ModelConfig) -> dict[str, str]:
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if accelerator.name == "tensorrt":
            return dict(accelerator.parameters)
    raise GpuGateError(f"{config.name}: no TensorRT accelerator in its config")


def provider_options(config: mc.ModelConfig, cache_dir: Path, device_id: int = 0) -> list[tuple[str, dict[str, str]]]:
    """[(TensorRT EP, its options), (CUDA EP, its options)] as the backend builds them from `config`."""
    trt: dict[str, str] = {}
    for key, value in accelerator_parameters(config).items():
        if key == "precision_mode":
            if value == "FP16":
                trt["trt_fp16_enable"] = "1"
            elif value != "FP32":
                raise GpuGateError(f"{config.name}: precision_mode {value!r} is not served here")
        elif key == "max_workspace_size_bytes":
            trt["trt_max_workspace_size"] = value
        else:
            trt[key] = value
    for key in CACHE_PATH_KEYS:
        if key in trt:
            trt[key] = str(cache_dir)
    trt["device_id"] = str(device_id)
    return [(TENSORRT_EP, trt), (CUDA_EP, {**CUDA_DEFAULTS, "device_id": str(device_id)})]


def load_ort():
    """The ONNX Runtime the gate uses (onnxruntime-gpu where installed; one module name for both)."""
    import onnxruntime

    return onnxruntime


def unavailable_reason(ort) -> str:
    """'' when this ONNX Runtime has both GPU EPs; otherwise what the export prints and records."""
    available = list(ort.get_available_providers())
    missing = [ep for ep in (TENSORRT_EP, CUDA_EP) if ep not in available]
    if not missing:
        return ""
    return (
        f"GPU gate not run: this ONNX Runtime ({getattr(ort, '__version__', '?')}, providers {available}) lacks "
        f"{', '.join(missing)}; install onnxruntime-gpu on a GPU host to certify the TensorRT EP's engine at "
        "export. Each pod still certifies its own engine at start (docs/GPU.md)."
    )


def class_sessions(graph: Path, configs: dict[LengthClass, mc.ModelConfig], cache_dir: Path, ort) -> dict:
    """One session per class model, each at its config's session and provider options; refuses a
    session in which the TensorRT EP is not the first provider (a silent CUDA-EP fallback)."""
    sessions = {}
    for length_class, config in configs.items():
        providers = provider_options(config, cache_dir)
        session = ort.InferenceSession(
            str(graph),
            sess_options=session_options(config),
            providers=[name for name, _ in providers],
            provider_options=[options for _, options in providers],
        )
        taken = list(session.get_providers())
        if not taken or taken[0] != TENSORRT_EP:
            raise GpuGateError(
                f"{length_class.model}: the session runs on {taken}, not the TensorRT EP first: TensorRT did not "
                "take the graph (see ONNX Runtime's log); the served model would run on the CUDA EP in fp32"
            )
        sessions[length_class] = session
    return sessions


def runner(sessions: dict, input_names: tuple[str, ...], output_name: str):
    """run(input_ids, attention_mask) -> logits on the session of the class a batch's length
    belongs to (as the length router sends it)."""
    classes = sorted(sessions, key=lambda c: c.max_length)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        session = sessions[class_for_length(classes, input_ids.shape[1])]
        (logit,) = session.run([output_name], dict(zip(input_names, (input_ids, attention_mask))))
        return np.asarray(logit).reshape(-1)

    return run


def run(graph: Path, spec: RepositorySpec, fixture: dict, precision: str, work: Path, ort=None):
    """(record for the manifest, parity.ParityResult or None when the gate could not run here)."""
    ort = load_ort() if ort is None else ort
    reason = unavailable_reason(ort)
    if reason:
        return {"ran": False, "reason": reason}, None
    configs = {c: cross_encoder_config(spec, c) for c in length_classes(spec.limits)}
    cache = Path(tempfile.mkdtemp(prefix="gpu-gate-", dir=work))
    try:
        sessions = class_sessions(graph, configs, cache, ort)
        result = parity.run_gate(
            precision,
            fixture,
            runner(sessions, INPUT_NAMES, OUTPUT_NAMES[0]),
            "served graph on ONNX Runtime's TensorRT EP (CUDA EP after it), served session options, GPU",
            "served: the engine the TensorRT EP builds from the served graph, on this export host's GPU",
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    record = {
        "ran": True,
        "passed": result.passed,
        "providers": [TENSORRT_EP, CUDA_EP],
        "onnxruntime": str(getattr(ort, "__version__", "?")),
    }
    return record, result


def _spec_from_dict(data: dict) -> RepositorySpec:
    return RepositorySpec(
        **{**data, "limits": ServingLimits(**data["limits"]), "model_geometry": tuple(data["model_geometry"])}
    )


def run_in(python: str, graph: Path, spec: RepositorySpec, fixture: dict, precision: str, work: Path):
    """run() in another environment's interpreter (the exporter image's onnxruntime-gpu one): the
    request and the answer travel as JSON files. A gate that cannot start there fails the export."""
    folder = Path(tempfile.mkdtemp(prefix="gpu-gate-call-", dir=work))
    request = {
        "graph": str(graph),
        "spec": asdict(spec),
        "fixture": fixture,
        "precision": precision,
        "work": str(folder),
    }
    (folder / "request.json").write_text(json.dumps(request))
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(
            [python, "-m", "export.gpu_gate", str(folder / "request.json"), str(folder / "answer.json")],
            cwd=root,
            env=env,
        )
        if proc.returncode != 0:
            raise GpuGateError(f"the GPU gate exited {proc.returncode} in {python} (its output is above)")
        answer = json.loads((folder / "answer.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = answer["report"]
    return answer["record"], (parity.ParityResult(**report) if report is not None else None)


def main(argv: list[str] | None = None) -> int:
    """python -m export.gpu_gate REQUEST.json ANSWER.json (run_in's other side)."""
    request_path, answer_path = argv if argv is not None else sys.argv[1:]
    request = json.loads(Path(request_path).read_text())
    record, result = run(
        Path(request["graph"]),
        _spec_from_dict(request["spec"]),
        request["fixture"],
        request["precision"],
        Path(request["work"]),
    )
    answer = {"record": record, "report": asdict(result) if result is not None else None}
    Path(answer_path).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
