"""Two served variants of one export, interleaved: is a serving change worth keeping? (issue 30)

    python -m benchmarks.serving_ab --a REPO_A --b REPO_B [--b-flag=--some-tritonserver-flag ...]
        [--b-env NAME=VALUE ...] [--trials 30] [--requests 4]

Both servers run at once on their own ports (an idle server's stubs sleep), and every trial sends
the same requests (serving_overhead.py's similar-length requests) to each, one at a time, in a
fresh random order (benchmarks/interleave.py), so background load falls on both alike. Prints the
paired per-trial ratio B / A of requests per second with its bootstrap 95% interval, and checks
that both return the same logits. Used to test each candidate change before keeping it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks import interleave


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, required=True)
    parser.add_argument("--a-flag", action="append", default=[], help="a tritonserver flag for A only")
    parser.add_argument("--b-flag", action="append", default=[], help="a tritonserver flag for B only")
    parser.add_argument("--b-env", action="append", default=[], help="NAME=VALUE in B's environment only")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)

    from benchmarks.serving_overhead import Served, similar_length_requests
    from export.settings import ServingLimits
    from local_triton.server import TritonServer, free_port

    limits = ServingLimits()
    requests = similar_length_requests(
        str(args.a / "tokenizer" / "1" / "tokenizer.json"), args.requests, args.passages, limits.max_length
    )

    def server(repo: Path, flags: list[str], name: str) -> TritonServer:
        return TritonServer(
            repo,
            free_port(),
            free_port(),
            free_port(),
            extra_args=flags,
            log_path=args.work / f"serving_ab_{name}.log",
        )

    saved = dict(os.environ)
    a = server(args.a, args.a_flag, "a").start()
    try:
        os.environ.update(dict(item.split("=", 1) for item in args.b_env))  # B's stubs inherit it
        b = server(args.b, args.b_flag, "b").start()
        os.environ.clear()
        os.environ.update(saved)
        try:
            clients = {"A": Served(a.grpc_url), "B": Served(b.grpc_url)}
            worst = 0.0
            for query, passages in requests * 2:  # warm-up, and the same logits both ways
                la, lb = (clients[k].score(query, passages) for k in ("A", "B"))
                worst = max(worst, float(np.max(np.abs(la - lb))))

            def runner(client):
                def run() -> dict:
                    for query, passages in requests:
                        client.score(query, passages)
                    return {"requests": len(requests)}

                return run

            trials = interleave.run_interleaved({k: runner(c) for k, c in clients.items()}, args.trials)
            ratio = interleave.paired_ratio(
                interleave.rates(trials, "B", "requests"), interleave.rates(trials, "A", "requests")
            )
            ms = {
                k: round(float(np.median([t.results[k]["seconds"] / len(requests) * 1e3 for t in trials])), 3)
                for k in clients
            }
            print(f"A={args.a} {args.a_flag}; B={args.b} {args.b_flag} {args.b_env}")
            print(f"ms per request (median): A {ms['A']}, B {ms['B']}; max |logit A - B| {worst:.3g}")
            print(f"B / A requests/s: {ratio.text()}")
            for c in clients.values():
                c.client.close()
        finally:
            b.stop()
    finally:
        a.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
