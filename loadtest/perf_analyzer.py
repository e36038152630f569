"""perf_analyzer (from the tritonclient 2.51.0 wheel) against the `rerank` ensemble.

    python -m loadtest.perf_analyzer --repo runs/demo_repository      # starts a local server
    python -m loadtest.perf_analyzer --url localhost:8001             # a running server

Writes CSV, a markdown table and a PNG (throughput vs concurrency; p50/p95/p99 latency).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from export.settings import DEFAULT_MAX_LENGTH
from loadtest.workload import LENGTH_MIX, make_pairs


def perf_analyzer_binary() -> str:
    binary = Path(sys.executable).parent / "perf_analyzer"
    if binary.exists():
        return str(binary)
    found = shutil.which("perf_analyzer")
    if not found:
        raise FileNotFoundError("perf_analyzer not found: `pip install tritonclient==2.51.0` ships it")
    return found


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 even for CPU-only runs: use the PyPI runtime."""
    env = dict(os.environ)
    cudart = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(cudart), env.get("LD_LIBRARY_PATH", "")]))
    return env


def write_input_data(path: Path, tokenizer_json: str, max_length: int, entries: int = 512, seed: int = 0) -> dict:
    """perf_analyzer --input-data JSON. Entries are sorted by length so the `-b` consecutive
    entries of one request have similar lengths, as the client's chunking makes them."""
    pairs = sorted(make_pairs(tokenizer_json, entries, max_length, seed), key=lambda p: p.passage_tokens)
    data = [
        {"query": {"content": [p.query], "shape": [1]}, "passage": {"content": [p.passage], "shape": [1]}}
        for p in pairs
    ]
    path.write_text(json.dumps({"data": data}, ensure_ascii=False))
    lengths = sorted(p.passage_tokens for p in pairs)
    return {
        "entries": entries,
        "passage_tokens_p50": lengths[len(lengths) // 2],
        "passage_tokens_max": lengths[-1],
        "length_mix": LENGTH_MIX,
    }


def run(
    url: str,
    input_data: Path,
    out_csv: Path,
    batch: int,
    concurrency: list[int],
    protocol: str = "grpc",
    window_requests: int = 64,
    stability: int = 50,
    extra: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Mixed lengths make per-request latency vary by design, so windows are counted in
    requests (each sees the whole mix) and 50% stability is accepted on a shared CPU box."""
    cmd = [
        perf_analyzer_binary(),
        "-m",
        "rerank",
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(input_data),
        "-b",
        str(batch),
        "--concurrency-range",
        f"{min(concurrency)}:{max(concurrency)}:{_step(concurrency)}",
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(window_requests),
        "--stability-percentage",
        str(stability),
        "--max-trials",
        "10",
        "--percentile",
        "95",
        "-f",
        str(out_csv),
        *(extra or []),
    ]
    print("[perf] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=perf_analyzer_env(), capture_output=True, text=True)


def _step(concurrency: list[int]) -> int:
    steps = {b - a for a, b in zip(concurrency, concurrency[1:])}
    return steps.pop() if len(steps) == 1 else 1


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def summarise(rows: list[dict], batch: int) -> list[dict]:
    out = []
    for row in rows:
        requests_per_s = float(row["Inferences/Second"]) / batch
        out.append(
            {
                "concurrency": int(row["Concurrency"]),
                "pairs_per_s": float(row["Inferences/Second"]),
                "requests_per_s": requests_per_s,
                "p50_ms": float(row["p50 latency"]) / 1e3,
                "p95_ms": float(row["p95 latency"]) / 1e3,
                "p99_ms": float(row["p99 latency"]) / 1e3,
            }
        )
    return out


def write_report(rows: list[dict], out_dir: Path, batch: int, facts: dict) -> None:
    lines = [
        f"# perf_analyzer: `rerank`, {batch} pairs per request",
        "",
        "| concurrency | pairs/s | requests/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['pairs_per_s']:.1f} | {r['requests_per_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    lines += ["", "```json", json.dumps(facts, indent=1), "```", "", "![perf](perf.png)"]
    (out_dir / "perf.md").write_text("\n".join(lines) + "\n")
    (out_dir / "perf.json").write_text(json.dumps({"rows": rows, "facts": facts}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    conc = [r["concurrency"] for r in rows]
    left.plot(conc, [r["pairs_per_s"] for r in rows], marker="o")
    left.set(xlabel="concurrent requests", ylabel="pairs / s", title="throughput")
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        right.plot(conc, [r[key] for r in rows], marker="o", label=key.split("_")[0])
    right.set(xlabel="concurrent requests", ylabel="ms", title=f"latency ({batch} pairs / request)")
    right.legend()
    fig.suptitle(facts.get("title", "rerank on Triton"))
    fig.tight_layout()
    fig.savefig(out_dir / "perf.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    from local_triton.server import TritonServer, free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo", type=Path, help="exported repository: serve it locally for the run")
    target.add_argument("--url", help="gRPC host:port of a running server")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: REPO/tokenizer/1/tokenizer.json)")
    parser.add_argument(
        "--max-length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help="the served max_length: sets which passages the workload makes over-long",
    )
    parser.add_argument("--batch", type=int, default=16, help="pairs per request")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--window-requests", type=int, default=64, help="requests per measurement window")
    parser.add_argument("--stability", type=int, default=50, help="perf_analyzer --stability-percentage")
    parser.add_argument("--out", type=Path, default=Path("runs/perf"))
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer or str((args.repo or Path(".")) / "tokenizer" / "1" / "tokenizer.json")
    if not Path(tokenizer).exists():
        parser.error("--tokenizer is needed with --url (the model's tokenizer.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    facts = write_input_data(args.out / "input_data.json", tokenizer, args.max_length)
    facts.update({"batch": args.batch, "target": args.url or str(args.repo)})
    concurrency = [int(c) for c in args.concurrency.split(",")]
    server = None
    try:
        if args.repo:
            server = TritonServer(
                args.repo, free_port(), free_port(), free_port(), log_path=args.out / "tritonserver.log"
            ).start()
        url = args.url or server.grpc_url  # type: ignore[union-attr]  # --url or --repo is required
        rows = []
        for c in concurrency:  # one run per level: uneven steps, and one bad level does not lose the rest
            csv_path = args.out / f"perf_c{c}.csv"
            proc = run(
                url,
                args.out / "input_data.json",
                csv_path,
                args.batch,
                [c],
                window_requests=args.window_requests,
                stability=args.stability,
            )
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
                return proc.returncode
            rows += summarise(read_csv(csv_path), args.batch)
    finally:
        if server:
            server.stop()
    write_report(rows, args.out, args.batch, facts)
    print((args.out / "perf.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
