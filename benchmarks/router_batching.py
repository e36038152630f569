"""What the length router's one-request-per-execute rule costs, and how many router instances
(issue 26 item 5).

    python -m benchmarks.router_batching --workload windows [--trials 4] [--concurrency 4,8] [--seconds 4]
    python -m benchmarks.router_batching --workload classes ...

The router has no dynamic batcher, so its /dev/shm region holds one request at a time
(export/shm_budget.py). Before, its batcher merged the requests that queued while both instances
were busy into one execute, and all their parts were in flight at the class models at once; now
only ROUTER_INSTANCES requests have parts there at a time. The router carries two workloads:
- `windows`: `rerank_windows` on the default export (max_length 512, where `rerank` skips the
  router): 4 passages of 540-650 tokens per request (a few windows each);
- `classes`: `rerank` on a max_length 2,048 export (two length classes, so `rerank` goes through
  the router): 16 pairs per request, 12 of 30-80 tokens and 4 of 970-1,040 tokens.
Variants, served at once (tiny stand-in, python backend, this CPU): the router as before (its
batcher, 2 instances) and without it at 2 and 4 instances. Closed loop of `concurrency` callers
for `seconds` per run; variants interleaved in a fresh order every trial (benchmarks/interleave.py),
paired ratios with bootstrap intervals. Writes benchmarks/results/router_batching_<workload>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from benchmarks.interleave import cpu_facts, paired_ratio, run_interleaved
from common.calibration_texts import TOPICS, long_passage
from common.raw_rerank import rerank_inputs
from export.settings import MAX_QUEUE_SIZE, QUEUE_TIMEOUT_US
from reranker_client.contract import LENGTH_ROUTER

BEFORE = "batched, 2 instances (before)"
ONE = "one per execute, {} instances"


def variant(repo: Path, out: Path, instances: int, batched: bool) -> Path:
    """`repo` (hard links) with the router's instances set and, for `batched`, its former dynamic
    batcher put back (no delay, the queue policy it had: the longest class timeout, 256 queued)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(repo, out, copy_function=os.link)
    path = out / LENGTH_ROUTER / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    config.instance_group[0].count = instances
    if batched:
        timeouts = []
        for model in config.parameters["class_models"].string_value.split(","):
            cls = text_format.Parse((out / model / "config.pbtxt").read_text(), mc.ModelConfig())
            timeouts.append(cls.dynamic_batching.default_queue_policy.default_timeout_microseconds)
        config.dynamic_batching.default_queue_policy.timeout_action = mc.ModelQueuePolicy.REJECT
        config.dynamic_batching.default_queue_policy.default_timeout_microseconds = max(timeouts or [QUEUE_TIMEOUT_US])
        config.dynamic_batching.default_queue_policy.allow_timeout_override = True
        config.dynamic_batching.default_queue_policy.max_queue_size = MAX_QUEUE_SIZE
    path.unlink()  # a hard link: do not write through to the original
    path.write_text(text_format.MessageToString(config))
    return out


def workload(name: str) -> tuple[str, list]:
    """(model, inputs) of one request."""
    if name == "windows":
        passages = [long_passage(14, offset=i) for i in range(4)]
        inputs = rerank_inputs([TOPICS[0][1]] * len(passages), passages)
        stride = grpcclient.InferInput("window_stride", [len(passages), 1], "INT32")
        stride.set_data_from_numpy(np.zeros((len(passages), 1), np.int32))  # 0: the default stride
        return "rerank_windows", [*inputs, stride]
    passages = [p for _, _, ps in TOPICS for p in ps][:12] + [long_passage(25, offset=i) for i in range(4)]
    return "rerank", rerank_inputs([TOPICS[1][1]] * len(passages), passages)


def closed_loop(url: str, model: str, inputs: list, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def caller() -> None:
        client = grpcclient.InferenceServerClient(url)
        start.wait()
        until = time.perf_counter() + seconds
        try:
            while time.perf_counter() < until:
                began = time.perf_counter()
                try:
                    client.infer(model, inputs, client_timeout=60)
                    with lock:
                        latencies.append(time.perf_counter() - began)
                except InferenceServerException as err:
                    with lock:
                        errors.append(err.message()[:120])
        finally:
            client.close()

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "units": len(latencies),
        "requests_per_s": len(latencies) / wall,
        "p50_ms": 1e3 * statistics.median(latencies) if latencies else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def repository(kind: str, root: Path) -> Path:
    from benchmarks.bench import ensure_model

    model_dir, repo = ensure_model("tiny", Path("runs"), 2)
    if kind == "windows":
        return repo
    from benchmarks.bench import reusable_export
    from common.long_context_repo import serve_at

    target = root / "repo-2048"
    if not reusable_export(target):
        shutil.rmtree(target, ignore_errors=True)
        serve_at(repo, model_dir, target, 2048)
    return target


def main(argv: list[str] | None = None) -> int:
    from local_triton.server import TritonServer, free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("windows", "classes"), required=True)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--concurrency", default="4,8")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--instances", default="2,4", help="router instances without the batcher")
    parser.add_argument("--out", type=Path, default=Path("runs/router_batching"))
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    repo = repository(args.workload, args.out)
    assert not text_format.Parse((repo / LENGTH_ROUTER / "config.pbtxt").read_text(), mc.ModelConfig()).HasField(
        "dynamic_batching"
    ), "the export should have no router batcher"
    repos = {BEFORE: variant(repo, args.out / f"{args.workload}-before", 2, batched=True)}
    for n in map(int, args.instances.split(",")):
        repos[ONE.format(n)] = variant(repo, args.out / f"{args.workload}-one-{n}", n, batched=False)
    model, inputs = workload(args.workload)
    servers = {}
    try:
        for i, (name, path) in enumerate(repos.items()):
            log = args.out / f"{args.workload}-{i}.log"
            servers[name] = TritonServer(path, free_port(), free_port(), free_port(), log_path=log).start(timeout=300)
        for server in servers.values():  # warm: every variant answers once before timing
            grpcclient.InferenceServerClient(server.grpc_url).infer(model, inputs, client_timeout=60)
        table: list[dict[str, Any]] = []
        raw: dict[int, list] = {}
        for concurrency in map(int, args.concurrency.split(",")):
            runners: dict[str, Callable[[], dict]] = {
                name: functools.partial(closed_loop, server.grpc_url, model, inputs, concurrency, args.seconds)
                for name, server in servers.items()
            }
            trials = run_interleaved(runners, args.trials, seed=concurrency)
            raw[concurrency] = [{"order": t.order, "results": t.results} for t in trials]
            rates = {name: [t.results[name]["requests_per_s"] for t in trials] for name in servers}
            for name in servers:
                p50 = [t.results[name]["p50_ms"] for t in trials if t.results[name]["p50_ms"] is not None]
                entry = {
                    "concurrency": concurrency,
                    "variant": name,
                    "requests_per_s": statistics.median(rates[name]),
                    "p50_ms": statistics.median(p50) if p50 else None,
                    "errors": sum(t.results[name]["errors"] for t in trials),
                    "vs_before": None if name == BEFORE else paired_ratio(rates[name], rates[BEFORE]).as_dict(),
                }
                table.append(entry)
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n{args.workload}: {model}, {args.trials} trials of {args.seconds:g} s per variant and concurrency")
    print("| concurrency | router | requests/s (median) | p50 ms | errors | vs before: ratio [95% CI] |")
    print("|---|---|---|---|---|---|")
    for e in table:
        ratio = e["vs_before"]
        shown = "-"
        if ratio is not None:
            shown = f"{ratio['ratio']:.2f} [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}] {ratio['verdict']}"
        ms = "-" if e["p50_ms"] is None else f"{e['p50_ms']:.0f}"
        print(f"| {e['concurrency']} | {e['variant']} | {e['requests_per_s']:.1f} | {ms} | {e['errors']} | {shown} |")
    results = args.results or Path(f"benchmarks/results/router_batching_{args.workload}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "what": f"{model} via tritonclient gRPC, closed loop, tiny stand-in, python backend, CPU",
                "workload": args.workload,
                "machine": {"note": "2-core shared box; all variants served at once, interleaved", **cpu_facts()},
                "seconds_per_run": args.seconds,
                "table": table,
                "trials": raw,
            },
            indent=1,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
