"""python -m export: bge-reranker-v2-m3 -> parity-checked ONNX/TensorRT -> Triton repository."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from export.model_loading import HubUnreachable, ModelRejected
from export.pipeline import ExportArgs, ParityFailed, run_export
from export.plan_certification import PlanRejected
from export.settings import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL_ID,
    MAX_SUPPORTED_LENGTH,
    PRECISIONS,
    TOKENIZER_INSTANCES,
)
from export.triton_config import BACKENDS
from export.trt_import import TensorRTMissing, load_tensorrt


def parse_args(argv: list[str] | None) -> ExportArgs:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL_ID, help="Hub id or local folder (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path("runs/model_repository"),
        help="Triton model repository to write (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="onnxruntime",
        help="onnxruntime (GPU, TensorRT accelerator), tensorrt (plan), "
        "python (CPU: ONNX Runtime in a Python-backend model)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp16",
        help="fp16/fp32; int8: dynamic int8 on CPU (backend python or onnxruntime with KIND_CPU; docs/CPU.md)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help=f"tokens per query+passage pair, 16..{MAX_SUPPORTED_LENGTH} (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="pairs per request and per batch (default: %(default)s)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="keep intermediate ONNX files here")
    parser.add_argument("--tokenizer-instances", type=int, default=TOKENIZER_INSTANCES)
    parser.add_argument(
        "--cpu-threads", type=int, default=0, help="python backend: ONNX Runtime intra-op threads (0: automatic)"
    )
    parser.add_argument(
        "--plan-later",
        action="store_true",
        help="backend tensorrt without TensorRT here: write the ONNX and build_plan.sh, which builds and "
        "certifies the plans on the GPU host (without this flag, TensorRT must be importable)",
    )
    ns = parser.parse_args(argv)
    if not 16 <= ns.max_length <= MAX_SUPPORTED_LENGTH:
        parser.error(f"--max-length must be in [16, {MAX_SUPPORTED_LENGTH}], got {ns.max_length}")
    return ExportArgs(**{k: v for k, v in vars(ns).items()})


def unwritable_output(repo: Path) -> str | None:
    """Why the repository cannot be written, checked before minutes of export: the exporter
    image runs as uid 1000, and a host folder mounted at /out is often root's."""
    parent = repo.resolve().parent
    while not parent.exists():
        parent = parent.parent
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-check-"):
            return None
    except OSError as err:
        owner = parent.stat().st_uid
        return (
            f"cannot write the repository under {parent} ({err.strerror}; the folder belongs to uid {owner}, "
            f"this process runs as uid {os.getuid()}). Run the exporter with your uid, e.g. "
            f"`docker run --user $(id -u):$(id -g) ...`, or make the folder writable for uid {os.getuid()}"
        )


def missing_tensorrt(args: ExportArgs) -> str | None:
    """--backend tensorrt builds the plans here: checked before minutes of export."""
    if args.backend != "tensorrt" or args.plan_later:
        return None
    try:
        load_tensorrt()
    except TensorRTMissing as err:
        return (
            f"--backend tensorrt: {err}. To export without TensorRT and build the plans on the GPU host, "
            "pass --plan-later"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    problem = unwritable_output(args.repo) or missing_tensorrt(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        summary = run_export(args)
    except HubUnreachable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ModelRejected, ParityFailed, PlanRejected, TensorRTMissing, ValueError) as err:
        # PlanRejected: every TensorRT plan try missed the certificate or the memory budget; no
        # repository was written (an existing one is left as it was).
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def cpu_export(model: Path | str, repo: Path | str, *extra: str) -> int:
    """`python -m export --backend python --precision fp32`: a repository the local CPU server
    (pip-installed Triton) serves; what the tests, the demo and the benchmarks export."""
    return main(["--model", str(model), "--repo", str(repo), "--backend", "python", "--precision", "fp32", *extra])


if __name__ == "__main__":
    sys.exit(main())
