"""Certify a built TensorRT plan against the repository's certificate, then install it.

Runs in two places: in-process after the Python-API build (export/tensorrt_build.py), and as
`cross_encoder/tensorrt/certify_plan.py` inside the TensorRT container after trtexec
(build_plan.sh), where neither this project nor its client is installed: the export copies
this file and the client's comparison module (as `certificate_compare.py`) beside the script.
Standard library + numpy + polygraphy/TensorRT only.

    python3 certify_plan.py --plan cross_encoder=A.staging --plan cross_encoder_2048=B.staging \
        --fixture certificate.json --precision fp16 --max-batch 16:64,32:64,... --install-root REPO \
        [--instances 2 --memory-budget BYTES --manifest REPO/manifest.json --level 0 --pinned 97]

One plan per length class, one profile each (export/plan_memory.py: why). All are certified
together and installed together (REPO/<class model>/1/model.plan) or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

try:
    from reranker_client.certificate import FixtureError, certify, load_fixture
    from reranker_client.contract import ATTENTION_MASK, INPUT_IDS, LOGIT
except ImportError:  # inside the TensorRT container: the copies shipped beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from certificate_compare import FixtureError, certify, load_fixture  # type: ignore[no-redef]
    from contract import ATTENTION_MASK, INPUT_IDS, LOGIT  # type: ignore[no-redef]


class PlanRejected(RuntimeError):
    """The plan missed a certificate bound; it was not installed."""


def shipped_files() -> list[tuple[Path, str]]:
    """(source, name in cross_encoder/tensorrt/) of what build_plan.sh runs in the container."""
    import reranker_client.certificate
    import reranker_client.contract

    return [
        (Path(__file__).resolve(), "certify_plan.py"),
        (Path(reranker_client.certificate.__file__), "certificate_compare.py"),
        (Path(reranker_client.contract.__file__), "contract.py"),
    ]


def certify_plan(fixture: dict, run, precision: str, max_batch):
    return certify(fixture, run, precision, max_batch)


@contextmanager
def polygraphy_runner(plans: dict[str, bytes]):
    """run(input_ids, attention_mask) -> logits, each batch on the plan whose (only) profile holds
    its shape, as the length router sends it to that class model."""
    import numpy as np
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    runners = []
    try:
        for model, serialized in plans.items():
            engine = EngineFromBytes(serialized)()
            lo, _, hi = engine.get_tensor_profile_shape(INPUT_IDS.name, 0)
            runner = TrtRunner(engine)
            runner.activate()
            runners.append((model, lo, hi, runner))

        def run(input_ids, attention_mask):
            batch, length = input_ids.shape
            found = [r for _, lo, hi, r in runners if lo[0] <= batch <= hi[0] and lo[1] <= length <= hi[1]]
            if not found:
                raise PlanRejected(f"no class plan holds a [{batch}, {length}] batch")
            outputs = found[0].infer({INPUT_IDS.name: input_ids, ATTENTION_MASK.name: attention_mask})
            return np.asarray(outputs[LOGIT.name], dtype=np.float64).reshape(-1)

        yield run
    finally:
        for *_, runner in runners:
            runner.deactivate()


def context_memory(serialized: bytes) -> int:
    """TensorRT's device memory for a context on the plan's only profile
    (get_device_memory_size_for_profile_v2, TensorRT >= 10.1)."""
    # A plain import: in the TensorRT container (build_plan.sh) `tensorrt` is NVIDIA's own; in
    # the export, stage_tensorrt has run export/trt_import.load_tensorrt, which registers the
    # bindings wheel as `tensorrt` (this file cannot import export/: it runs standalone too).
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
    if engine is None:
        raise PlanRejected("TensorRT could not deserialize the plan")
    return int(engine.get_device_memory_size_for_profile_v2(0))


def memory_rows(plans: dict[str, bytes], instances: int, context_bytes) -> list[dict]:
    """Per class model: each instance deserializes its own copy (dynamic shapes: Triton's
    tensorrt_backend r24.10 src/model_state.cc:242-265 shares no engine) and holds one context."""
    rows = []
    for model, data in plans.items():
        context = context_bytes(data)
        rows.append(
            {
                "model": model,
                "instances": instances,
                "weights_bytes": len(data),
                "context_bytes": context,
                "measured": True,
                "total_bytes": instances * (len(data) + context),
            }
        )
    return rows


def install(staging: Path, target: Path, report) -> None:
    """os.replace: Triton or a reader never sees half a plan; a rejected plan is removed."""
    if not report.passed:
        staging.unlink(missing_ok=True)
        raise PlanRejected("plan failed the certificate, not installed: " + "; ".join(report.failures))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)


def install_all(staged: dict[str, Path], root: Path, report) -> None:
    """Every class plan into <root>/<model>/1/model.plan, or (a failed report) none: the staging
    files are removed and no class folder changes."""
    if not report.passed:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise PlanRejected("plans failed the certificate, none installed: " + "; ".join(report.failures))
    for model, path in staged.items():
        install(path, root / model / "1" / "model.plan", report)


def record_in_manifest(manifest: Path, entry: dict) -> None:
    """Append this try to manifest.json's tensorrt_plan.attempts (and its memory when it passed)."""
    doc = json.loads(manifest.read_text()) if manifest.exists() else {}
    plan = doc.setdefault("tensorrt_plan", {"design": "one plan per length class, one profile each", "attempts": []})
    plan.setdefault("attempts", []).append({k: v for k, v in entry.items() if k != "memory"})
    if entry.get("passed"):
        plan["memory"] = entry["memory"]
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, manifest)


def parse_max_batch(spec: str):
    table = {int(length): int(batch) for length, batch in (item.split(":") for item in spec.split(","))}
    return lambda length: table[length]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="certify the class plans, then install them all or none")
    parser.add_argument("--plan", action="append", required=True, help="MODEL=STAGING_FILE, one per class")
    parser.add_argument("--fixture", type=Path, required=True, help="the repository's certificate.json")
    parser.add_argument("--precision", choices=("fp16", "fp32"), required=True)
    parser.add_argument("--max-batch", required=True, help="bucket:pairs,... as the classes allow")
    parser.add_argument("--install-root", type=Path, required=True, help="the repository (class model folders)")
    parser.add_argument("--instances", type=int, default=2, help="instances per class model (memory)")
    parser.add_argument("--memory-budget", type=int, default=0, help="bytes all class models may use (0: no check)")
    parser.add_argument("--manifest", type=Path, default=None, help="manifest.json to record the try in")
    parser.add_argument("--level", type=int, default=0, help="escalation level of this try")
    parser.add_argument("--pinned", type=int, default=0, help="layers pinned to fp32 in this try")
    args = parser.parse_args(argv)
    try:
        fixture = load_fixture(args.fixture)
    except FixtureError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    staged = {model: Path(path) for model, path in (item.split("=", 1) for item in args.plan)}
    plans = {model: path.read_bytes() for model, path in staged.items()}
    entry: dict = {"level": args.level, "pinned_layers": args.pinned}
    memory = memory_rows(plans, args.instances, context_memory)
    total = sum(row["total_bytes"] for row in memory)
    entry.update(memory=memory, measured_bytes=total)
    if args.memory_budget and total > args.memory_budget:
        entry.update(
            passed=False, failures=[f"plan memory {total / 2**30:.1f} GiB over {args.memory_budget / 2**30:.1f}"]
        )
        for path in staged.values():
            path.unlink(missing_ok=True)
        if args.manifest:
            record_in_manifest(args.manifest, entry)
        print(f"error: {entry['failures'][0]}", file=sys.stderr)
        return 1
    with polygraphy_runner(plans) as run:
        report = certify_plan(fixture, run, args.precision, parse_max_batch(args.max_batch))
    print(report.summary())
    (args.install_root / "cross_encoder" / "tensorrt" / "certificate_report.json").write_text(
        json.dumps(report.to_dict(), indent=2) + "\n"
    )
    entry.update(passed=report.passed, failures=list(report.failures))
    if args.manifest:
        record_in_manifest(args.manifest, entry)
    try:
        install_all(staged, args.install_root, report)
    except PlanRejected as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
