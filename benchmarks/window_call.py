"""One window-mode call on an idle server, at several export max_lengths (issue 29 item 4).

    python -m benchmarks.window_call [--shape tiny|bench] [--max-lengths 512 4096 8192] [--out runs/window_call]
                                     [--single-timeout-s 5]

The call: `rerank(query, [~84 KB document, ~42 KB document, short document], long_documents="window")`
with the client's default settings (30 s deadline, 4 requests in flight), on the stand-in served
by the real local tritonserver (CPU) at each max_length (tests/long_context_repo.py: the graph
exported again at that length, configs as the export writes them, queue timeouts included).
Printed per max_length: each class model's queue timeout, the call's outcome, its time, and the
windows scored per document. Times are this machine's, with whatever else runs on it.
`--single-timeout-s 5` serves a copy with every queue timeout at 5 s, as every queue had before
the per-class timeouts (the configuration that failed).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common import standin_model
from common.calibration_texts import TOPICS, long_passage
from export.__main__ import main as export_main
from export.settings import ServingLimits
from export.tensorrt_profiles import length_classes
from local_triton.server import TritonServer, free_port
from reranker_client import RerankClient, RerankError

QUERY = TOPICS[3][1]


def documents() -> list[str]:
    """~84 KB, ~42 KB and a short document (the sizes of the measured failure)."""

    def of_bytes(target: int, offset: int) -> str:
        paragraphs = 1
        while len(long_passage(paragraphs, offset).encode()) < target:
            paragraphs += 1
        return long_passage(paragraphs, offset)

    return [of_bytes(84_000, 0), of_bytes(42_000, 5), TOPICS[3][2][0]]


def repository(root: Path, shape: str, max_length: int) -> Path:
    from common.long_context_repo import serve_at

    model = root / f"model-{shape}"
    if not (model / "model.safetensors").exists():
        standin_model.build(model, shape)
    from benchmarks.bench import reusable_export

    base = root / f"repo-{shape}-512"
    if not reusable_export(base):
        args = ["--model", str(model), "--repo", str(base), "--backend", "python", "--precision", "fp32"]
        if export_main(args) != 0:
            raise SystemExit("export failed")
    if max_length == ServingLimits().max_length:
        return base
    target = root / f"repo-{shape}-{max_length}"
    if not reusable_export(target):
        shutil.rmtree(target, ignore_errors=True)
        serve_at(base, model, target, max_length)
    return target


def with_single_timeout(repo: Path, seconds: float) -> Path:
    """A copy of `repo` whose every queue timeout is `seconds` (the configuration before per-class
    timeouts)."""
    import shutil

    target = repo.with_name(f"{repo.name}-single-{seconds:g}s")
    if not target.exists():
        shutil.copytree(repo, target, symlinks=True)
        for path in target.glob("*/config.pbtxt"):
            config = text_format.Parse(path.read_text(), mc.ModelConfig())
            if config.HasField("dynamic_batching"):
                config.dynamic_batching.default_queue_policy.default_timeout_microseconds = int(seconds * 1e6)
                path.write_text(text_format.MessageToString(config))
    return target


def queue_timeouts(repo: Path, max_length: int) -> dict[str, float]:
    out = {}
    for c in length_classes(ServingLimits(max_length=max_length)):
        config = text_format.Parse((repo / c.model / "config.pbtxt").read_text(), mc.ModelConfig())
        out[c.model] = config.dynamic_batching.default_queue_policy.default_timeout_microseconds / 1e6
    return out


def measure(repo: Path, max_length: int, log: Path, timeout: float | None = None) -> dict:
    server = TritonServer(repo, free_port(), free_port(), free_port(), [], log_path=log).start(timeout=300)
    try:
        options = {} if timeout is None else {"timeout": timeout}
        with RerankClient(server.grpc_url, **options) as client:  # default settings unless --timeout
            started = time.monotonic()
            try:
                results = client.rerank(QUERY, documents(), long_documents="window")
                outcome = "ok"
                windows = [r.windows for r in sorted(results, key=lambda r: r.index)]
            except RerankError as err:
                outcome, windows = f"{type(err).__name__}: {str(err)[:120]}", []
            seconds = time.monotonic() - started
    finally:
        server.stop()
    return {"max_length": max_length, "outcome": outcome, "seconds": round(seconds, 2), "windows": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "bench"])
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[512, 4096, 8192])
    parser.add_argument("--out", type=Path, default=Path("runs/window_call"))
    parser.add_argument("--single-timeout-s", type=float, help="serve a copy with every queue timeout at this")
    parser.add_argument("--timeout", type=float, help="the call's client deadline (default: 30 s)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"documents: {[len(d.encode()) for d in documents()]} bytes; shape {args.shape}; CPU", flush=True)
    for max_length in args.max_lengths:
        repo = repository(args.out, args.shape, max_length)
        if args.single_timeout_s:
            repo = with_single_timeout(repo, args.single_timeout_s)
        row = measure(repo, max_length, args.out / f"tritonserver-{args.shape}-{max_length}.log", args.timeout)
        timeouts = ", ".join(f"{m} {s:g}s" for m, s in queue_timeouts(repo, max_length).items())
        print(
            f"max_length {max_length:>5}: {row['outcome']}  {row['seconds']:.2f} s  windows {row['windows']}  "
            f"(queue timeouts: {timeouts})",
            flush=True,
        )


if __name__ == "__main__":
    main()
