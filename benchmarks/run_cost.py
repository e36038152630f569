"""The cost model behind the length router's split decision, measured on this machine.

    python -m benchmarks.run_cost [--calls 300]

A cross-encoder run has a fixed cost (the batcher's queue delay, the Python backend's execute,
shared-memory copies) and a cost per padded token. This serves the tiny stand-in (whose compute
is negligible) and sends one-row, 16-token requests straight to `cross_encoder`, one at a time:
- per run, server side: Triton's nv_inference_request_duration_us per request for the model,
  minus the same run's time in process (ONNX Runtime, same ONNX, same threads) - what a BLS
  call from the router pays besides the model's own work;
- per run, as a gRPC caller sees it: the client's wall time per call minus the in-process time;
- per token: the best fp32 GEMM rate (torch, the cores' ceiling: an upper bound on how fast a
  token is computed, so a run's cost in tokens is not underestimated).
export/settings.py RUN_OVERHEAD_S["python"] and DEVICE_FLOPS["python"] carry the figures; it
writes benchmarks/results/run_cost.json.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import interleave, machine  # noqa: E402


def model_totals(metrics_url: str, model: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()

    def total(name: str) -> float:
        pattern = rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    return {
        "requests": total("nv_inference_request_success"),
        "request_us": total("nv_inference_request_duration_us"),
        "queue_us": total("nv_inference_queue_duration_us"),
        "compute_us": total("nv_inference_compute_infer_duration_us"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import tritonclient.grpc as grpcclient

    from benchmarks.bench import ensure_model
    from local_triton.server import TritonServer, free_port

    _, repo = ensure_model("tiny", args.work, args.threads)
    ids, mask = np.zeros((1, 16), np.int64), np.ones((1, 16), np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    # The session options the served Python-backend model uses (cross_encoder/1/model.py): no spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(repo / "cross_encoder" / "1" / "model.onnx"), options)
    feed = {"input_ids": ids, "attention_mask": mask}
    for _ in range(20):
        session.run(None, feed)
    local = []
    for _ in range(args.calls):
        start = time.perf_counter()
        session.run(None, feed)
        local.append(time.perf_counter() - start)
    with TritonServer(repo, free_port(), free_port(), free_port(), log_path=args.work / "run_cost.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = [
            grpcclient.InferInput("input_ids", [1, 16], "INT64"),
            grpcclient.InferInput("attention_mask", [1, 16], "INT64"),
        ]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        for _ in range(20):
            client.infer("cross_encoder", inputs)
        before = model_totals(server.metrics_url, "cross_encoder")
        wall = []
        for _ in range(args.calls):
            start = time.perf_counter()
            client.infer("cross_encoder", inputs)
            wall.append(time.perf_counter() - start)
        after = model_totals(server.metrics_url, "cross_encoder")
        client.close()
    delta = {k: after[k] - before[k] for k in before}
    in_process = float(np.median(local))
    server_per_run = delta["request_us"] / delta["requests"] / 1e6 - in_process
    caller_per_run = float(np.median(wall)) - in_process
    gemm = max(machine.gemm_gflops() for _ in range(3)) * 1e9
    result = {
        "machine": interleave.cpu_facts(),
        "shared_machine": "2 cores shared with other agents doing light work; this run held the heavy-work lock",
        "calls": args.calls,
        "in_process_run_ms_median": round(in_process * 1e3, 3),
        "server_request_ms_mean": round(delta["request_us"] / delta["requests"] / 1e3, 3),
        "server_queue_ms_mean": round(delta["queue_us"] / delta["requests"] / 1e3, 3),
        "server_compute_ms_mean": round(delta["compute_us"] / delta["requests"] / 1e3, 3),
        "run_overhead_ms_server_side": round(server_per_run * 1e3, 3),
        "run_overhead_ms_as_grpc_caller": round(caller_per_run * 1e3, 3),
        "fp32_gemm_gflops_best": round(gemm / 1e9, 1),
        "tokens_per_run": {
            f"{name} ({layers}x{hidden})": round(server_per_run * gemm / (layers * 24 * hidden**2), 2)
            for name, layers, hidden in (("tiny", 2, 64), ("bench", 6, 1024), ("real", 24, 1024))
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
