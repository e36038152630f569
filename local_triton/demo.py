"""The main job end to end: export -> serve on the local tritonserver -> rerank -> stop.

python -m local_triton.demo --model BAAI/bge-reranker-v2-m3   (or a local folder)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.__main__ import main as export_main
from local_triton.server import TritonServer

QUERY = "Wie hoch ist der Mount Everest?"
PASSAGES = [
    "Mount Everest is Earth's highest mountain above sea level, at 8,849 metres.",
    "珠穆朗玛峰海拔8848.86米，是世界最高峰。",
    "Der Mount Everest ist mit 8849 Metern der höchste Berg der Erde.",
    "El monte Everest es la montaña más alta del planeta, con 8849 metros.",
    "Эверест — высочайшая вершина Земли, её высота 8849 метров.",
    "إيفرست هو أعلى جبل على سطح الأرض بارتفاع 8849 مترا.",
    "エベレストは標高8849メートルで世界最高峰です。",
    "The Mariana Trench is the deepest oceanic trench on Earth.",
    "Le mont Blanc culmine à 4 805 mètres, le plus haut sommet des Alpes.",
    "K2 is the second-highest mountain on Earth, at 8,611 metres.",
    "Bread rises because yeast produces carbon dioxide.",
    "Python lists support slicing: items[::-1] reverses a list.",
    "Sherpa guides have supported Everest expeditions since the 1920s.",
    "The first confirmed ascent of Everest was in 1953 by Hillary and Norgay.",
    "Die Zugspitze ist mit 2962 Metern Deutschlands höchster Berg.",
    "에베레스트산은 해발 8,849미터로 세계에서 가장 높은 산이다.",
    "Photosynthesis turns light, water and CO2 into sugar and oxygen.",
    "Climbing permits for Everest cost about 11,000 US dollars per person.",
    "🏔️ Everest base camp trek: 12 days, max altitude 5,364 m.",
    "The stock market closed higher on Friday.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="BAAI/bge-reranker-v2-m3")
    parser.add_argument("--repo", type=Path, default=Path("runs/demo_repository"))
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    args = parser.parse_args(argv)

    code = export_main(["--model", args.model, "--repo", str(args.repo), "--backend", "python", "--precision", "fp32"])
    if code:
        return code
    from reranker_client import RerankClient

    log = args.repo.parent / "demo_tritonserver.log"
    print(f"[demo] starting tritonserver (log: {log}) ...", flush=True)
    with (
        TritonServer(
            args.repo, args.http_port, args.grpc_port, args.metrics_port, log_path=log, host=args.host
        ) as server,
        RerankClient(server.grpc_url) as client,
    ):
        results = client.rerank(QUERY, PASSAGES, return_documents=True)
    print(f"\nquery: {QUERY}\n")
    print(f"{'rank':>4}  {'score':>7}  {'logit':>8}  passage")
    for rank, r in enumerate(results, 1):
        print(f"{rank:>4}  {r.score:7.4f}  {r.logit:8.3f}  {r.document}")
    print("\n[demo] server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
