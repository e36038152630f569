"""int8 vs fp32 on CPU: the graphs the CPU profile serves, run by ONNX Runtime in process.

    python -m benchmarks.int8_vs_fp32 [--shape bench|real|tiny|trained] [--trials 7] [--out benchmarks/results]

What one trial is: one 100-passage request (the certificate's ranking list: one query, 100
passages, 39-417 tokens, mean 170) tokenized by the serving tokenizer code, sorted by length and cut
into batches of 16 rows (as the export gates batch; the token-aware client also sends a 100-passage
call as several bucketed requests), each padded to its length bucket. Both graphs run the same
batches. `--passages` takes the first N passages (the `real` shape needs it on 2 cores).

Method (issue 30's, in a small script of its own): both sessions are loaded side by side; each
trial runs the two precisions once each in a random order (round-robin, so drifting load from
other work on a shared machine hits both alike); the per-trial ratio t_fp32 / t_int8 is the
throughput ratio of that trial; its 95% interval is a percentile bootstrap over trials. p50 is
the median request time over trials. Memory per instance: the peak RSS (VmHWM) of a fresh process
that loads one session and runs the request's longest batch (what one Triton instance of that graph holds).
Fidelity beside it: int8 vs the fp32 graph on the same 100 passages (max |d logit|, max |d score|,
Kendall tau, top-10) - a proxy against fp32 ONNX, not the export gate's fp32 PyTorch certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import interleave
from export import cpu_isa
from export.int8_quantization import shipped_recipe
from export.settings import ServingLimits
from export.tensorrt_profiles import length_classes

ROOT = Path(__file__).resolve().parent.parent
TRAINED = "trained"  # common/trained_standin.py's model (4 x 128), the others common/standin_model.py's shapes


def prepare(shape: str, work: Path, max_length: int, rung: int = 0) -> dict[str, Path]:
    """Stand-in model -> fp32 ONNX (the export's graph) -> int8 ONNX at escalation rung `rung` (0: the
    first; the gate decides which rung an export ships, e.g. 3 for the trained stand-in: docs/CPU.md).
    Reused when already there."""
    from common import standin_model
    from export.int8_quantization import INT8_ESCALATION, quantize_int8
    from export.onnx_export import export_onnx

    model_dir = work / f"model_{shape}"
    fp32 = work / f"fp32_{shape}" / "model.onnx"
    # The recipe follows this CPU's int8 kernel (export/int8_quantization.recipe_for): one graph per recipe.
    rung_suffix = f"_rung{rung}" if rung else ""
    int8 = work / f"int8_{shape}_{recipe_name(shipped_recipe())}{rung_suffix}" / "model.onnx"
    if shape == TRAINED:
        from common import trained_standin

        cached = model_dir / "model.safetensors"
        if cached.exists() and trained_standin.weights_sha256(model_dir) != trained_standin.SHA256:
            # Trained by an older recipe (or another stack): its graphs would be measured as today's.
            print(f"[int8-bench] {model_dir}: weights differ from the pinned sha256, training again", flush=True)
            for stale in (model_dir, fp32.parent, *work.glob(f"int8_{shape}_*")):
                shutil.rmtree(stale, ignore_errors=True)
        if not cached.exists():
            trained_standin.build(model_dir)
        layers = trained_standin.RECIPE.layers
    else:
        if not (model_dir / "model.safetensors").exists():
            standin_model.build(model_dir, shape)
        layers = standin_model.SHAPES[shape].layers
    if not fp32.exists():
        from transformers import XLMRobertaForSequenceClassification

        model = XLMRobertaForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
        export_onnx(model, fp32, max_length)
        del model
    if not int8.exists():
        quantize_int8(fp32, int8, layers, INT8_ESCALATION[rung])
    return {"model": model_dir, "fp32": fp32, "int8": int8}


def request_batches(
    model_dir: Path, limits: ServingLimits, passages_n: int = 100, rows_per_batch: int = 16
) -> tuple[list[dict[str, np.ndarray]], list[list[int]], int]:
    """The batches one 100-passage request becomes (see the module docstring), the row order and
    the real (unpadded) token count."""
    from common.certificate_texts import ranking_list
    from common.pair_tokenizer import load_pair_tokenizer
    from export.onnx_export import INPUT_NAMES
    from reranker_client.certificate import pad_batches

    tokenizer = load_pair_tokenizer(model_dir, limits)
    query, passages = ranking_list()
    rows = []
    for i, passage in enumerate(passages[:passages_n]):
        q, p = tokenizer.tokenizer.encode_batch([query, passage], add_special_tokens=False)
        rows.append(tokenizer.join(i, q.ids, p.ids)[0])
    batch = min(rows_per_batch, length_classes(limits)[0].max_batch)
    feeds, order = [], []
    for chunk, ids, mask in pad_batches(rows, limits.buckets, tokenizer.pad_id, lambda length: batch):
        feeds.append(dict(zip(INPUT_NAMES, (ids, mask))))
        order.append(chunk)
    return feeds, order, sum(len(r) for r in rows)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_request(sess, feeds: list[dict[str, np.ndarray]], order: list[list[int]], rows: int) -> np.ndarray:
    out = np.empty(rows, dtype=np.float64)
    for chunk, feed in zip(order, feeds):
        out[chunk] = sess.run(["logit"], feed)[0].reshape(-1)
    return out


def graph_bytes(path: Path) -> int:
    """The graph file plus its external data file (the real shape's fp32 graph keeps its 2.27 GB of
    weights in model.onnx.data: the .onnx alone is under 1 MiB)."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _status_mib(field: str) -> float:
    """A /proc/self/status memory field in MiB. VmHWM (peak RSS) starts afresh at exec, unlike
    getrusage's ru_maxrss, which Linux carries over from the parent that forked this probe."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(path: str, model_dir: str, threads: int, max_length: int, passages_n: int) -> None:
    """Child mode: load one session, run the request's longest batch, print RSS figures (MiB)."""
    limits = ServingLimits(max_length=max_length)
    feeds, order, _ = request_batches(Path(model_dir), limits, passages_n)
    before = _status_mib("VmHWM")
    sess = session(Path(path), threads)
    loaded = _status_mib("VmRSS")
    # The longest batch (the first: rows are sorted by length) decides the activation peak.
    run_request(sess, feeds[:1], order[:1], sum(len(c) for c in order))
    peak = _status_mib("VmHWM")
    print(json.dumps({"baseline_mib": before, "loaded_mib": loaded, "peak_mib": peak}))


def measure_memory(path: Path, model_dir: Path, threads: int, max_length: int, passages_n: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.int8_vs_fp32", "--memory-probe", str(path), str(model_dir)]
        + ["--threads", str(threads), "--max-length", str(max_length), "--passages", str(passages_n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    facts = json.loads(out.splitlines()[-1])
    # The session's own share: peak minus what the process held before loading (python, numpy,
    # tokenizer). A Triton instance adds its stub's baseline on top.
    return {**facts, "session_peak_mib": facts["peak_mib"] - facts["baseline_mib"]}


def fidelity(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> dict:
    from export.certificate import INT8
    from reranker_client.certificate import TOP_K, kendall_tau, sigmoid, top_k_agreement

    same_set, order_ok = top_k_agreement(fp32_logits, int8_logits, TOP_K, INT8.tie_logit)
    return {
        "reference": "the fp32 ONNX graph on the same batches (proxy: the export gate compares with fp32 PyTorch)",
        "max_abs_logit": float(np.max(np.abs(int8_logits - fp32_logits))),
        "max_abs_score": float(np.max(np.abs(sigmoid(int8_logits) - sigmoid(fp32_logits)))),
        "kendall_tau": kendall_tau(fp32_logits, int8_logits),
        "top10_same_set": same_set,
        "top10_order_ok": order_ok,
        "int8_bounds": vars(INT8),
    }


def recipe_name(recipe) -> str:
    weights = "u8" if recipe.weights_uint8 else "s8"
    return f"u8{weights}_{'per_channel' if recipe.per_channel else 'per_tensor'}"


def run(args: argparse.Namespace) -> dict:
    limits = ServingLimits(max_length=args.max_length)
    paths = prepare(args.shape, args.work, args.max_length, args.rung)
    feeds, order, real_tokens = request_batches(paths["model"], limits, args.passages)
    rows = sum(len(c) for c in order)
    padded_tokens = sum(int(f["input_ids"].size) for f in feeds)
    sessions = {name: session(paths[name], args.threads) for name in ("fp32", "int8")}
    logits = {name: run_request(s, feeds, order, rows) for name, s in sessions.items()}  # warm-up
    rng = random.Random(args.seed)
    seconds: dict[str, list[float]] = {"fp32": [], "int8": []}
    orders = []
    load = [os.getloadavg()[0]]
    for trial in range(args.trials):
        names = ["fp32", "int8"]
        rng.shuffle(names)
        orders.append(names)
        for name in names:
            start = time.perf_counter()
            run_request(sessions[name], feeds, order, rows)
            seconds[name].append(time.perf_counter() - start)
        load.append(os.getloadavg()[0])
        print(
            f"[int8-bench] trial {trial + 1}/{args.trials} {names}: fp32 {seconds['fp32'][-1]:.2f}s "
            f"int8 {seconds['int8'][-1]:.2f}s ratio {seconds['fp32'][-1] / seconds['int8'][-1]:.2f}",
            flush=True,
        )
    del sessions
    ratios = [f / i for f, i in zip(seconds["fp32"], seconds["int8"])]
    memory = {
        name: measure_memory(paths[name], paths["model"], args.threads, args.max_length, args.passages)
        for name in ("fp32", "int8")
    }
    result = {
        "shape": args.shape,
        "request": {
            "passages": rows,
            "real_tokens": real_tokens,
            "padded_tokens": padded_tokens,
            "batches": len(feeds),
        },
        "threads": {"intra_op": args.threads, "inter_op": 1},
        "trials": args.trials,
        "orders": orders,
        "seconds": seconds,
        "p50_seconds": {k: float(np.median(v)) for k, v in seconds.items()},
        "pairs_per_s_median": {k: rows / float(np.median(v)) for k, v in seconds.items()},
        "ratio_per_trial": ratios,
        "ratio_median": float(np.median(ratios)),
        "ratio_median_95ci": list(interleave.bootstrap_median(np.asarray(ratios, dtype=np.float64))),
        "target_ratio": 2.5,
        "memory": memory,
        "graph_mib": {k: round(graph_bytes(paths[k]) / 2**20, 1) for k in ("fp32", "int8")},
        "fidelity": fidelity(logits["fp32"], logits["int8"]),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "cpu_flags": cpu_isa.cpu_flags(),
            # ONNX Runtime's int8 GEMM kernel on this CPU and the recipe it got (export/cpu_isa.py)
            "mlas_u8s8_kernel": cpu_isa.mlas_u8s8_kernel(cpu_isa.cpu_flags()),
            "int8_recipe": recipe_name(shipped_recipe()),
            "int8_rung": args.rung,
            "load_avg_1m_during": load,
            "shared": "yes: a 2-core machine shared with other agents' work; run under flock /tmp/heavy.lock "
            "(no server tests at the same time), other light work did run",
            "locked": bool(os.environ.get("INT8_BENCH_LOCKED")),
        },
        "weights": (
            "trained stand-in (common/trained_standin.py, 4 x 128): fidelity of a trained model, not the real one"
            if args.shape == TRAINED
            else "random (stand-in): speed depends on shapes only; fidelity here says nothing about the real model"
        ),
    }
    return result


def _cpu_model() -> str:
    from benchmarks.machine import cpu_model

    return cpu_model()


def markdown(result: dict) -> str:
    r, f, m = result, result["fidelity"], result["memory"]
    lo, hi = r["ratio_median_95ci"]
    p50 = r["p50_seconds"]
    verdict = "met (the whole interval above it)" if lo >= r["target_ratio"] else "NOT met"
    return "\n".join(
        [
            f"# int8 vs fp32 on CPU, `{r['shape']}` stand-in ({r['trials']} interleaved trials)",
            "",
            "Written by `python -m benchmarks.int8_vs_fp32` (method in its docstring and docs/CPU.md).",
            "",
            f"One request = {r['request']['passages']} passages ({r['request']['real_tokens']} tokens, "
            f"{r['request']['padded_tokens']} padded, {r['request']['batches']} batches); ONNX Runtime CPU, "
            f"intra-op {r['threads']['intra_op']} threads; {m_cpu(r)}.",
            "",
            "| | fp32 | int8 |",
            "|---|---|---|",
            f"| p50 per {r['request']['passages']}-passage request (s) | {p50['fp32']:.2f} | {p50['int8']:.2f} |",
            f"| peak RSS per instance, whole process (MiB) | {m['fp32']['peak_mib']:.0f} | "
            f"{m['int8']['peak_mib']:.0f} |",
            f"| pairs/s (median) | {r['pairs_per_s_median']['fp32']:.2f} | {r['pairs_per_s_median']['int8']:.2f} |",
            f"| peak RSS per instance, session share (MiB) | {m['fp32']['session_peak_mib']:.0f} | "
            f"{m['int8']['session_peak_mib']:.0f} |",
            f"| graph file, external data included (MiB) | {r['graph_mib']['fp32']} | {r['graph_mib']['int8']} |",
            "",
            f"**Throughput ratio int8/fp32: {r['ratio_median']:.2f}x (median of per-trial ratios; 95% bootstrap "
            f"interval {lo:.2f}-{hi:.2f}); target {r['target_ratio']}x: {verdict}.**",
            "",
            f"Fidelity (int8 vs fp32 ONNX on the same {r['request']['passages']} passages): max |d logit| "
            f"{f['max_abs_logit']:.3g}, max |d score| {f['max_abs_score']:.3g}, Kendall tau {f['kendall_tau']:.4f}, "
            f"top-10 set {'same' if f['top10_same_set'] else 'DIFFERENT'} (int8 bounds: logit "
            f"{f['int8_bounds']['max_abs_logit']}, score {f['int8_bounds']['max_abs_score']}, tau "
            f">= {f['int8_bounds']['min_kendall_tau']}).",
            "",
            f"Machine: {r['machine']['shared']}. 1-minute load average during the run: "
            f"{min(r['machine']['load_avg_1m_during']):.1f}-{max(r['machine']['load_avg_1m_during']):.1f}.",
            f"Weights: {r['weights']}.",
            "",
        ]
    )


def m_cpu(r: dict) -> str:
    m = r["machine"]
    flags = m["cpu_flags"]
    kernel = ""
    if "int8_recipe" in m:  # result files written before the recipe followed the CPU do not say
        kernel = f"; ONNX Runtime int8 kernel {m['mlas_u8s8_kernel']}, recipe {m['int8_recipe']}"
        kernel += f", escalation rung {m.get('int8_rung', 0)}"
    return f"{m['cpu']}, {m['cores']} cores, flags visible: {' '.join(flags) or 'none'}{kernel}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_vs_fp32", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "bench", "real", TRAINED), default="bench")
    parser.add_argument("--trials", type=int, default=5, help="5 keeps the bench shape under ~6 min here")
    parser.add_argument("--passages", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (2: this machine)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "int8_bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--recipe",
        choices=("auto", "vnni", "no-vnni"),
        default="auto",
        help="int8 weights: auto = what the export ships on this CPU (export/int8_quantization.recipe_for); "
        "vnni = s8 (optimum's avx512_vnni preset); no-vnni = U8U8",
    )
    parser.add_argument(
        "--rung",
        type=int,
        default=0,
        help="int8 escalation rung (export/int8_quantization.INT8_ESCALATION index): the one the export's gate chose",
    )
    parser.add_argument("--memory-probe", nargs=2, metavar=("GRAPH", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.memory_probe:
        memory_probe(args.memory_probe[0], args.memory_probe[1], args.threads, args.max_length, args.passages)
        return 0
    if args.trials < 2:
        parser.error("--trials must be >= 2 (an interval needs more than one trial)")
    if args.recipe != "auto":
        from export import int8_quantization

        int8_quantization.INT8_RECIPE = (
            int8_quantization.VNNI_RECIPE if args.recipe == "vnni" else int8_quantization.NO_VNNI_RECIPE
        )
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = (
        args.out / f"int8_vs_fp32_{args.shape}"
        if args.passages == 100
        else args.out / f"int8_vs_fp32_{args.shape}_{args.passages}p"
    )
    if args.recipe != "auto":
        stem = stem.with_name(f"{stem.name}_{args.recipe}")
    if args.rung:
        stem = stem.with_name(f"{stem.name}_rung{args.rung}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
