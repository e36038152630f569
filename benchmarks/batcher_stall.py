"""A latency stall the benchmark exposed: two concurrent rerank calls whose pairs fall in
different length buckets, tokenized in one tokenizer execute, leave the second one waiting
~500 ms in the cross-encoder's dynamic-batcher queue (Triton 2.51, nvidia-pytriton 0.7.0, CPU).

    python -m benchmarks.batcher_stall [REPO]   (default: exports the tiny stand-in under runs/)

Prints, for same-bucket and different-bucket call pairs, the worst call latency and the
cross-encoder's queue time per request from Triton's own metrics. 500 ms is the dynamic
batcher's default wait when it has nothing to do, so the scheduler misses the wake-up for the
request it could not merge (different shape). Sending cross_encoder two shapes directly does
not show it; newer Triton sources drain a staging queue at the top of the batcher loop, which
may be the fix (not verified here). `make bench` reports `cross_encoder_queue_ms_per_request`
for every Triton row, so the effect is visible in the results.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

SHORT = "Paris is the capital of France."
LONG = "The Eiffel Tower stands in Paris, the capital of France. " * 8


def counters(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()

    def total(name):
        return sum(
            float(v) for v in re.findall(rf'^{name}\{{[^}}]*model="cross_encoder"[^}}]*\}} ([0-9.e+]+)$', text, re.M)
        )

    return total("nv_inference_queue_duration_us"), total("nv_inference_request_success")


def main(argv: list[str] | None = None) -> int:
    from common.raw_rerank import raw_rerank
    from local_triton.server import TritonServer, free_port

    argv = sys.argv[1:] if argv is None else argv
    if argv:
        repo = Path(argv[0])
    else:
        from benchmarks.bench import ensure_model

        repo = ensure_model("tiny", Path("runs"), 2)[1]
    with TritonServer(repo, free_port(), free_port(), free_port(), log_path=Path("runs/batcher_stall.log")) as server:
        for label, texts in (("same bucket", (SHORT, SHORT)), ("different buckets", (SHORT, LONG))):
            before = counters(server.metrics_url)
            latencies: list[float] = []

            def call(passage: str, latencies: list[float] = latencies) -> None:
                start = time.perf_counter()
                raw_rerank(server.grpc_url, ["where is it?"], [passage])
                latencies.append(time.perf_counter() - start)

            for _ in range(10):
                threads = [threading.Thread(target=call, args=(t,)) for t in texts]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            after = counters(server.metrics_url)
            print(
                f"{label}: 10 x 2 concurrent calls, worst call {max(latencies) * 1e3:.0f} ms, cross_encoder queue "
                f"{(after[0] - before[0]) / (after[1] - before[1]) / 1e3:.1f} ms per request"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
