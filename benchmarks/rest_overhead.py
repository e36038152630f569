"""What the REST API adds: latency and throughput of `POST /v2/rerank` (reranker_rest in its own
process, as deployed) vs AsyncRerankClient calling Triton directly, same requests, same server.

    python -m benchmarks.rest_overhead [--seconds 20] [--rounds 5] [--documents 20] [--concurrency 1,8]

Serves the tiny random-weight stand-in (python backend, fp32) on a local tritonserver, so the
model's own time is small and the front door's cost shows. Everything (load generator, REST
process, Triton) shares this machine's cores: read the numbers as an upper bound on overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np

from benchmarks.bench import ensure_model
from local_triton.server import TritonServer, free_port
from reranker_client import AsyncRerankClient

ROOT = Path(__file__).resolve().parent.parent
QUERY = "how do I renew a passport before travelling abroad?"


def documents(n: int) -> list[str]:
    """Short RAG-style passages of 40 words. One length, so the client sends each request as
    one Triton request: requests it splits into concurrent chunks sometimes stall ~500 ms on
    the local CPU server (seen with and without the REST service), which would drown the
    front door's cost in noise."""
    words = [
        "passport",
        "renewal",
        "office",
        "travel",
        "form",
        "photo",
        "fee",
        "weeks",
        "appointment",
        "embassy",
        "citizen",
        "application",
        "identity",
        "document",
        "visa",
        "border",
        "expiry",
    ]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=40)) for _ in range(n)]


async def closed_loop(call, concurrency: int, seconds: float) -> tuple[list[float], float]:
    """`concurrency` callers, each calling back to back for `seconds`: latencies and wall time."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def start_rest(triton_grpc: str, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, REST_TRITON_URL=triton_grpc, REST_PORT=str(port))
    pythonpath = [str(ROOT / "rest" / "src"), str(ROOT / "client" / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in pythonpath if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "reranker_rest"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the REST service did not become ready; see {log}")


async def measure(
    grpc_url: str, rest_url: str, docs: list[str], concurrencies: list[int], seconds: float, rounds: int
) -> list[dict]:
    rows = []
    async with (
        AsyncRerankClient(grpc_url, max_concurrency=4) as client,
        httpx.AsyncClient(base_url=rest_url, timeout=30, limits=httpx.Limits(max_connections=64)) as http,
    ):

        async def direct():
            await client.rerank(QUERY, docs)

        async def rest():
            answer = await http.post("/v2/rerank", json={"model": "bge", "query": QUERY, "documents": docs})
            answer.raise_for_status()

        for warm in (direct, rest):  # connections, the server's limits, first-call costs
            for _ in range(5):
                await warm()
        for concurrency in concurrencies:
            # Alternate short rounds of the two paths, so load that others put on a shared
            # machine meanwhile falls on both alike.
            seen: dict[str, tuple[list[float], float]] = {
                "client -> Triton": ([], 0.0),
                "REST -> client -> Triton": ([], 0.0),
            }
            for _ in range(rounds):
                for name, call in (("client -> Triton", direct), ("REST -> client -> Triton", rest)):
                    latencies, wall = await closed_loop(call, concurrency, seconds / rounds)
                    seen[name] = (seen[name][0] + latencies, seen[name][1] + wall)
            for name, (latencies, wall) in seen.items():
                ms = np.array(latencies) * 1e3
                rows.append(
                    {
                        "path": name,
                        "concurrency": concurrency,
                        "requests": len(ms),
                        "p50_ms": float(np.percentile(ms, 50)),
                        "p95_ms": float(np.percentile(ms, 95)),
                        "rps": len(ms) / wall,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="per path and concurrency")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds the seconds are split into")
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "rest-bench")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    _, repo = ensure_model("tiny", args.work, threads=2)
    server = TritonServer(repo, free_port(), free_port(), free_port(), log_path=args.work / "tritonserver.log")
    server.start(timeout=240)
    rest_port = free_port()
    rest = start_rest(server.grpc_url, rest_port, args.work / "rest.log")
    try:
        rows = asyncio.run(
            measure(
                server.grpc_url,
                f"http://127.0.0.1:{rest_port}",
                documents(args.documents),
                [int(c) for c in args.concurrency.split(",")],
                args.seconds,
                args.rounds,
            )
        )
    finally:
        rest.terminate()
        rest.wait(15)
        server.stop()
    print(
        f"\n1 query x {args.documents} documents per request, {args.seconds:.0f} s closed loop per row "
        f"(in {args.rounds} alternating rounds), "
        f"{os.cpu_count()} CPU cores shared by load generator, REST process and Triton\n"
    )
    print("| path | concurrency | requests | p50 ms | p95 ms | requests/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['path']} | {row['concurrency']} | {row['requests']} | {row['p50_ms']:.2f} | "
            f"{row['p95_ms']:.2f} | {row['rps']:.1f} |"
        )
    print()
    for concurrency in sorted({r["concurrency"] for r in rows}):
        direct, via = [r for r in rows if r["concurrency"] == concurrency]
        print(
            f"c={concurrency}: REST adds {via['p50_ms'] - direct['p50_ms']:+.2f} ms at p50 "
            f"({(via['p50_ms'] / direct['p50_ms'] - 1) * 100:+.1f}%), throughput "
            f"{(via['rps'] / direct['rps'] - 1) * 100:+.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
