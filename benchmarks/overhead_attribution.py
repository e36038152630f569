"""Where the served `rerank`'s extra milliseconds go, per request, in one run (issue 30 item 4).

    python -m benchmarks.overhead_attribution [--shape tiny] [--rounds 40] [--requests 4]

The same requests as benchmarks/serving_overhead.py (similar-length passages, one at a time),
served and in process alternately in random order (so background load falls on both alike).
Per served request: the client's own work (building the BYTES inputs, reading the output), the
client-observed `infer`, and Triton's per-model statistics (the statistics API before and after
that one request: request / queue / input / execute / output per model). Per in-process request:
the serving tokenizer and the ONNX Runtime runs (the class model's parts), timed apart. Also a
bare gRPC round trip (`is_server_live`) for the transport's own floor. The medians attribute the
gap: client + gRPC + frontend (client infer - ensemble request), the ensemble's scheduling
(ensemble request - its steps' requests), each Python stub hop (step request - the same work in
process). Writes benchmarks/results/overhead_attribution_<shape>.{json,md}.
"""

from __future__ import annotations

import os

THREADS = 2
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import interleave  # noqa: E402

STATS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def model_stats(client) -> dict[str, dict[str, float]]:
    """model -> cumulative ns per statistic and its execution count (Triton's statistics API)."""
    out = {}
    for m in client.get_inference_statistics(as_json=True).get("model_stats", []):
        inference = m.get("inference_stats", {})
        row = {k: float(inference.get(k, {}).get("ns", 0)) for k in STATS}
        row["executions"] = float(m.get("execution_count", 0))
        out[m["name"]] = row
    return out


def delta_ms(before: dict, after: dict) -> dict[str, dict[str, float]]:
    rows = {}
    for model, values in after.items():
        d = {k: values[k] - before.get(model, {}).get(k, 0.0) for k in values}
        if d["success"] <= 0:
            continue
        rows[model] = {k: (d[k] / 1e6 if k != "executions" else d[k]) for k in d}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "bench"), default="tiny")
    parser.add_argument("--rounds", type=int, default=40, help="passes over the requests, each system")
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--label", default="", help="suffix of the results' file names (a variant)")
    parser.add_argument("--repo", type=Path, help="a variant of the export to serve (default: the shape's export)")
    parser.add_argument("extra", nargs="*", help="more tritonserver flags, after --")
    args = parser.parse_args(argv)

    import tritonclient.grpc as grpcclient

    from benchmarks.bench import ensure_model
    from benchmarks.serving_overhead import InProcess, class_model_parts, similar_length_requests
    from common.pair_tokenizer import load_pair_tokenizer
    from common.raw_rerank import rerank_inputs
    from export.settings import ServingLimits
    from local_triton.server import TritonServer, free_port

    _, repo = ensure_model(args.shape, args.work, args.threads)
    repo = args.repo or repo
    limits = ServingLimits()
    tokenizer = load_pair_tokenizer(repo / "tokenizer" / "1", limits)
    requests = similar_length_requests(
        str(repo / "tokenizer" / "1" / "tokenizer.json"), args.requests, args.passages, limits.max_length
    )
    local = InProcess(repo, tokenizer, args.threads, class_model_parts(repo))
    split, cut = local.parts

    def in_process(query: str, passages: list[str]) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = tokenizer.tokenize_requests([([query.encode()] * len(passages), [p.encode() for p in passages])])[0]
        t1 = time.perf_counter()
        for rows, width in split(batch.attention_mask):
            ids = batch.input_ids if rows is None else cut(batch.input_ids, rows, width, 1)
            mask = batch.attention_mask if rows is None else cut(batch.attention_mask, rows, width, 0)
            local.session.run(None, {"input_ids": ids, "attention_mask": mask})
        t2 = time.perf_counter()
        # serving_overhead.py's reference: the whole batch as one run at the tokenizer's padding.
        local.session.run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        t3 = time.perf_counter()
        return {
            "total": (t2 - t0) * 1e3,
            "tokenize": (t1 - t0) * 1e3,
            "onnxruntime": (t2 - t1) * 1e3,
            "one_run_total": (t1 - t0 + t3 - t2) * 1e3,
        }

    samples: dict[str, list] = {"served": [], "in_process": [], "grpc_live": []}
    server = TritonServer(
        repo,
        free_port(),
        free_port(),
        free_port(),
        extra_args=list(args.extra),
        log_path=args.work / "overhead_attribution_tritonserver.log",
    )
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        output = grpcclient.InferRequestedOutput("logit")

        def served(query: str, passages: list[str]) -> dict:
            before = model_stats(client)
            t0 = time.perf_counter()
            inputs = rerank_inputs([query] * len(passages), passages)
            t1 = time.perf_counter()
            result = client.infer("rerank", inputs, outputs=[output])
            t2 = time.perf_counter()
            result.as_numpy("logit").reshape(-1)
            t3 = time.perf_counter()
            # Triton records an ensemble's and a step's statistics after the response has left:
            # read until all three models show this request (outside the timed span).
            for _ in range(100):
                after = model_stats(client)
                models = delta_ms(before, after)
                if all(m in models for m in ("rerank", "tokenizer", "cross_encoder")):
                    break
                time.sleep(0.002)
            return {
                "total": (t3 - t0) * 1e3,
                "client_inputs": (t1 - t0) * 1e3,
                "infer": (t2 - t1) * 1e3,
                "client_output": (t3 - t2) * 1e3,
                "models": models,
            }

        for query, passages in requests * 2:  # warm-up, both ways
            served(query, passages)
            in_process(query, passages)
        rng = random.Random(0)
        for _ in range(args.rounds):
            for query, passages in requests:
                order = ["served", "in_process"]
                rng.shuffle(order)
                for name in order:
                    fn = served if name == "served" else in_process
                    samples[name].append(fn(query, passages))
                t0 = time.perf_counter()
                client.is_server_live()
                samples["grpc_live"].append((time.perf_counter() - t0) * 1e3)
        client.close()

    def med(values) -> float:
        return round(float(np.median(values)), 3)

    served_rows = samples["served"]
    models = sorted({m for s in served_rows for m in s["models"]})
    per_model = {
        model: {k: med([s["models"][model][k] for s in served_rows]) for k in (*STATS, "executions")}
        for model in models
        if all(model in s["models"] for s in served_rows)
    }
    ens = per_model["rerank"]["success"]
    tok = per_model["tokenizer"]["success"]
    ce = per_model["cross_encoder"]["success"]
    local_rows = samples["in_process"]
    attribution = {
        "client observed (served)": med([s["total"] for s in served_rows]),
        "in process total (the class model's parts)": med([s["total"] for s in local_rows]),
        "in process total, one run at the tokenizer's padding (serving_overhead's reference)": med(
            [s["one_run_total"] for s in local_rows]
        ),
        "client: building BYTES inputs + reading the output": med(
            [s["client_inputs"] + s["client_output"] for s in served_rows]
        ),
        "client infer - ensemble request (gRPC, protobuf, frontend, thread wake-ups)": med(
            [s["infer"] - s["models"]["rerank"]["success"] for s in served_rows]
        ),
        "bare gRPC round trip (is_server_live)": med(samples["grpc_live"]),
        "ensemble request - its steps' requests (ensemble scheduling, tensor hand-over)": med(
            [
                s["models"]["rerank"]["success"]
                - s["models"]["tokenizer"]["success"]
                - s["models"]["cross_encoder"]["success"]
                for s in served_rows
            ]
        ),
        "tokenizer step request": tok,
        "tokenizer in process": med([s["tokenize"] for s in local_rows]),
        "cross_encoder step request": ce,
        "ONNX Runtime runs in process (same parts)": med([s["onnxruntime"] for s in local_rows]),
        "ensemble request": ens,
    }
    result = {
        "what": __doc__.split("\n\n")[0],
        "machine": interleave.cpu_facts(),
        "shape": args.shape,
        "samples_per_system": len(served_rows),
        "repository": str(repo),
        "extra_server_flags": args.extra,
        "attribution_ms_median": attribution,
        "per_model_ms_median": per_model,
    }
    write(args.out, f"{args.shape}{args.label}", result)
    return 0


def write(out: Path, name: str, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"overhead_attribution_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Serving overhead attribution ({name})",
        "",
        result["what"],
        "",
        f"- {result['samples_per_system']} requests per system, interleaved; CPU {result['machine']['cpu']} x "
        f"{result['machine']['cores']}; served from {result['repository']}; extra tritonserver flags: "
        f"{result['extra_server_flags'] or 'none'}",
        "",
        "| step | ms per request (median) |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in result["attribution_ms_median"].items()),
        "",
        "Triton's statistics per model (median over requests, ms per request; executions = runs):",
        "",
        "| model | request | queue | input | execute | output | executions |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {m} | {v['success']} | {v['queue']} | {v['compute_input']} | {v['compute_infer']} | "
            f"{v['compute_output']} | {v['executions']} |"
            for m, v in result["per_model_ms_median"].items()
        ),
    ]
    (out / f"overhead_attribution_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
