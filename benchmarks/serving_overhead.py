"""What serving adds at low concurrency: the served `rerank` ensemble over bare tritonclient vs the
serving tokenizer + ONNX Runtime in process on the same model.onnx, one request at a time.

    python -m benchmarks.serving_overhead [--shape tiny|bench] [--trials 12] [--requests 12] [--passages 8]

Both sides tokenize with the same code (model_repository/tokenizer/1/pair_tokenization.py) and
run the same ONNX file with the same intra-op threads (the export's `--cpu-threads`; one request
at a time keeps one cross-encoder instance busy). Requests hold passages of similar length (sorted
by length, cut into groups, groups spread over the length mix), so the in-process side runs each
request as one padded batch and the difference is what the server adds: gRPC, the ensemble's
steps, the tokenizer's process, shared-memory copies and the cross-encoder runs it makes
(Triton's own counters, `cross_encoder_runs_per_request`). Systems are interleaved per trial in
random order (benchmarks/interleave.py) and the ratio is paired per trial with a bootstrap 95%
interval. Writes benchmarks/results/serving_overhead_<shape>.{json,md}.
"""

from __future__ import annotations

import os

THREADS = 2
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import interleave  # noqa: E402

SERVED = "Triton rerank (bare tritonclient)"
VIA_ROUTER = "Triton rerank through length_router (the layout before issue 30)"
IN_PROCESS = "serving tokenizer + ONNX Runtime in process"
IN_PROCESS_PARTS = "the same in process, run in the served class model's parts"
ROUTED_ENSEMBLE = "rerank_via_router"
SYSTEMS = (SERVED, VIA_ROUTER, IN_PROCESS, IN_PROCESS_PARTS)
SHORT = {SERVED: "direct", VIA_ROUTER: "router", IN_PROCESS: "in-process", IN_PROCESS_PARTS: "in-process parts"}
# Triton's per-model counters read for the breakdown (nv_inference_<key>).
METRIC_KEYS = (
    "request_success",
    "exec_count",
    "request_duration_us",
    "queue_duration_us",
    "compute_input_duration_us",
    "compute_infer_duration_us",
    "compute_output_duration_us",
)
TARGET = 0.95
SHARED_MACHINE = (
    "Measured on a 2-core machine shared with other agents doing light work (editing, linting, unit tests); "
    "heavy work (servers, benchmarks) was serialised by a shared lock, and this run held it."
)


def similar_length_requests(tokenizer_json: str, requests: int, passages: int, max_length: int) -> list:
    """`requests` x (query, `passages` passages of similar length), spread over the length mix."""
    from loadtest.workload import make_pairs

    pool = sorted(
        make_pairs(tokenizer_json, requests * passages * 4, max_length, seed=0), key=lambda p: p.passage_tokens
    )
    groups = [pool[i : i + passages] for i in range(0, len(pool) - passages + 1, passages)]
    chosen = [groups[round(i * (len(groups) - 1) / max(requests - 1, 1))] for i in range(requests)]
    return [(group[0].query, [p.passage for p in group]) for group in chosen]


def cross_encoder_runs(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = r'^nv_inference_exec_count\{[^}]*model="cross_encoder[^"]*"[^}]*\} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def model_counters(metrics_url: str) -> dict[tuple[str, str], float]:
    """(model, key) -> Triton's cumulative counter, summed over versions and instances."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out: dict[tuple[str, str], float] = {}
    for key in METRIC_KEYS:
        pattern = rf'^nv_inference_{key}\{{[^}}]*model="([^"]+)"[^}}]*\}} ([0-9.e+]+)$'
        for model, value in re.findall(pattern, text, re.M):
            out[(model, key)] = out.get((model, key), 0.0) + float(value)
    return out


def breakdown(before: dict, after: dict, calls: int) -> dict[str, dict[str, float]]:
    """Per model that served these `calls`: its requests and runs per call and its ms per call in
    Triton's queue, input copy, execute and output copy (compute_* are per run, summed)."""
    models = sorted({m for m, _ in after})
    rows = {}
    for model in models:
        d = {k: after.get((model, k), 0.0) - before.get((model, k), 0.0) for k in METRIC_KEYS}
        if d["request_success"] < calls / 2:  # not on this path (or a leftover of another's)
            continue
        rows[model] = {
            "requests_per_call": round(d["request_success"] / calls, 3),
            "runs_per_call": round(d["exec_count"] / calls, 3),
            "request_ms": round(d["request_duration_us"] / calls / 1e3, 3),
            "queue_ms": round(d["queue_duration_us"] / calls / 1e3, 3),
            "input_ms": round(d["compute_input_duration_us"] / calls / 1e3, 3),
            "execute_ms": round(d["compute_infer_duration_us"] / calls / 1e3, 3),
            "output_ms": round(d["compute_output_duration_us"] / calls / 1e3, 3),
        }
    return rows


def class_model_parts(repo: Path):
    """The served class model's split rule as a function of a batch's mask: routing.batch_parts with
    the buckets and split cost its config carries (the copy of routing.py the export placed there)."""
    import importlib.util

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from reranker_client.contract import CROSS_ENCODER, Param

    folder = repo / CROSS_ENCODER
    spec = importlib.util.spec_from_file_location("served_routing", folder / "1" / "routing.py")
    assert spec is not None and spec.loader is not None
    routing = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = routing  # dataclasses look their module up while the class is built
    spec.loader.exec_module(routing)
    params = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig()).parameters
    if Param.SPLIT_COST not in params:
        raise SystemExit(f"{folder}: the class model carries no split rule (exported before issue 30's split)")
    buckets = [int(b) for b in params[Param.LENGTH_BUCKETS].string_value.split(",")]
    cost = routing.parse_split_cost(params[Param.SPLIT_COST].string_value)
    return lambda mask: routing.batch_parts(mask, buckets, cost), routing.cut


class InProcess:
    def __init__(self, repo: Path, pair_tokenizer, threads: int, parts=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # The session options the served Python-backend model uses (cross_encoder/1/model.py): no spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(repo / "cross_encoder" / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = pair_tokenizer
        # None: one run per request at the tokenizer's padding; else (class_model_parts) the runs the
        # served class model makes of the same batch.
        self.parts = parts

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        batch = self.tokenizer.tokenize_requests([([query.encode()] * len(passages), [p.encode() for p in passages])])[
            0
        ]
        if self.parts is None:
            logit, _ = self.session.run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            return logit.reshape(-1)
        split, cut = self.parts
        out = np.empty(len(passages), np.float32)
        for rows, width in split(batch.attention_mask):
            if rows is None:
                ids, mask = batch.input_ids, batch.attention_mask
            else:
                ids, mask = cut(batch.input_ids, rows, width, 1), cut(batch.attention_mask, rows, width, 0)
            logit, _ = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            out[slice(None) if rows is None else rows] = logit.reshape(-1)
        return out


def add_router_ensemble(repo: Path, into: Path) -> Path:
    """A copy of the exported repository with one more ensemble, `rerank_via_router`: `rerank`
    with its scoring step sent through the length router, as every request went before a
    one-class `rerank` called its class model directly. Same server, same models, same instances:
    the two ensembles differ by the router hop only."""
    import shutil

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from reranker_client.contract import ENSEMBLE, LENGTH_ROUTER

    if into.exists():
        shutil.rmtree(into)
    shutil.copytree(repo, into)
    config = text_format.Parse((repo / ENSEMBLE / "config.pbtxt").read_text(), mc.ModelConfig())
    config.name = ROUTED_ENSEMBLE
    config.ensemble_scheduling.step[-1].model_name = LENGTH_ROUTER
    (into / ROUTED_ENSEMBLE / "1").mkdir(parents=True)
    (into / ROUTED_ENSEMBLE / "config.pbtxt").write_text(text_format.MessageToString(config))
    return into


class Served:
    def __init__(self, url: str, model: str = "rerank"):
        import tritonclient.grpc as grpcclient

        from common.raw_rerank import rerank_inputs

        self.client, self.inputs = grpcclient.InferenceServerClient(url), rerank_inputs
        self.output = grpcclient.InferRequestedOutput("logit")
        self.model = model

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        result = self.client.infer(self.model, self.inputs([query] * len(passages), passages), outputs=[self.output])
        return result.as_numpy("logit").reshape(-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "bench"), default="tiny")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--requests", type=int, default=12, help="requests per system per trial")
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown-rounds", type=int, default=10, help="passes per served path for the breakdown")
    parser.add_argument(
        "--no-router",
        action="store_true",
        help="leave out the through-the-router reference (on a compute-bound model on a loaded CPU its parts can "
        "outwait the class model's queue timeout)",
    )
    args = parser.parse_args(argv)

    from benchmarks.bench import ensure_model
    from common.pair_tokenizer import load_pair_tokenizer
    from export.settings import ServingLimits
    from local_triton.server import TritonServer, free_port

    started = time.time()
    model_dir, repo = ensure_model(args.shape, args.work, args.threads)
    limits = ServingLimits()
    pair_tokenizer = load_pair_tokenizer(repo / "tokenizer" / "1", limits)
    requests = similar_length_requests(
        str(repo / "tokenizer" / "1" / "tokenizer.json"), args.requests, args.passages, limits.max_length
    )
    pairs = sum(len(p) for _, p in requests)
    local = InProcess(repo, pair_tokenizer, args.threads)
    local_parts = InProcess(repo, pair_tokenizer, args.threads, class_model_parts(repo))
    served_repo = add_router_ensemble(repo, args.work / f"serving-overhead-repo-{args.shape}")
    with TritonServer(
        served_repo, free_port(), free_port(), free_port(), log_path=args.work / "serving_overhead_tritonserver.log"
    ) as server:
        served, routed = Served(server.grpc_url), Served(server.grpc_url, ROUTED_ENSEMBLE)
        systems: dict[str, Any] = {SERVED: served, VIA_ROUTER: routed, IN_PROCESS: local, IN_PROCESS_PARTS: local_parts}
        if args.no_router:
            del systems[VIA_ROUTER]
        # Same logits every way (fp32, same ONNX, same tokens), and one untimed warm-up pass each:
        # against the one-run reference (a row run at a narrower padding may differ in the last
        # bits) and against the same runs in process (must be identical).
        worst = {IN_PROCESS: 0.0, IN_PROCESS_PARTS: 0.0}
        for query, passages in requests:
            references = {name: systems[name].score(query, passages) for name in worst}
            for name in (SERVED, VIA_ROUTER):
                if name in systems:
                    logits = systems[name].score(query, passages)
                    for ref, reference in references.items():
                        worst[ref] = max(worst[ref], float(np.max(np.abs(logits - reference))))
        if max(worst.values()) > 1e-3:
            raise SystemExit(f"served and in-process logits differ by {worst}: not the same computation")
        runs_before = cross_encoder_runs(server.metrics_url)

        def runner(system):
            def run() -> dict:
                for query, passages in requests:
                    system.score(query, passages)
                return {"pairs": pairs, "requests": len(requests)}

            return run

        def progress(trial) -> None:
            line = ", ".join(
                f"{SHORT[name]} {trial.results[name]['pairs'] / trial.results[name]['seconds']:.2f} pairs/s"
                for name in trial.order
            )
            print(f"[overhead] trial {trial.index + 1}/{args.trials}: {line}", flush=True)

        trials = interleave.run_interleaved(
            {name: runner(system) for name, system in systems.items()}, args.trials, args.seed, progress
        )
        runs = cross_encoder_runs(server.metrics_url) - runs_before
        # Where a served request's time goes: each served path alone, `--breakdown-rounds` passes
        # over the requests, Triton's per-model counters before and after (metrics refresh ~1 s).
        paths = {}
        for name in (SERVED, VIA_ROUTER):
            if name not in systems:
                continue
            time.sleep(2)
            before = model_counters(server.metrics_url)
            for _ in range(args.breakdown_rounds):
                runner(systems[name])()
            time.sleep(2)
            paths[SHORT[name]] = breakdown(
                before, model_counters(server.metrics_url), args.breakdown_rounds * len(requests)
            )
        served.client.close()
        routed.client.close()
    local_rates = interleave.rates(trials, IN_PROCESS, "pairs")
    ratio = interleave.paired_ratio(interleave.rates(trials, SERVED, "pairs"), local_rates)
    same_runs = interleave.paired_ratio(
        interleave.rates(trials, SERVED, "pairs"), interleave.rates(trials, IN_PROCESS_PARTS, "pairs")
    )
    routed_ratio = direct_vs_routed = None
    if VIA_ROUTER in systems:
        routed_ratio = interleave.paired_ratio(interleave.rates(trials, VIA_ROUTER, "pairs"), local_rates)
        direct_vs_routed = interleave.paired_ratio(
            interleave.rates(trials, SERVED, "pairs"), interleave.rates(trials, VIA_ROUTER, "pairs")
        )
    per_request = {
        name: float(np.median([t.results[name]["seconds"] / len(requests) * 1e3 for t in trials])) for name in systems
    }
    config = json.loads((model_dir / "config.json").read_text())
    result = {
        "what": __doc__.split("\n\n")[0],
        "shared_machine": SHARED_MACHINE,
        "machine": interleave.cpu_facts(),
        "model": f"random-weight stand-in {args.shape}: {config['num_hidden_layers']} layers x "
        f"{config['hidden_size']} hidden, fp32, Python backend (ONNX Runtime CPU)",
        "threads": {"in_process_intra_op": args.threads, "cross_encoder_intra_op_per_instance": args.threads},
        "shape": args.shape,
        "passages_per_request": args.passages,
        "workload": f"{args.requests} requests x {args.passages} passages of similar length per system per trial, "
        "one request at a time",
        "max_abs_logit_difference": worst[IN_PROCESS],
        "max_abs_logit_difference_same_runs": worst[IN_PROCESS_PARTS],
        # Runs per served request, over the served ensembles that ran.
        "cross_encoder_runs_per_request": round(runs / ((len(systems) - 2) * args.trials * len(requests)), 3),
        "breakdown_ms_per_call": paths,
        "ms_per_request_median": {k: round(v, 2) for k, v in per_request.items()},
        "ratio_served_over_in_process": ratio.as_dict(),
        "ratio_served_over_in_process_same_runs": same_runs.as_dict(),
        "ratio_via_router_over_in_process": routed_ratio.as_dict() if routed_ratio else None,
        "ratio_served_over_via_router": direct_vs_routed.as_dict() if direct_vs_routed else None,
        "target": TARGET,
        "target_met": ratio.low >= TARGET,
        "duration_s": round(time.time() - started),
        "trials": [
            {
                "order": t.order,
                **{
                    name: {
                        "pairs_per_s": round(r["pairs"] / r["seconds"], 3),
                        "idle": r["idle"],
                        "steal": r["steal"],
                        "load_1m": r["load_1m"],
                    }
                    for name, r in t.results.items()
                },
            }
            for t in trials
        ],
    }
    write(args.out, args.shape, result)
    return 0


def write(out: Path, shape: str, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serving_overhead_{shape}.json").write_text(json.dumps(result, indent=1) + "\n")
    r = result["ratio_served_over_in_process"]
    ms = result["ms_per_request_median"]
    lines = [
        f"# Serving overhead ({shape}): {result['model']}",
        "",
        result["what"],
        "",
        f"- workload: {result['workload']}; threads {result['threads']}",
        f"- CPU: {result['machine']['cpu']} x {result['machine']['cores']}, MHz now "
        f"{result['machine']['cpu_mhz_now']}, max {result['machine']['cpu_mhz_max']}",
        f"- **served / in-process pairs/s: {r['ratio']} [{r['ci95'][0]}, {r['ci95'][1]}]** "
        f"(median of {r['trials']} paired trials, bootstrap 95% interval): {r['verdict']}; "
        f"target >= {result['target']}: point {'met' if r['ratio'] >= result['target'] else 'not met'}, "
        f"whole interval {'met' if result['target_met'] else 'not met'}",
        f"- the served class model splits a request whose pairs span several buckets into runs where that pays "
        f"(routing.batch_parts); the reference above runs each request as one batch at the tokenizer's padding. "
        f"Against the same runs in process (pure serving overhead, same padded tokens): "
        f"{result['ratio_served_over_in_process_same_runs']['ratio']} "
        f"{result['ratio_served_over_in_process_same_runs']['ci95']} "
        f"({result['ratio_served_over_in_process_same_runs']['verdict']})",
        (
            f"- the same through the length router (the layout before): "
            f"{result['ratio_via_router_over_in_process']['ratio']} "
            f"{result['ratio_via_router_over_in_process']['ci95']}; "
            f"direct / via router: {result['ratio_served_over_via_router']['ratio']} "
            f"{result['ratio_served_over_via_router']['ci95']} ({result['ratio_served_over_via_router']['verdict']})"
            if result["ratio_served_over_via_router"]
            else "- the through-the-router reference was left out (--no-router)"
        ),
        f"- ms per request (median over trials): {', '.join(f'{k} {v}' for k, v in ms.items())}",
        f"- cross-encoder runs per served request (Triton's nv_inference_exec_count): "
        f"{result['cross_encoder_runs_per_request']}",
        f"- max |logit difference| served vs in process: {result['max_abs_logit_difference']:.3g} (one run), "
        f"{result['max_abs_logit_difference_same_runs']:.3g} (the same runs)",
        f"- {result['shared_machine']}",
        "",
        "Where a served request's time goes (each served path alone, Triton's per-model counters, ms per call):",
        "",
        "| path | model | requests, runs per call | request | queue | input | execute | output |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {path} | {model} | {m['requests_per_call']}, {m['runs_per_call']} | {m['request_ms']} | "
            f"{m['queue_ms']} | {m['input_ms']} | {m['execute_ms']} | {m['output_ms']} |"
            for path, models in result["breakdown_ms_per_call"].items()
            for model, m in models.items()
        ),
        "",
        "| trial | order | " + " | ".join(f"{n} pairs/s (idle, steal)" for n in SYSTEMS) + " |",
        "|---|---|" + "---|" * len(SYSTEMS),
    ]
    for i, t in enumerate(result["trials"]):
        cells = [f"{t[n]['pairs_per_s']} ({t[n]['idle']}, {t[n]['steal']})" if n in t else "-" for n in SYSTEMS]
        order = " -> ".join(SHORT[n] for n in t["order"])
        lines.append(f"| {i + 1} | {order} | " + " | ".join(cells) + " |")
    (out / f"serving_overhead_{shape}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
