"""Long documents: window mode at max_length 512 vs one pass at max_length 8,192, same texts.

    python -m benchmarks.long_documents [--shape tiny|bench] [--passages 100] [--min-tokens 1000]
                                        [--max-tokens 6000] [--repeats 2] [--out benchmarks/results]

One query x N passages of min..max tokens (uniform, seeded), each way through the real local
tritonserver (CPU stand-in): `rerank_windows` on a repository exported at max_length 512, and
`rerank` on one exported at 8,192 (no passage is cut). Reported: passages/s, windows/s (model
rows/s), padding efficiency (useful / computed tokens, computed with the served tokenizer and
the router's per-row buckets), and the FLOPs the same rows would cost on the real
bge-reranker-v2-m3 geometry (24 x 1024), where attention's n^2 term weighs on one 6,000-token
pass. A table is printed; JSON and Markdown go to <out>/long_documents_<shape>.{json,md}.
scripts/gpu_bench.sh runs the same cases on the same workload with the real model on a GPU
(benchmarks/gpu_bench.py `long` and `long-report`, which import the pieces below).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import time
from pathlib import Path

from benchmarks import machine
from common.calibration_texts import TOPICS, long_passage
from common.pair_tokenizer import pair_tokenizer_from_json
from export.__main__ import cpu_export
from export.settings import ServingLimits
from local_triton.server import TritonServer, free_port
from reranker_client import RerankClient
from reranker_client.lengths import token_counter

REAL_LAYERS, REAL_HIDDEN = 24, 1024  # bge-reranker-v2-m3
QUERY = TOPICS[3][1]
# (max_length of the exported repository, long_documents mode of the client) for each case; the
# GPU benchmark (benchmarks/gpu_bench.py `long`, scripts/gpu_bench.sh) runs the same two.
CASES = ((512, "window"), (8192, "truncate"))


def label(max_length: int, mode: str) -> str:
    return f"{'window mode' if mode == 'window' else 'one pass'}, max_length {max_length:,}"


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's settings, with the same defaults here and in the GPU benchmark."""
    parser.add_argument("--passages", type=int, default=100)
    parser.add_argument("--min-tokens", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=2)


def ensure_repo(model_dir: Path, root: Path, shape: str, max_length: int) -> Path:
    from benchmarks.bench import reusable_export

    repo = root / f"long-docs-repo-{shape}-{max_length}"
    if not reusable_export(repo):
        print(f"[long_documents] exporting at max_length {max_length} (python backend, fp32) ...", flush=True)
        if cpu_export(str(model_dir), str(repo), "--max-length", str(max_length)):
            raise SystemExit("export failed")
    return repo


def workload(tokenizer, count: int, low: int, high: int, seed: int = 0) -> list[str]:
    """`count` passages of about low..high tokens (uniform targets), from the multilingual
    calibration paragraphs, each starting at another paragraph."""
    rng = random.Random(seed)
    passages = []
    for i in range(count):
        target = rng.randint(low, high)
        paragraphs = max(1, target // 45)
        while len(tokenizer.encode(long_passage(paragraphs, offset=i), add_special_tokens=False).ids) < target:
            paragraphs += 1
        passages.append(long_passage(paragraphs, offset=i))
    return passages


def padding(row_lengths: list[int], buckets: list[int]) -> tuple[int, int]:
    """(useful, computed) tokens when each row is padded to its own bucket (the router's rule)."""
    computed = sum(buckets[bisect.bisect_left(buckets, n)] for n in row_lengths)
    return sum(row_lengths), computed


def pair_tokenizer(tokenizer_json: str, max_length: int):
    """The served tokenizer code (model_repository/tokenizer/1/pair_tokenization.py) at max_length."""
    return pair_tokenizer_from_json(tokenizer_json, ServingLimits(max_length=max_length))


def workload_of(tokenizer, args: argparse.Namespace) -> tuple[list[str], dict]:
    """The passages `args` (add_workload_arguments) ask for, and what describes them: their token
    range under `tokenizer` and a digest of the texts (equal digests: the same texts)."""
    passages = workload(tokenizer, args.passages, args.min_tokens, args.max_tokens)
    lengths = [len(tokenizer.encode(p, add_special_tokens=False).ids) for p in passages]
    print(
        f"[long_documents] {len(passages)} passages, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {sum(lengths) / len(lengths):.0f})",
        flush=True,
    )
    texts = hashlib.sha256("\0".join([QUERY, *passages]).encode()).hexdigest()
    described = {"passages": len(passages), "passage_tokens": [min(lengths), max(lengths)], "texts_sha256": texts}
    return passages, {**described, "repeats": args.repeats}


def rows_of(pair_tokenizer, query: str, passages: list[str], window: bool) -> list[int]:
    """Each model row's real length, from the served tokenizer code."""
    if window:  # one passage per request: the per-request window limit does not apply here
        batches = pair_tokenizer.tokenize_window_requests([([query], [p], [0]) for p in passages])
        return [n for batch in batches for n in batch.pairs.tokens.reshape(-1).tolist()]
    return pair_tokenizer.tokenize_request([query] * len(passages), passages).tokens.reshape(-1).tolist()


def measure(grpc_url: str, passages: list[str], mode: str, repeats: int, counter, max_length: int) -> dict:
    """`repeats` timed rerank calls of QUERY x all passages on a running server (after a warm-up)."""
    # Exact token counts: requests are packed by the server's published length classes, so a
    # request of long pairs is one class batch. One request in flight: on CPU a single batch of
    # 4 x 6,144 tokens takes seconds, and more queued would meet the 5 s queue timeout.
    with RerankClient(grpc_url, timeout=3600, max_concurrency=1, token_counter=counter) as client:
        served = client.server_limits().max_length
        if served != max_length:
            raise SystemExit(f"the server at {grpc_url} serves max_length {served}, not {max_length}")
        client.rerank(QUERY, passages[:4], long_documents=mode)  # warm-up
        times: list[float] = []
        results: list = []
        for _ in range(repeats):
            start = time.perf_counter()
            results = client.rerank(QUERY, passages, long_documents=mode)
            times.append(time.perf_counter() - start)
    best = min(times)
    windows = sum(r.windows for r in results) if mode == "window" else len(passages)
    return {
        "seconds": best,
        "seconds_per_call": [round(t, 3) for t in times],
        "passages_per_s": len(passages) / best,
        "windows": windows,
        "windows_per_s": windows / best,
        "results": results,
    }


def run_case(repo: Path, passages: list[str], mode: str, max_length: int, repeats: int, log_dir: Path, counter) -> dict:
    """measure() on the local tritonserver serving `repo` (CPU)."""
    server = TritonServer(
        repo, free_port(), free_port(), free_port(), log_path=log_dir / f"tritonserver-{repo.name}.log"
    )
    server.start(timeout=300)
    try:
        return measure(server.grpc_url, passages, mode, repeats, counter, max_length)
    finally:
        server.stop()


def case_row(pair_tokenizer, passages: list[str], mode: str, measured: dict) -> dict:
    """One table row: measure()'s rates, and the padding and real-model FLOPs of the same rows."""
    length = pair_tokenizer.max_length
    row_lengths = rows_of(pair_tokenizer, QUERY, passages, mode == "window")
    useful, computed = padding(row_lengths, ServingLimits(max_length=length).buckets)
    real_flops = sum(machine.flops_per_pair(n, REAL_LAYERS, REAL_HIDDEN) for n in row_lengths)
    return {
        "case": label(length, mode),
        "max_length": length,
        "mode": mode,
        "passages": len(passages),
        "model_rows": measured["windows"],
        "seconds": round(measured["seconds"], 3),
        "seconds_per_call": measured["seconds_per_call"],
        "passages_per_s": round(measured["passages_per_s"], 2),
        "windows_per_s": round(measured["windows_per_s"], 2),
        "useful_tokens": useful,
        "computed_tokens": computed,
        "padding_efficiency": round(useful / computed, 3),
        "real_model_tflop": round(real_flops / 1e12, 1),
        "truncated": sum(r.truncated for r in measured["results"]),
    }


def write_results(out: Path, stem: str, title: str, facts: dict, rows: list[dict], note: str) -> None:
    """The table (printed), and <out>/<stem>.json and .md."""
    header = (
        "case",
        "passages/s",
        "windows/s",
        "rows",
        "useful tok",
        "computed tok",
        "padding eff.",
        "real-model TFLOP",
        "s",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['passages_per_s']} | {r['windows_per_s']} | {r['model_rows']} | "
            f"{r['useful_tokens']} | {r['computed_tokens']} | {r['padding_efficiency']} | "
            f"{r['real_model_tflop']} | {r['seconds']} |"
        )
    print("\n".join(lines))
    print(note)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(f"# {title}\n\n" + "\n".join(lines) + "\n\n" + note + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "bench"), default="tiny")
    add_workload_arguments(parser)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    from common import standin_model

    model_dir = args.runs / f"bench-model-{args.shape}"
    if not (model_dir / "model.safetensors").exists():
        standin_model.build(model_dir, args.shape)
    tokenizer_json = str(model_dir / "tokenizer.json")
    tokenizers = {length: pair_tokenizer(tokenizer_json, length) for length, _ in CASES}
    passages, described = workload_of(tokenizers[512].tokenizer, args)
    log_dir = args.runs / "long-docs-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for length, mode in CASES:
        repo = ensure_repo(model_dir, args.runs, args.shape, length)
        measured = run_case(repo, passages, mode, length, args.repeats, log_dir, token_counter(tokenizer_json))
        rows.append(case_row(tokenizers[length], passages, mode, measured))
    note = (
        f"Stand-in model `{args.shape}` on this machine's CPU through the real tritonserver; passages/s and "
        f"windows/s are the best of {args.repeats} runs of one rerank call over all passages (s: that call). "
        f"Real-model TFLOP: the same model rows on bge-reranker-v2-m3's 24 x 1024 geometry (24 h^2 n + 4 h n^2 "
        f"per layer), a GPU's cost."
    )
    write_results(
        args.out,
        f"long_documents_{args.shape}",
        f"Long documents ({args.shape} stand-in, CPU)",
        {**machine.facts(), "shape": args.shape, **described},
        rows,
        note,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
