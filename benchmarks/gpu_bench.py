"""The GPU benchmark's steps (scripts/gpu_bench.sh runs them in order on a GPU host):

    python -m benchmarks.gpu_bench pairs  --tokenizer REPO/tokenizer/1/tokenizer.json --out pairs.json
    python -m benchmarks.gpu_bench triton --url localhost:8001 --metrics-url http://localhost:8002/metrics \
        --pairs pairs.json --system "Triton tensorrt fp16" --out tensorrt.json
    python -m benchmarks.gpu_bench torch  --model MODEL --pairs pairs.json --out torch.json   (in the GPU container)
    python -m benchmarks.gpu_bench report --results tensorrt.json onnxruntime.json torch.json --out DIR
    python -m benchmarks.gpu_bench long   --url localhost:8001 --max-length 512 --mode window \
        --tokenizer REPO/tokenizer/1/tokenizer.json --system "Triton tensorrt fp16" --out long_512.json
    python -m benchmarks.gpu_bench long-report --results long_512.json long_8192.json --out DIR

The same pairs for everyone, of exactly 128 / 512 / 2,048 tokens each (query + passage + 4
special tokens, checked with the served tokenizer), in requests of one query x --passages. Every
system runs at the same concurrencies with --trials trials per point, after the same warm-up
(one untimed pass). Logits are compared with FlagReranker at fp32 on the same GPU: fp16 rows
within export/certificate.py's fp16 bound (max |dlogit| 0.1) count, others are flagged and left
out of the ratios. The report has the shape of bench.py's (JSON rows with `trials`, MD, PNG).

`long` runs one case of benchmarks/long_documents.py (`make bench-long`) on a served repository:
its workload (the same query and passages, sized with the served tokenizer), its measurement
and its table row; `long-report` puts the cases side by side in long_documents_gpu.{json,md},
refusing results that were not measured on the same texts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import interleave, long_documents
from benchmarks.bench import one_pass, plot, server_counters

TOKENS = (128, 512, 2048)
OURS_PREFIX = "Triton"
PEER = "PyTorch fp16 (FlagReranker use_fp16=True)"
# Peers served from their own containers (scripts/gpu_bench.sh), called over HTTP like ours.
PEER_KINDS = ("triton", "tei", "vllm", "infinity")


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
    result: dict = {
        "concurrency": concurrency,
        **interleave.rate_summary(rates, latencies),
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


def fixed_length_requests(
    tokenizer_json: str, tokens: int, requests: int, passages: int
) -> tuple[list[tuple[str, list[str]]], list[int]]:
    """`requests` x (one query, `passages` passages), every pair exactly `tokens` tokens long."""
    from tokenizers import Tokenizer

    from common import calibration_texts

    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_truncation()
    source = calibration_texts.long_passage(400)
    ids = tok.encode(source, add_special_tokens=False)
    queries = [q for _, q, _ in calibration_texts.TOPICS]
    out, lengths = [], []
    for r in range(requests):
        query = queries[r % len(queries)]
        budget = tokens - len(tok.encode(query, add_special_tokens=False).ids) - 4
        kept = []
        for i in range(passages):
            start = ((r * passages + i) * 997) % (len(ids.ids) - budget - 1)
            # Cut on token offsets, then shrink until the text re-tokenizes within the budget:
            # a window edge inside a word may re-segment into one token more.
            size = budget
            while True:
                text = source[ids.offsets[start][0] : ids.offsets[start + size - 1][1]]
                n = len(tok.encode(text, add_special_tokens=False).ids)
                if n <= budget:
                    break
                size -= 1
            kept.append(text)
            lengths.append(len(tok.encode(query, add_special_tokens=False).ids) + n + 4)
        out.append((query, kept))
    return out, lengths


def cmd_pairs(args) -> None:
    data = {}
    for tokens in args.tokens:
        requests, lengths = fixed_length_requests(args.tokenizer, tokens, args.requests, args.passages)
        data[str(tokens)] = {"requests": requests, "pair_tokens": lengths}
        print(f"[gpu_bench] {tokens} tokens: pairs of {min(lengths)}-{max(lengths)} tokens", flush=True)
    Path(args.out).write_text(json.dumps(data, ensure_ascii=False))


def _points(system, pairs: dict, concurrencies: list[int], trials: int, counters=None) -> list[dict]:
    rows = []
    for tokens, block in pairs.items():
        requests = [(q, list(p)) for q, p in block["requests"]]
        one_pass(system, requests, 1)  # identical warm-up for every system and length
        for c in concurrencies:
            result = measure(system, requests, c, trials, None, counters)
            result["scores"] = [float(x) for x in result["scores"]]
            rows.append({"tokens": int(tokens), **result})
            print(f"[gpu_bench] {tokens} tokens c={c}: {result['pairs_per_s']} pairs/s", flush=True)
    return rows


def cmd_triton(args) -> None:
    from benchmarks.systems import TritonClientSystem

    system = TritonClientSystem(args.url)
    pairs = json.loads(Path(args.pairs).read_text())
    rows = _points(system, pairs, args.concurrency, args.trials, lambda: server_counters(args.metrics_url))
    for r in rows:
        r.update(system=args.system, precision="fp16", padding_source="server_metrics")
    Path(args.out).write_text(json.dumps({"rows": rows}))


class FlagSystem:
    """FlagReranker on the GPU, guarded: one compute_score() at a time (its fast tokenizer is not
    re-entrant: "Already borrowed" from a second thread), so at concurrency > 1 callers queue
    here; and its repeated probe forward answered from the identical previous forward
    (benchmarks/systems.RepeatedForwardCache; FlagEmbedding 1.4.2 runs the first batch twice)."""

    def __init__(self, model: str, fp16: bool, batch: int, max_length: int, device: str = "cuda:0"):
        import threading

        from FlagEmbedding import FlagReranker

        from benchmarks.systems import RepeatedForwardCache

        self.model = FlagReranker(model, use_fp16=fp16, devices=device)
        self.cache = RepeatedForwardCache(self.model.model)
        self.model.model = self.cache
        self.batch, self.max_length, self.lock = batch, max_length, threading.Lock()

    def score(self, query: str, passages: list[str]) -> list[float]:
        with self.lock:
            return list(
                self.model.compute_score(
                    [[query, p] for p in passages], batch_size=self.batch, max_length=self.max_length
                )
            )


def cmd_torch(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    pairs = json.loads(Path(args.pairs).read_text())
    max_length = max(int(t) for t in pairs)
    reference = FlagSystem(args.model, False, args.passages, max_length, args.device)
    references = {t: [reference.score(q, p) for q, p in b["requests"]] for t, b in pairs.items()}
    del reference
    torch.cuda.empty_cache()
    system = FlagSystem(args.model, True, args.passages, max_length, args.device)
    rows = _points(system, pairs, args.concurrency, args.trials)
    for r in rows:
        r.update(system=PEER, precision="fp16", padding_source=None, threads={"torch_intra_op": args.threads})
        r.update(
            guard="one compute_score() at a time (not re-entrant); concurrency > 1 queues",
            repeated_probe_forwards_skipped=system.cache.skipped,
            interleaved=False,
        )
    Path(args.out).write_text(
        json.dumps(
            {
                "rows": rows,
                "reference": {t: [x for scores in v for x in scores] for t, v in references.items()},
                "reference_system": "FlagReranker use_fp16=False (PyTorch fp32, same GPU)",
            }
        )
    )


def _to_logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return float(np.log(p) - np.log1p(-p))


class HttpPeer:
    """A peer server's rerank route, one call per request, results back in input order.

    tei: POST /rerank {query, texts, raw_scores: true, truncate: true} -> [{index, score}] (logits);
    vllm: POST /rerank {model, query, documents} -> {results: [{index, relevance_score}]} (vLLM
    applies the classifier's sigmoid: turned back into logits here); infinity: POST /rerank
    {query, documents, raw_scores: true} -> {results: [{index, relevance_score}]} (logits).
    `max_texts` splits a request the server would refuse (TEI: --max-client-batch-size, 32 by
    default, answers 413 beyond)."""

    def __init__(self, kind: str, url: str, model: str = "", max_texts: int = 0):
        import httpx

        if kind not in ("tei", "vllm", "infinity"):
            raise ValueError(f"kind must be tei, vllm or infinity, got {kind!r}")
        self.kind, self.url, self.model, self.max_texts = kind, url.rstrip("/"), model, max_texts
        self.http = httpx.Client(timeout=600)

    def _call(self, query: str, texts: list[str]) -> list[float]:
        if self.kind == "tei":
            body: dict = {"query": query, "texts": texts, "raw_scores": True, "truncate": True}
        elif self.kind == "vllm":
            body = {"model": self.model, "query": query, "documents": texts}
        else:
            body = {"query": query, "documents": texts, "raw_scores": True}
        if self.model and self.kind == "infinity":
            body["model"] = self.model
        response = self.http.post(self.url + "/rerank", json=body)
        response.raise_for_status()
        data = response.json()
        results = data if self.kind == "tei" else data["results"]
        out = [0.0] * len(texts)
        for r in results:
            value = r["score"] if self.kind == "tei" else r["relevance_score"]
            out[r["index"]] = _to_logit(value) if self.kind == "vllm" else float(value)
        return out

    def score(self, query: str, passages: list[str]) -> list[float]:
        step = self.max_texts or len(passages)
        out: list[float] = []
        for start in range(0, len(passages), step):
            out += self._call(query, passages[start : start + step])
        return out


class Guarded:
    """At most `limit` calls of one system in flight; more concurrent callers wait here. A peer
    that cannot take (or should not be sent) more at once is then measured at the concurrency
    it supports, and the row says so."""

    def __init__(self, system, limit: int):
        import threading

        self.system, self.gate = system, threading.BoundedSemaphore(limit)

    def score(self, query: str, passages: list[str]) -> list[float]:
        with self.gate:
            return self.system.score(query, passages)


def parse_system(text: str) -> tuple[str, str, str]:
    """'NAME=KIND@URL' -> (name, kind, url); KIND is one of PEER_KINDS."""
    name, _, rest = text.partition("=")
    kind, _, url = rest.partition("@")
    if not name or kind not in PEER_KINDS or not url:
        raise SystemExit(f"--system must be NAME=KIND@URL with KIND in {PEER_KINDS}, got {text!r}")
    return name, kind, url


def cmd_interleaved(args) -> None:
    """Every system served at once (ours and the peers' containers), called round-robin in a
    random order per trial (benchmarks/interleave.py), the same pairs for all; ratios of each
    Triton system over each peer are paired per trial, with bootstrap 95% intervals."""
    from benchmarks.systems import TritonClientSystem

    guards = dict(item.split("=", 1) for item in args.guard)
    systems: dict[str, object] = {}
    for name, kind, url in map(parse_system, args.system):
        if kind == "triton":
            system: object = TritonClientSystem(url)
        else:
            system = HttpPeer(kind, url, args.served_model_name, args.tei_max_texts if kind == "tei" else 0)
        systems[name] = Guarded(system, int(guards[name])) if name in guards else system
    unknown = set(guards) - set(systems)
    if unknown:
        raise SystemExit(f"--guard names no --system: {sorted(unknown)}")
    pairs = json.loads(Path(args.pairs).read_text())
    rows, paired = [], []
    for tokens, block in pairs.items():
        requests = [(q, list(p)) for q, p in block["requests"]]
        n = sum(len(p) for _, p in requests)
        for system in systems.values():
            one_pass(system, requests, 1)  # identical warm-up for every system and length
        for c in args.concurrency:
            results: dict[str, list] = {name: [] for name in systems}

            def runner(name, c=c, requests=requests, results=results, n=n):
                def run() -> dict:
                    _, latencies, scores = one_pass(systems[name], requests, c)
                    results[name].append((latencies, scores))
                    return {"pairs": n}

                return run

            trials = interleave.run_interleaved({name: runner(name) for name in systems}, args.trials, args.seed + c)
            for name in systems:
                rates = interleave.rates(trials, name, "pairs")
                latencies = [x for lat, _ in results[name] for x in lat]
                last = results[name][-1][1]
                rows.append(
                    {
                        "system": name,
                        "tokens": int(tokens),
                        "concurrency": c,
                        "precision": "fp16",
                        "interleaved": True,
                        "guard": f"at most {guards[name]} in flight" if name in guards else None,
                        **interleave.rate_summary(rates, latencies),
                        "trial_idle": [t.results[name]["idle"] for t in trials],
                        "scores": [float(x) for i in range(len(requests)) for x in last[i]],
                    }
                )
            for ours in (x for x in systems if x.startswith(OURS_PREFIX)):
                for peer in (x for x in systems if not x.startswith(OURS_PREFIX)):
                    ratio = interleave.paired_ratio(
                        interleave.rates(trials, ours, "pairs"), interleave.rates(trials, peer, "pairs")
                    )
                    paired.append(
                        {"tokens": int(tokens), "concurrency": c, "ours": ours, "vs": peer, **ratio.as_dict()}
                    )
                    print(f"[gpu_bench] {tokens} tokens c={c}: {ours} / {peer}: {ratio.text()}", flush=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "paired": paired}))


def cmd_report(args) -> None:
    from export.certificate import FP16

    rows, reference, reference_system, paired = [], None, None, []
    for path in args.results:
        data = json.loads(Path(path).read_text())
        rows += data["rows"]
        paired += data.get("paired", [])
        if "reference" in data:
            reference, reference_system = data["reference"], data["reference_system"]
    for r in rows:
        scores = np.asarray(r.pop("scores"), dtype=np.float64)
        if reference is not None:
            r["max_abs_logit_vs_reference"] = float(
                f"{np.max(np.abs(scores - np.asarray(reference[str(r['tokens'])]))):.3g}"
            )
        r["same_inputs"] = reference is not None and r["max_abs_logit_vs_reference"] <= FP16.max_abs_logit
    # A paired ratio stands only where both systems scored the same pairs (logits within the bound).
    valid = {(r["system"], r["tokens"], r["concurrency"]) for r in rows if r.get("interleaved") and r["same_inputs"]}
    for x in paired:
        keys = [(x[side], x["tokens"], x["concurrency"]) for side in ("ours", "vs")]
        x["excluded"] = not all(k in valid for k in keys)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ratios = []
    for tokens in sorted({r["tokens"] for r in rows}):
        peer = {r["concurrency"]: r for r in rows if r["tokens"] == tokens and r["system"] == PEER and r["same_inputs"]}
        for name in sorted(
            {r["system"] for r in rows if r["system"].startswith(OURS_PREFIX) and not r.get("interleaved")}
        ):
            ours = {
                r["concurrency"]: r
                for r in rows
                if r["tokens"] == tokens and r["system"] == name and r["same_inputs"] and not r.get("interleaved")
            }
            line = {
                "tokens": tokens,
                "system": name,
                "vs_pytorch_fp16_at_equal_concurrency": {
                    c: round(ours[c]["pairs_per_s"] / peer[c]["pairs_per_s"], 3) for c in ours if c in peer
                },
            }
            if ours and peer:
                line["best_over_best"] = round(
                    max(r["pairs_per_s"] for r in ours.values()) / max(r["pairs_per_s"] for r in peer.values()), 3
                )
            ratios.append(line)
    facts = {
        "model": args.model_label,
        "workload": f"requests of one query x {args.passages} passages, "
        f"pairs of exactly {', '.join(str(t) for t in sorted({r['tokens'] for r in rows}))} tokens",
        "reference": reference_system,
        "fp16_logit_tolerance": FP16.max_abs_logit,
        "host": os.uname().nodename,
    }
    stem = "bench_gpu"
    (out / f"{stem}.json").write_text(
        json.dumps(
            {"padding_source": "server_metrics", "facts": facts, "rows": rows, "ratios": ratios, "paired": paired},
            indent=1,
        )
        + "\n"
    )
    cols = [
        "system",
        "tokens",
        "concurrency",
        "pairs_per_s",
        "pairs_per_s_min",
        "pairs_per_s_max",
        "p50_ms_per_request",
        "p95_ms_per_request",
        "padding_efficiency",
        "max_abs_logit_vs_reference",
    ]
    lines = [
        f"# GPU benchmark: {facts['model']}",
        "",
        f"{facts['workload']}; logits vs {reference_system}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                str(r.get(c, "")) + ("" if c != "max_abs_logit_vs_reference" or r["same_inputs"] else " EXCLUDED")
                for c in cols
            )
            + " |"
        )
    lines += [
        "",
        "## Paired ratios, interleaved runs (Triton / peer container; median of per-trial ratios, bootstrap 95%)",
        "",
        *[
            f"- {x['tokens']} tokens, c={x['concurrency']}: {x['ours']} / {x['vs']}: {x['ratio']} "
            f"[{x['ci95'][0]}, {x['ci95'][1]}]: "
            + ("EXCLUDED (logits differ from the reference beyond the fp16 bound)" if x["excluded"] else x["verdict"])
            for x in paired
        ],
        "",
        "## Ratios (Triton / PyTorch fp16; a separate container run, not interleaved: medians, no interval)",
        *[f"- {json.dumps(x)}" for x in ratios],
        "",
        f"![pairs per second]({stem}.png)",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    for tokens in sorted({r["tokens"] for r in rows}):
        subset = [
            {**r, "system": f"{r['system']}{' [interleaved]' if r.get('interleaved') else ''} @{tokens}"}
            for r in rows
            if r["tokens"] == tokens
        ]
        plot(
            out / f"{stem}_{tokens}.png",
            f"gpu {tokens} tokens",
            {"model": facts["model"], "workload": facts["workload"]},
            subset,
        )
    plot(
        out / f"{stem}.png",
        "gpu",
        {"model": facts["model"], "workload": facts["workload"]},
        [
            {**r, "system": f"{r['system']}{' [interleaved]' if r.get('interleaved') else ''} @{r['tokens']}"}
            for r in rows
        ],
    )
    print("\n".join(lines))


def cmd_long(args) -> None:
    from reranker_client.lengths import token_counter

    tokenizer = long_documents.pair_tokenizer(args.tokenizer, args.max_length)
    passages, workload = long_documents.workload_of(tokenizer.tokenizer, args)
    counter = token_counter(args.tokenizer)
    measured = long_documents.measure(args.url, passages, args.mode, args.repeats, counter, args.max_length)
    row = {"system": args.system, **long_documents.case_row(tokenizer, passages, args.mode, measured)}
    print(f"[gpu_bench] {row['case']}: {row['passages_per_s']} passages/s, {row['seconds']} s per call", flush=True)
    Path(args.out).write_text(json.dumps({"workload": workload, "rows": [row]}))


def gpu_name() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cmd_long_report(args) -> None:
    results = [json.loads(Path(path).read_text()) for path in args.results]
    workloads = {json.dumps(r["workload"], sort_keys=True) for r in results}
    if len(workloads) != 1:
        raise SystemExit(f"long-document results from different workloads (not the same texts): {workloads}")
    rows = [row for r in results for row in r["rows"]]
    systems = ", ".join(sorted({r["system"] for r in rows}))
    facts = {"model": args.model_label, "system": systems, "gpu": gpu_name(), "host": os.uname().nodename}
    note = (
        f"{args.model_label} on the GPU, served by {systems} from a repository exported at each case's max_length; "
        f"passages/s and windows/s are the best of {results[0]['workload']['repeats']} runs of one rerank call over "
        f"all passages, one request in flight (s: that call; every call in the JSON's seconds_per_call). Padding and "
        f"real-model TFLOP as in the CPU case (benchmarks/long_documents.py)."
    )
    long_documents.write_results(
        Path(args.out),
        "long_documents_gpu",
        f"Long documents (GPU: {systems})",
        {**facts, **results[0]["workload"]},
        rows,
        note,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 2, 4])
        p.add_argument("--trials", type=int, default=5)
        p.add_argument("--pairs", required=True)
        p.add_argument("--out", required=True)

    p = sub.add_parser("pairs")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--tokens", type=lambda s: [int(t) for t in s.split(",")], default=list(TOKENS))
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--passages", type=int, default=16)
    p.add_argument("--out", required=True)
    p = sub.add_parser("triton")
    common(p)
    p.add_argument("--url", required=True)
    p.add_argument("--metrics-url", required=True)
    p.add_argument("--system", required=True)
    p = sub.add_parser("interleaved")
    common(p)
    p.add_argument(
        "--system",
        action="append",
        required=True,
        help="NAME=KIND@URL; KIND: triton (gRPC host:port), "
        "tei, vllm, infinity (HTTP base URL); names starting 'Triton' are ours",
    )
    p.add_argument("--guard", action="append", default=[], help="NAME=N: at most N calls of NAME in flight")
    p.add_argument("--served-model-name", default="", help="the model name vLLM (and Infinity) serve")
    p.add_argument("--tei-max-texts", type=int, default=32, help="TEI's --max-client-batch-size")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("torch")
    common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--passages", type=int, default=16, help="FlagReranker batch: one forward per request")
    p.add_argument("--threads", type=int, default=4)
    # cpu: the CPU test runs this step for real (FlagReranker turns use_fp16 off on a CPU).
    p.add_argument("--device", default="cuda:0")
    p = sub.add_parser("report")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--passages", type=int, default=16)
    p.add_argument("--model-label", default="BAAI/bge-reranker-v2-m3")
    p.add_argument("--out", required=True)
    p = sub.add_parser("long")
    p.add_argument("--url", required=True)
    p.add_argument("--tokenizer", required=True, help="the served tokenizer.json (REPO/tokenizer/1/)")
    p.add_argument("--max-length", type=int, required=True, help="the served repository's (checked)")
    p.add_argument("--mode", choices=("window", "truncate"), required=True)
    p.add_argument("--system", required=True)
    long_documents.add_workload_arguments(p)
    p.add_argument("--out", required=True)
    p = sub.add_parser("long-report")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--model-label", default="BAAI/bge-reranker-v2-m3")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    started = time.time()
    commands = {"pairs": cmd_pairs, "triton": cmd_triton, "torch": cmd_torch, "report": cmd_report}
    commands["interleaved"] = cmd_interleaved
    commands.update({"long": cmd_long, "long-report": cmd_long_report})
    commands[args.command](args)
    print(f"[gpu_bench] {args.command} took {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
