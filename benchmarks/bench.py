"""make bench: the same inputs, the same concurrencies and repeated trials for every system.

    python -m benchmarks.bench [--shape bench|tiny] [--requests 4] [--passages 8] [--trials 5]
                               [--concurrency 1,2,4] [--threads 2] [--out benchmarks/results]

Systems: our Triton pipeline through the client; in-process ONNX Runtime on the same ONNX and
tokens (our ceiling); sentence-transformers CrossEncoder (fp32); FlagEmbedding FlagReranker
(fp32); Infinity (`infinity-emb`, own venv) where it installs.

What makes it defensible (issue 15):
- same inputs: every text is cut in advance to what our tokenization keeps (same_inputs.py),
  and every row's logits are compared with in-process ONNX Runtime; a row off by more than
  1e-3 is flagged and left out of every ratio;
- same concurrency: every system runs at each concurrency (workers pulling from one list of
  requests: the same total work per trial), with its thread counts pinned and recorded, after
  the same warm-up (one untimed pass over the requests);
- repeated trials: --trials per point, median and min-max; ratios at equal concurrency and at
  each system's best;
- padding measured, not modelled: our rows read the tokenizer model's counters from :8002
  before and after each point; the others count what they ran (see systems.py).
"""

from __future__ import annotations

import os

THREADS_DEFAULT = 2
# Thread pools read these when torch / MKL / OpenMP start: set before anything imports them.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS_DEFAULT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import machine, same_inputs, systems  # noqa: E402
from common.pair_tokenizer import load_pair_tokenizer  # noqa: E402
from export.__main__ import cpu_export  # noqa: E402
from export.settings import ServingLimits  # noqa: E402
from loadtest.workload import LENGTH_MIX, make_pairs  # noqa: E402

OURS = "Triton rerank ensemble via client"
ORT = "ONNX Runtime in-process (same ONNX, same tokens)"
VARIANT = "Triton via client, no tokenizer on the client"
PEERS = ("sentence-transformers CrossEncoder", "FlagReranker", "Infinity")
LOGIT_TOLERANCE = 1e-3  # fp32 everywhere: larger means the system did not score the same tokens
USEFUL, PADDED = "reranker_tokenizer_useful_tokens_total", "reranker_tokenizer_padded_tokens_total"
TARGETS = {"ort": 0.9, "peer": 1.2, "padding": 0.9}
# Every system runs at every concurrency; what "concurrency" means differs and is recorded per row.
CONCURRENCY_MEANS = {
    ORT: "N Python threads calling run() on one InferenceSession (thread-safe; no queue, no batching across calls)",
    OURS: "N concurrent client calls over gRPC; each call sends its chunks up to 2 at a time",
    VARIANT: "as above, chunks planned from the UTF-8 length estimate (no tokenizer on the client)",
    "sentence-transformers CrossEncoder": "N Python threads calling predict() on one model (no batching across calls)",
    "FlagReranker": "N Python threads calling compute_score() on one model (no batching across calls)",
    "Infinity": "N concurrent HTTP /rerank requests; Infinity's own queue batches across them",
}
SHARED_MACHINE_NOTE = (
    "The machine was shared with other engineers' work (2 cores): load varied between trials; "
    "medians of >= 5 trials with min-max are reported and `load_1m` records the load per point."
)


def ensure_model(shape: str, root: Path, threads: int) -> tuple[Path, Path]:
    from common import standin_model

    model_dir, repo = root / f"bench-model-{shape}", root / f"bench-repo-{shape}-t{threads}"
    if not (model_dir / "model.safetensors").exists():
        print(f"[bench] building the {shape} stand-in model ...", flush=True)
        standin_model.build(model_dir, shape)
    if not (repo / "manifest.json").exists():
        print("[bench] exporting it (python backend, fp32) ...", flush=True)
        if cpu_export(str(model_dir), str(repo), "--cpu-threads", str(threads)):
            raise SystemExit("export failed")
    return model_dir, repo


def workload(tokenizer_json: str, requests: int, passages: int, max_length: int) -> list[tuple[str, list[str]]]:
    """requests x (one query, `passages` passages) whose lengths follow LENGTH_MIX by quota
    (largest remainder), not by chance: with a few dozen pairs a random draw often holds no
    over-long passage at all (3% of the mix), and then the pre-truncation is never exercised."""
    total = passages * requests
    shares = [share * total for share, _, _ in LENGTH_MIX]
    quota = [int(x) for x in shares]
    for i in sorted(range(len(shares)), key=lambda i: shares[i] - quota[i], reverse=True)[: total - sum(quota)]:
        quota[i] += 1
    bounds = []
    for _, low, high in LENGTH_MIX:
        low = low if low is not None else max_length + 1
        bounds.append((low, high if high is not None else (max_length if low <= max_length else 10**9)))
    chosen: list = []
    for pair in make_pairs(tokenizer_json, 20 * total, max_length, seed=0):  # drawn from the documented mix
        for i, (low, high) in enumerate(bounds):
            if quota[i] and low <= pair.passage_tokens <= high:
                quota[i] -= 1
                chosen.append(pair)
                break
        if len(chosen) == total:
            break
    order = __import__("random").Random(1).sample(chosen, len(chosen))  # long ones spread over requests
    return [
        (order[i * passages].query, [p.passage for p in order[i * passages : (i + 1) * passages]])
        for i in range(requests)
    ]


def server_counters(metrics_url: str) -> dict[str, float]:
    """Our padding counters, and the cross-encoder's queue time and request counts (Triton's own)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()

    def total(name, model=None):
        labels = f'[^}}]*model="{model}"[^}}]*' if model else "[^}]*"
        return sum(float(v) for v in re.findall(rf"^{name}\{{{labels}\}} ([0-9.e+]+)$", text, re.M))

    return {
        "useful": total(USEFUL),
        "padded": total(PADDED),
        "cross_encoder_queue_us": total("nv_inference_queue_duration_us", "cross_encoder"),
        "cross_encoder_requests": total("nv_inference_request_success", "cross_encoder"),
        "rerank_requests": total("nv_inference_request_success", "rerank"),
    }


def in_process_counters(count: systems.TokenCount):
    def read() -> dict[str, float]:
        useful, padded = count.snapshot()
        return {"useful": useful, "padded": padded}

    return read


def one_pass(system, requests, concurrency: int) -> tuple[float, list[float], dict[int, list[float]]]:
    """Workers pull the next request from one shared list until it is empty: the same total work
    at every concurrency. Returns (wall seconds, per-request latencies, scores by request)."""
    latencies, scores, lock, position = [], {}, threading.Lock(), [0]
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if position[0] >= len(requests) or errors:
                    return
                index = position[0]
                position[0] += 1
            query, passages = requests[index]
            start = time.perf_counter()
            try:
                out = system.score(query, passages)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                with lock:
                    errors.append(err)
                return
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                scores[index] = out

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start, latencies, scores


def measure(system, requests, concurrency: int, trials: int, reference: np.ndarray | None, counters=None) -> dict:
    """`trials` timed passes at one concurrency. `counters()` -> {"useful", "padded", ...} so far."""
    pairs = sum(len(p) for _, p in requests)
    before = counters() if counters else None
    load = os.getloadavg()[0]
    rates, latencies, worst = [], [], 0.0
    for _ in range(trials):
        wall, lat, scores = one_pass(system, requests, concurrency)
        rates.append(pairs / wall)
        latencies += lat
        flat = np.concatenate([np.asarray(scores[i], dtype=np.float64) for i in range(len(requests))])
        if reference is not None:
            worst = max(worst, float(np.max(np.abs(flat - reference))))
    after = counters() if counters else None
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "trials": [round(r, 3) for r in rates],
        "pairs_per_s": round(float(np.median(rates)), 3),
        "pairs_per_s_min": round(min(rates), 3),
        "pairs_per_s_max": round(max(rates), 3),
        "p50_ms_per_request": round(float(np.percentile(latencies, 50)) * 1e3, 1),
        "p95_ms_per_request": round(float(np.percentile(latencies, 95)) * 1e3, 1),
        "latency_samples": len(latencies),
        "load_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
        "scores": flat,
    }
    if before is not None and after is not None:
        delta = {k: after[k] - before[k] for k in before}
        useful, padded = delta["useful"], delta["padded"]
        result.update(
            useful_tokens=int(useful),
            computed_tokens=int(padded),
            padding_efficiency=round(useful / padded, 4) if padded else None,
        )
        if delta.get("cross_encoder_requests"):
            # Where server time goes: the cross-encoder's dynamic-batcher queue, per request it ran.
            result["cross_encoder_queue_ms_per_request"] = round(
                delta["cross_encoder_queue_us"] / delta["cross_encoder_requests"] / 1e3, 1
            )
            result["server_requests_per_call"] = round(delta["rerank_requests"] / (trials * len(requests)), 2)
    if reference is not None:
        result["max_abs_logit_vs_ort"] = float(f"{worst:.3g}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape",
        choices=("bench", "tiny"),
        default="bench",
        help="bench: 6 x 1024 random weights (headline numbers); tiny: overhead only",
    )
    parser.add_argument("--requests", type=int, default=4, help="rerank requests per trial (shared by the workers)")
    parser.add_argument("--passages", type=int, default=6, help="passages per request")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS_DEFAULT,
        help="compute threads of every system (ORT intra-op, torch, OMP/MKL)",
    )
    parser.add_argument("--systems", default="ort,triton,variant,crossencoder,flagreranker,infinity")
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--infinity-venv", type=Path, default=Path("runs/venv-infinity"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="re-write the MD/PNG (and the analysis in the JSON) from a saved bench JSON; measures nothing",
    )
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render, args.out)
    if args.threads != THREADS_DEFAULT:
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    started = time.time()
    wanted = set(args.systems.split(","))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    import torch

    # Process-wide for the two PyTorch peers (they run in this process).
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from transformers import AutoTokenizer

    from local_triton.server import TritonServer, free_port

    model_dir, repo = ensure_model(args.shape, args.work, args.threads)
    config = json.loads((model_dir / "config.json").read_text())
    layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    limits = ServingLimits()
    tokenizer_json = str(repo / "tokenizer" / "1" / "tokenizer.json")
    pair_tokenizer = load_pair_tokenizer(repo / "tokenizer" / "1", limits)
    raw = workload(tokenizer_json, args.requests, args.passages, limits.max_length)
    inputs = same_inputs.prepare(
        pair_tokenizer, AutoTokenizer.from_pretrained(str(model_dir), use_safetensors=True), raw
    )
    requests = inputs.requests
    lengths = [n for request in inputs.lengths for n in request]
    useful_flops = sum(machine.flops_per_pair(n, layers, hidden) for n in lengths)
    from common.serving_code import pair_tokenization_module
    from reranker_client.lengths import token_counter
    from reranker_client.server_limits import ServerLimits

    count = token_counter(tokenizer_json)
    published = ServerLimits(
        limits.max_batch_size,
        limits.max_length,
        limits.buckets,
        limits.max_text_bytes,
        limits.query_max_length,
        pair_tokenization_module().SPECIAL_TOKENS_PER_PAIR,
    )

    def token_length(query: str, passage: str) -> int:
        return published.pair_tokens(count(query), count(passage))

    facts = machine.facts()
    facts.update(
        {
            "model": f"random-weight XLMRobertaForSequenceClassification, {layers} layers x {hidden} hidden "
            f"({args.shape}: {'headline' if args.shape == 'bench' else 'overhead only'})",
            "workload": f"{args.trials} trials x {args.requests} requests x {args.passages} passages per point; "
            f"texts cut in advance to max_length {limits.max_length} with our tokenization",
            "length_mix": LENGTH_MIX,
            "pair_tokens_mean": round(float(np.mean(lengths)), 1),
            "pair_tokens_max": max(lengths),
            "pairs_cut_to_max_length": inputs.cut,
            "pairs_recut": inputs.recut,
            "threads": args.threads,
            "concurrencies": concurrencies,
            "trials": args.trials,
            "warm_up": "one untimed pass over the trial's requests at concurrency 1, per system",
            "load_1m_at_start": round(os.getloadavg()[0], 2),
        }
    )
    print(f"[bench] {json.dumps(facts)}", flush=True)

    def row(name: str, result: dict, threads: dict, padding_source: str | None, precision: str = "fp32") -> dict:
        useful_per_s = useful_flops * result["pairs_per_s"] / len(lengths)
        out = {
            "system": name,
            "precision": precision,
            **{k: v for k, v in result.items() if k != "scores"},
            "threads": threads,
            "concurrency_means": CONCURRENCY_MEANS.get(name),
            "padding_source": padding_source,
            "gflops": round(useful_per_s / 1e9, 1),
        }  # of_gemm_peak: at the end, against the best GEMM rate
        out.setdefault("padding_efficiency", None)
        agreement = out.get("max_abs_logit_vs_ort")
        out["same_inputs"] = agreement is not None and agreement <= LOGIT_TOLERANCE
        return out

    rows, skipped, unsupported, reference = [], {}, {}, None
    ort_threads = {"onnxruntime_intra_op": args.threads, "onnxruntime_inter_op": 1}

    def run_points(name, system, threads, padding_source, counters, points=None):
        nonlocal reference
        print(f"[bench] {name}: warm-up", flush=True)
        _, _, scores = one_pass(system, requests, 1)  # identical warm-up for every system
        if reference is None:
            reference = np.concatenate([np.asarray(scores[i], dtype=np.float64) for i in range(len(requests))])
        for c in concurrencies if points is None else points:
            print(f"[bench] {name}: concurrency {c}, {args.trials} trials (load {os.getloadavg()[0]:.2f})", flush=True)
            try:
                result = measure(system, requests, c, args.trials, reference, counters)
            except Exception as err:  # noqa: BLE001 - a concurrency a system cannot take is reported
                if c == 1:
                    raise
                # e.g. FlagReranker from several threads: its fast tokenizer (Rust) is not
                # re-entrant ("Already borrowed"). Higher concurrencies are not tried.
                unsupported[f"{name} at concurrency >= {c}"] = f"{type(err).__name__}: {err}"[:200]
                print(f"[bench]   not supported: {unsupported[f'{name} at concurrency >= {c}']}", flush=True)
                break
            rows.append(row(name, result, threads, padding_source))
            r = rows[-1]
            print(
                f"[bench]   {r['pairs_per_s']} pairs/s ({r['pairs_per_s_min']}-{r['pairs_per_s_max']}), "
                f"padding {r['padding_efficiency']}, max|dlogit| {r['max_abs_logit_vs_ort']}",
                flush=True,
            )

    # The reference first: in-process ONNX Runtime's warm-up pass gives the logits every row is compared with.
    ort = systems.OnnxRuntimeSystem(repo, pair_tokenizer, limits.max_batch_size, token_length, threads=args.threads)
    run_points(
        ORT,
        ort,
        ort_threads,
        "counted in process (the batches it ran)",
        in_process_counters(ort.tokens),
        None if "ort" in wanted else [],
    )
    del ort
    gc.collect()

    if wanted & {"triton", "variant"}:
        triton_threads = {
            "cross_encoder_onnxruntime_intra_op": args.threads,
            "cross_encoder_instances": 1,
            "tokenizer_instances": 2,
            "tokenizer_threads_each": 1,
            "OMP_NUM_THREADS": args.threads,
            "client_chunk_concurrency": 2,
        }
        with TritonServer(
            repo, free_port(), free_port(), free_port(), log_path=args.work / "bench_tritonserver.log"
        ) as server:

            def counters():
                return server_counters(server.metrics_url)

            if "triton" in wanted:
                triton = systems.TritonClientSystem(server.grpc_url, count)
                run_points(OURS, triton, triton_threads, "server_metrics", counters)
                triton.client.close()
            if "variant" in wanted:
                plain = systems.TritonClientSystem(server.grpc_url)
                run_points(VARIANT, plain, triton_threads, "server_metrics", counters, [1])
                plain.client.close()

    torch_threads = {"torch_intra_op": args.threads, "torch_inter_op": 1}
    peers: list[tuple[str, Callable[[], Any], dict[str, Any], str | None]] = []
    if "crossencoder" in wanted:
        peers.append(
            (
                "sentence-transformers CrossEncoder",
                lambda: systems.CrossEncoderSystem(model_dir, limits.max_length),
                torch_threads,
                "forward() hook on the model",
            )
        )
    if "flagreranker" in wanted:
        peers.append(
            (
                "FlagReranker",
                lambda: systems.FlagRerankerSystem(model_dir, limits.max_length),
                torch_threads,
                "forward() hook on the model",
            )
        )
    if "infinity" in wanted:
        python = systems.infinity_python(args.infinity_venv)
        if python:
            peers.append(
                (
                    "Infinity",
                    lambda: systems.InfinitySystem(
                        python, model_dir, free_port(), args.work / "bench_infinity.log", threads=args.threads
                    ),
                    {
                        "OMP_NUM_THREADS": args.threads,
                        "MKL_NUM_THREADS": args.threads,
                        "note": "own process; torch reads the environment",
                    },
                    None,
                )
            )
        else:
            skipped["Infinity"] = f"infinity-emb not importable in {args.infinity_venv} (see `make bench` output)"
    for name, make, threads, source in peers:
        system = None
        try:
            system = make()
            run_points(
                name, system, threads, source, in_process_counters(system.tokens) if hasattr(system, "tokens") else None
            )
        except Exception as err:  # noqa: BLE001 - a peer that fails is reported, not fatal
            skipped[name] = f"{type(err).__name__}: {err}"[:300]
        finally:
            if system is not None and hasattr(system, "close"):
                system.close()
            del system
            gc.collect()

    facts["load_1m_at_end"] = round(os.getloadavg()[0], 2)
    # The GEMM ceiling again: a rate measured while other work ran is too low, so keep the best.
    facts["fp32_gemm_gflops_at_start"] = facts["fp32_gemm_gflops"]
    facts["fp32_gemm_gflops_at_end"] = round(machine.gemm_gflops(), 1)
    facts["fp32_gemm_gflops"] = max(facts["fp32_gemm_gflops_at_start"], facts["fp32_gemm_gflops_at_end"])
    for r in rows:
        r["of_gemm_peak"] = round(r["gflops"] / facts["fp32_gemm_gflops"], 3)
    facts["duration_s"] = round(time.time() - started)
    report = analyse(rows, args.shape, concurrencies)
    report["concurrency_not_supported"] = unsupported
    write(args.out, args.shape, facts, rows, report, skipped)
    return 0


def render(saved: Path, out: Path) -> int:
    """The analysis is a pure function of the measured rows: recompute it and the files from them."""
    data = json.loads(saved.read_text())
    shape = "tiny" if "tiny" in data["facts"]["model"] else "bench"
    report = analyse(data["rows"], shape, data["facts"]["concurrencies"])
    report["concurrency_not_supported"] = data.get("concurrency_not_supported", {})
    data["facts"].setdefault("rendered_from", str(saved))
    write(out, shape, data["facts"], data["rows"], report, data.get("skipped", {}))
    return 0


def _valid(rows: list[dict], name: str) -> dict[int, dict]:
    return {r["concurrency"]: r for r in rows if r["system"] == name and r["same_inputs"]}


def _best(points: dict[int, dict]) -> dict | None:
    return max(points.values(), key=lambda r: r["pairs_per_s"]) if points else None


def analyse(rows: list[dict], shape: str, concurrencies: list[int]) -> dict:
    """Ratios at equal concurrency and at each system's best, and every target with its verdict
    and, for a miss, by how much and what the measurements say about why."""
    ours, ort = _valid(rows, OURS), _valid(rows, ORT)
    peers = {name: _valid(rows, name) for name in PEERS}
    peers = {name: points for name, points in peers.items() if points}
    flagged = sorted(
        {
            f"{r['system']} (c={r['concurrency']}: max |dlogit| {r.get('max_abs_logit_vs_ort')})"
            for r in rows
            if not r["same_inputs"]
        }
    )
    equal, best = [], []
    for c in concurrencies:
        if c not in ours:
            continue
        line = {"concurrency": c, "triton_pairs_per_s": ours[c]["pairs_per_s"]}
        if c in ort:
            line["vs_onnxruntime"] = round(ours[c]["pairs_per_s"] / ort[c]["pairs_per_s"], 3)
        for name, points in peers.items():
            if c in points:
                line[f"vs {name}"] = round(ours[c]["pairs_per_s"] / points[c]["pairs_per_s"], 3)
        rivals = {n: p[c] for n, p in peers.items() if c in p}
        if rivals:
            name, r = max(rivals.items(), key=lambda kv: kv[1]["pairs_per_s"])
            line["best_peer"], line["vs_best_peer"] = name, round(ours[c]["pairs_per_s"] / r["pairs_per_s"], 3)
        equal.append(line)
    our_best, ort_best = _best(ours), _best(ort)
    if our_best:
        best.append({"system": OURS, "concurrency": our_best["concurrency"], "pairs_per_s": our_best["pairs_per_s"]})
        if ort_best:
            best.append(
                {
                    "system": ORT,
                    "concurrency": ort_best["concurrency"],
                    "pairs_per_s": ort_best["pairs_per_s"],
                    "triton_best_over_this_best": round(our_best["pairs_per_s"] / ort_best["pairs_per_s"], 3),
                }
            )
        for name, points in peers.items():
            b = _best(points)
            if b is None:  # peers hold only systems with valid points
                continue
            best.append(
                {
                    "system": name,
                    "concurrency": b["concurrency"],
                    "pairs_per_s": b["pairs_per_s"],
                    "triton_best_over_this_best": round(our_best["pairs_per_s"] / b["pairs_per_s"], 3),
                }
            )
    verdicts = []

    def overlap(a: dict, b: dict) -> str:
        if a["pairs_per_s_min"] <= b["pairs_per_s_max"] and b["pairs_per_s_min"] <= a["pairs_per_s_max"]:
            return (
                f" (trial ranges overlap: {a['pairs_per_s_min']}-{a['pairs_per_s_max']} vs "
                f"{b['pairs_per_s_min']}-{b['pairs_per_s_max']} pairs/s; the medians' order is not settled)"
            )
        return ""

    def check(label: str, value: float, goal: float, why: str, pair: tuple | None = None) -> None:
        label += overlap(*pair) if pair else ""
        if value >= goal:
            verdicts.append(f"{label}: {value:.2f} (target >= {goal}) - met")
        else:
            verdicts.append(
                f"{label}: {value:.2f} (target >= {goal}) - MISSED by {goal - value:.2f} "
                f"({(goal - value) / goal:.0%} short). Why: {why}"
            )

    for c in sorted(ours):
        if c in ort:
            o, t = ort[c], ours[c]
            extra = t["p50_ms_per_request"] - o["p50_ms_per_request"]
            check(
                f"Triton / in-process ONNX Runtime at concurrency {c}",
                t["pairs_per_s"] / o["pairs_per_s"],
                TARGETS["ort"],
                f"p50 per request is {extra:+.0f} ms vs in-process ({o['p50_ms_per_request']:.0f} ms): gRPC, "
                f"the ensemble's tokenizer step in separate Python processes and tensor copies through shared "
                f"memory run on the same cores as the model; the in-process run has none of them. "
                f"The cross-encoder queue held each of its requests {t.get('cross_encoder_queue_ms_per_request')} "
                f"ms on average (Triton's metric; a call became {t.get('server_requests_per_call')} server "
                f"requests): waiting for its one instance, plus ~500 ms stalls when two requests of different "
                f"length buckets leave the tokenizer together (benchmarks/batcher_stall.py reproduces it). "
                f"Padding was {t['padding_efficiency']} (server) vs {o['padding_efficiency']} (in process).",
                (t, o),
            )
    if our_best and ort_best:
        check(
            f"Triton best (c={our_best['concurrency']}) / in-process ONNX Runtime best (c={ort_best['concurrency']})",
            our_best["pairs_per_s"] / ort_best["pairs_per_s"],
            TARGETS["ort"],
            "see the equal-concurrency lines: the same per-request overhead, not amortised by concurrency "
            "on 2 cores that the model already fills.",
            (our_best, ort_best),
        )
    for line in equal:
        if "best_peer" in line:
            p, t = peers[line["best_peer"]][line["concurrency"]], ours[line["concurrency"]]
            check(
                f"Triton / best peer ({line['best_peer']}) at concurrency {line['concurrency']}",
                line["vs_best_peer"],
                TARGETS["peer"],
                f"useful work done: ours {t['gflops']} GFLOP/s vs {p['gflops']}; padding {t['padding_efficiency']} "
                f"vs {p['padding_efficiency']}; both run the same model on the same 2 cores, so the gap left is "
                f"runtime (ONNX Runtime vs PyTorch) minus our serving overhead, which random-weight fp32 "
                f"on CPU keeps small.",
                (t, p),
            )
    best_peer = max((b for b in best if b["system"] in PEERS), key=lambda b: b["pairs_per_s"], default=None)
    if our_best and best_peer:
        check(
            f"Triton best / best peer's best ({best_peer['system']}, c={best_peer['concurrency']})",
            best_peer["triton_best_over_this_best"],
            TARGETS["peer"],
            "as at equal concurrency: the runtime gap between ONNX Runtime and PyTorch at fp32 on this CPU is "
            "smaller than 1.2x once inputs are identical.",
        )
    variant = next((r for r in rows if r["system"] == VARIANT), None)
    for c, t in sorted(ours.items()):
        if t.get("padding_efficiency") is not None:
            contrast = ""
            if variant and variant.get("padding_efficiency") is not None:
                contrast = (
                    f" The client without a tokenizer split calls into {variant.get('server_requests_per_call')} "
                    f"requests each and padded less ({variant['padding_efficiency']}) but ran at "
                    f"{variant['pairs_per_s']} pairs/s: fewer, fuller requests are the client's trade."
                )
            check(
                f"Triton padding efficiency, measured by the server, concurrency {c}",
                t["padding_efficiency"],
                TARGETS["padding"],
                f"every pair of one server request is padded to the length bucket of the request's longest pair; "
                f"the token-aware client sent {t.get('server_requests_per_call')} requests per call, so "
                f"short and long passages of one call share requests.{contrast}",
            )
    if shape == "tiny":
        verdicts.insert(
            0, "(overhead-only model: per-request costs dominate; the targets apply to the headline `bench` run)"
        )
    return {
        "ratios_at_equal_concurrency": equal,
        "best_of_each_system": best,
        "targets": verdicts,
        "excluded_from_ratios": flagged,
    }


def write(out: Path, shape: str, facts: dict, rows: list[dict], report: dict, skipped: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{shape}"
    (out / f"{stem}.json").write_text(
        json.dumps(
            {
                "padding_source": "server_metrics",
                "padding_note": "Triton rows: reranker_tokenizer_{useful,padded}_tokens_total read from :8002 "
                "before and after each "
                "point; other rows: counted in process (see padding_source per row); Infinity: not observable.",
                "logit_tolerance": LOGIT_TOLERANCE,
                "shared_machine": SHARED_MACHINE_NOTE,
                "facts": facts,
                "rows": rows,
                **report,
                "skipped": skipped,
            },
            indent=1,
        )
        + "\n"
    )
    cols = [
        "system",
        "concurrency",
        "pairs_per_s",
        "min-max",
        "p50_ms_per_request",
        "p95_ms_per_request",
        "padding_efficiency",
        "cross_encoder_queue_ms_per_request",
        "gflops",
        "of_gemm_peak",
        "max_abs_logit_vs_ort",
        "load_1m",
    ]
    lines = [
        f"# Benchmark ({shape}): {facts['model']}",
        "",
        f"{facts['workload']}; mean pair length {facts['pair_tokens_mean']} tokens (max {facts['pair_tokens_max']}, "
        f"{facts['pairs_cut_to_max_length']} pairs cut); CPU {facts['cpu']} x {facts['cores']} cores; "
        f"fp32 GEMM {facts['fp32_gemm_gflops']} GFLOP/s; {facts['threads']} compute threads per system; "
        f"took {facts['duration_s']} s.",
        "",
        f"**Shared machine.** {SHARED_MACHINE_NOTE}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = {
            **r,
            "min-max": f"{r['pairs_per_s_min']}-{r['pairs_per_s_max']}",
            "load_1m": "-".join(str(v) for v in r["load_1m"]),
            "max_abs_logit_vs_ort": f"{r.get('max_abs_logit_vs_ort')}" + ("" if r["same_inputs"] else " EXCLUDED"),
        }
        lines.append("| " + " | ".join("" if cells.get(c) is None else str(cells[c]) for c in cols) + " |")
    lines += [
        "",
        "pairs_per_s: median of the trials; min-max: the slowest and fastest trial. Latency percentiles "
        "are over all requests of all trials (`latency_samples` in the JSON). padding_efficiency = useful / "
        "computed tokens: Triton rows from the server's metrics, ONNX Runtime and the PyTorch peers counted "
        "in process, Infinity not observable (empty). cross_encoder_queue_ms_per_request (Triton rows): "
        "Triton's nv_inference_queue_duration_us / requests for the cross-encoder over the point.",
        "",
        "## Ratios at equal concurrency (medians)",
        "",
    ]
    for line in report["ratios_at_equal_concurrency"]:
        lines.append(
            "- c="
            + str(line["concurrency"])
            + ": "
            + ", ".join(f"{k} {v}" for k, v in line.items() if k not in ("concurrency",))
        )
    lines += ["", "## Each system at its best concurrency", ""]
    for b in report["best_of_each_system"]:
        lines.append(
            f"- {b['system']}: {b['pairs_per_s']} pairs/s at c={b['concurrency']}"
            + (f" (Triton best / this: {b['triton_best_over_this_best']})" if "triton_best_over_this_best" in b else "")
        )
    lines += ["", "## Targets", *[f"- {v}" for v in report["targets"]]]
    if report["excluded_from_ratios"]:
        lines += [
            "",
            f"## Excluded from ratios (max |logit - in-process ONNX Runtime| > {LOGIT_TOLERANCE})",
            *[f"- {v}" for v in report["excluded_from_ratios"]],
        ]
    if report.get("concurrency_not_supported"):
        lines += [
            "",
            "## Concurrency a system does not support",
            *[f"- {k}: {v}" for k, v in report["concurrency_not_supported"].items()],
        ]
    if skipped:
        lines += ["", "## Not measured", *[f"- {k}: {v}" for k, v in skipped.items()]]
    lines += [
        "",
        "## What these numbers do not show",
        "",
        "- Random weights, fp32, CPU: relative costs of serving paths on this machine, not GPU throughput or "
        "quality (see scripts/gpu_bench.sh for the GPU comparison).",
        "- Small requests (few passages) so that every point gets >= 5 trials within the time budget; "
        "100-passage requests amortise per-request overhead more (use --passages).",
        "- In-process systems (ONNX Runtime, CrossEncoder, FlagReranker) run concurrency as threads sharing "
        "one model; they have no network, queue or process boundary.",
        "- of_gemm_peak compares useful FLOPs with the best fp32 GEMM rate measured at start and end; on a shared "
        "machine that rate can itself be depressed, so values near or above 1 mean 'as fast as this machine "
        "allowed', not more than peak.",
        "",
        f"![pairs per second]({stem}.png)",
        "",
        "```json",
        json.dumps(facts),
        "```",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(out / f"{stem}.png", shape, facts, rows)
    print("\n".join(lines))


def plot(path: Path, shape: str, facts: dict, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(dict.fromkeys(r["system"] for r in rows))
    for name in names:
        points = sorted((r for r in rows if r["system"] == name), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in points]
        ys = [r["pairs_per_s"] for r in points]
        err = [
            [y - r["pairs_per_s_min"] for y, r in zip(ys, points)],
            [r["pairs_per_s_max"] - y for y, r in zip(ys, points)],
        ]
        label = name.split(" (")[0] + ("" if all(r["same_inputs"] for r in points) else " (EXCLUDED: logits differ)")
        left.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        right.plot(xs, [r["p50_ms_per_request"] for r in points], marker="o", label=label)
    left.set(xlabel="concurrency", ylabel="pairs / s (median, min-max bars)", title="throughput (higher is better)")
    right.set(xlabel="concurrency", ylabel="p50 ms per request", title="latency (lower is better)")
    for ax in (left, right):
        ax.set_xticks(sorted({r["concurrency"] for r in rows}))
        ax.grid(alpha=0.3)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.legend(fontsize=7)
    fig.suptitle(f"{shape}: {facts['model']}; {facts['workload']}; shared 2-core machine", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
