"""Certify a built TensorRT plan against the repository's certificate, then install it.

Runs in two places: in-process after the Python-API build (export/tensorrt_build.py), and as
`cross_encoder/tensorrt/certify_plan.py` inside the TensorRT container after trtexec
(build_plan.sh), where neither this project nor its client is installed: the export copies
this file and the client's comparison module (as `certificate_compare.py`) beside the script.
Standard library + numpy + polygraphy/TensorRT only.

    python3 certify_plan.py --plan P.staging --fixture certificate.json --precision fp16 \
        --max-batch 16:64,32:64,... --install ../1/model.plan
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
def polygraphy_runner(serialized: bytes):
    """run(input_ids, attention_mask) -> logits on the plan, choosing the optimisation profile
    whose shape range holds each batch (as Triton does)."""
    import numpy as np
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    engine = EngineFromBytes(serialized)()
    ranges = [
        engine.get_tensor_profile_shape(INPUT_IDS.name, index) for index in range(engine.num_optimization_profiles)
    ]
    with TrtRunner(engine) as runner:

        def run(input_ids, attention_mask):
            batch, length = input_ids.shape
            index = next(
                (i for i, (lo, _, hi) in enumerate(ranges) if lo[0] <= batch <= hi[0] and lo[1] <= length <= hi[1]),
                None,
            )
            if index is None:
                raise PlanRejected(f"no optimisation profile holds a [{batch}, {length}] batch: {ranges}")
            runner.set_profile(index)
            outputs = runner.infer({INPUT_IDS.name: input_ids, ATTENTION_MASK.name: attention_mask})
            return np.asarray(outputs[LOGIT.name], dtype=np.float64).reshape(-1)

        yield run


def install(staging: Path, target: Path, report) -> None:
    """os.replace: Triton or a reader never sees half a plan; a rejected plan is removed."""
    if not report.passed:
        staging.unlink(missing_ok=True)
        raise PlanRejected("plan failed the certificate, not installed: " + "; ".join(report.failures))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)


def parse_max_batch(spec: str):
    table = {int(length): int(batch) for length, batch in (item.split(":") for item in spec.split(","))}
    return lambda length: table[length]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="certify a TensorRT plan, then install it")
    parser.add_argument("--plan", type=Path, required=True, help="the freshly built plan (staging file)")
    parser.add_argument("--fixture", type=Path, required=True, help="the repository's certificate.json")
    parser.add_argument("--precision", choices=("fp16", "fp32"), required=True)
    parser.add_argument("--max-batch", required=True, help="bucket:pairs,... as the profiles allow")
    parser.add_argument("--install", type=Path, required=True, help="where the plan goes if it passes")
    args = parser.parse_args(argv)
    try:
        fixture = load_fixture(args.fixture)
    except FixtureError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with polygraphy_runner(args.plan.read_bytes()) as run:
        report = certify_plan(fixture, run, args.precision, parse_max_batch(args.max_batch))
    print(report.summary())
    (args.install.parent.parent / "tensorrt" / "certificate_report.json").write_text(
        json.dumps(report.to_dict(), indent=2) + "\n"
    )
    try:
        install(args.plan, args.install, report)
    except PlanRejected as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
