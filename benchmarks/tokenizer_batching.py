"""What the tokenizer's one-request-per-execute rule costs (issue 26 item 5).

    python -m benchmarks.tokenizer_batching [--trials 3] [--batch 1,16] [--concurrency 1,8]

The tokenizer has no dynamic batcher, so its /dev/shm region holds one request at a time
(export/shm_budget.py). Before, its batcher merged concurrent requests into one execute (one
tokenizer batch call). This serves the same export twice at once, as generated (one request per
execute) and with the former batcher put back (max_queue_delay 200 us, the same queue policy as
the router's), and runs perf_analyzer on the `rerank` ensemble against each in turn, interleaved
trial by trial (so background load on this shared box falls on both alike), at each concurrency
and request size. Prints pairs/s and p50 per variant and the median ratio (one request per
execute / batched) with its range over the trials; writes benchmarks/results/tokenizer_batching.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.settings import DEFAULT_MAX_LENGTH

ONE, BATCHED = "one request per execute", "batched (before)"
# The tokenizer batcher's delay before issue 26 removed it (what the committed comparison ran):
# a historical value, not a setting; the router's delay has since gone to 0 (issue 30).
FORMER_TOKENIZER_QUEUE_DELAY_US = 200


def batched_copy(repo: Path, out: Path) -> Path:
    """The export with the tokenizer's former dynamic batcher put back (hard links otherwise)."""
    from export.triton_config import _dynamic_batching

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(repo, out, copy_function=os.link)
    path = out / "tokenizer" / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    config.dynamic_batching.CopyFrom(_dynamic_batching(delay_us=FORMER_TOKENIZER_QUEUE_DELAY_US))
    path.unlink()  # a hard link: do not write through to the original
    path.write_text(text_format.MessageToString(config))
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench import ensure_model
    from loadtest.perf_analyzer import read_csv, run, summarise, write_input_data
    from local_triton.server import TritonServer, free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--batch", default="1,16", help="pairs per request")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--window-requests", type=int, default=64)
    # perf_analyzer's stability check fails on this shared box at concurrency 1 (10 windows, none
    # within 50 %); the interleaved trials, not one run's stability, make the comparison fair.
    parser.add_argument("--stability", type=int, default=1000, help="perf_analyzer --stability-percentage")
    parser.add_argument("--out", type=Path, default=Path("runs/tokenizer_batching"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/tokenizer_batching.json"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _, repo = ensure_model("tiny", Path("runs"), 2)
    repos = {ONE: repo, BATCHED: batched_copy(repo, args.out / "repo-batched")}
    tokenizer_config = text_format.Parse((repo / "tokenizer" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert not tokenizer_config.HasField("dynamic_batching"), "the export should have no tokenizer batcher"
    tokenizer_json = str(repo / "tokenizer" / "1" / "tokenizer.json")
    facts = write_input_data(args.out / "input.json", tokenizer_json, DEFAULT_MAX_LENGTH)
    servers = {
        name: TritonServer(path, free_port(), free_port(), free_port(), log_path=args.out / f"{i}.log").start()
        for i, (name, path) in enumerate(repos.items())
    }
    rows: list[dict] = []
    try:
        for trial in range(args.trials):
            for batch in map(int, args.batch.split(",")):
                for concurrency in map(int, args.concurrency.split(",")):
                    order = list(servers) if trial % 2 == 0 else list(reversed(servers))
                    for name in order:
                        csv_path = args.out / f"t{trial}_b{batch}_c{concurrency}_{name[:3]}.csv"
                        proc = run(
                            servers[name].grpc_url,
                            args.out / "input.json",
                            csv_path,
                            batch,
                            [concurrency],
                            window_requests=args.window_requests,
                            stability=args.stability,
                        )
                        if proc.returncode != 0:
                            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
                            return proc.returncode
                        [row] = summarise(read_csv(csv_path), batch)
                        rows.append({"variant": name, "trial": trial, "batch": batch, **row})
    finally:
        for server in servers.values():
            server.stop()
    table = []
    print(f"\n| pairs/request | concurrency | {ONE} pairs/s | {BATCHED} pairs/s | ratio (median, range) | p50 ms |")
    print("|---|---|---|---|---|---|")
    for batch in map(int, args.batch.split(",")):
        for concurrency in map(int, args.concurrency.split(",")):

            def pick(name, key, batch=batch, concurrency=concurrency):
                return [
                    r[key]
                    for r in sorted(rows, key=lambda r: r["trial"])
                    if r["variant"] == name and r["batch"] == batch and r["concurrency"] == concurrency
                ]

            one, batched = pick(ONE, "pairs_per_s"), pick(BATCHED, "pairs_per_s")
            ratios = [a / b for a, b in zip(one, batched)]
            entry = {
                "batch": batch,
                "concurrency": concurrency,
                "one_pairs_per_s": statistics.median(one),
                "batched_pairs_per_s": statistics.median(batched),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "one_p50_ms": statistics.median(pick(ONE, "p50_ms")),
                "batched_p50_ms": statistics.median(pick(BATCHED, "p50_ms")),
            }
            table.append(entry)
            print(
                f"| {batch} | {concurrency} | {entry['one_pairs_per_s']:.1f} | {entry['batched_pairs_per_s']:.1f} | "
                f"{entry['ratio_median']:.2f} ({entry['ratio_min']:.2f}-{entry['ratio_max']:.2f}) | "
                f"{entry['one_p50_ms']:.1f} vs {entry['batched_p50_ms']:.1f} |"
            )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "what": "rerank ensemble via perf_analyzer (gRPC), tiny stand-in model, python backend, CPU",
                "machine": "2-core shared box; both servers up, variants interleaved per trial",
                "workload": facts,
                "table": table,
                "rows": rows,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
