#!/usr/bin/env bash
# On a host with an NVIDIA GPU, Docker and the NVIDIA container toolkit:
#   1. export + build the TensorRT plan inside the pinned TensorRT 24.10 image (exporter target),
#   2. serve it with the pinned Triton 24.10 image,
#   3. sweep perf_analyzer (Triton SDK image) at 128/256/512/1024 tokens per pair,
#   4. report pairs/s against the fp16 FLOP ceiling (PEAK_TFLOPS, H100 SXM dense: 989).
# Needs `make setup` on the host (to write the input data) and MODEL (Hub id or local folder).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-BAAI/bge-reranker-v2-m3}"
OUT="${OUT:-runs/gpu}"
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"
BATCH="${BATCH:-32}"
mkdir -p "$OUT"
docker build -f docker/Dockerfile --target exporter -t bge-reranker-exporter:0.1.0 .
docker build -f docker/Dockerfile --target server -t bge-reranker-triton:0.1.0 .
model_mount=()
if [ -d "$MODEL" ]; then model_mount=(-v "$(realpath "$MODEL"):/model:ro"); MODEL=/model; fi
docker run --rm --gpus device=0 "${model_mount[@]}" -v "$(realpath "$OUT"):/out" bge-reranker-exporter:0.1.0 \
  --model "$MODEL" --backend tensorrt --precision fp16 --max-length 1024 --repo /out/model_repository
server=$(docker run -d --rm --gpus device=0 --shm-size 2g -p 8000:8000 -p 8001:8001 -p 8002:8002 \
  -v "$(realpath "$OUT")/model_repository:/models:ro" bge-reranker-triton:0.1.0)
trap 'docker stop "$server" >/dev/null' EXIT
until curl -fs localhost:8000/v2/health/ready >/dev/null; do sleep 2; done
for tokens in 128 256 512 1024; do
  .venv/bin/python -m loadtest.fixed_length --tokenizer "$OUT/model_repository/tokenizer/1/tokenizer.json" \
    --tokens "$tokens" --out "$OUT/input_$tokens.json"
  docker run --rm --network host -v "$(realpath "$OUT"):/out" nvcr.io/nvidia/tritonserver:24.10-py3-sdk \
    perf_analyzer -m rerank -u localhost:8001 -i grpc -b "$BATCH" --input-data "/out/input_$tokens.json" \
    --concurrency-range 1:8:1 -f "/out/perf_$tokens.csv"
done
.venv/bin/python - "$OUT" "$PEAK_TFLOPS" "$BATCH" <<'PY'
import csv, sys
from pathlib import Path
out, peak, batch = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"| tokens | best pairs/s | TFLOP/s | of fp16 peak ({peak:g}) |\n|---|---|---|---|")
for tokens in (128, 256, 512, 1024):
    rows = list(csv.DictReader(open(out / f"perf_{tokens}.csv")))
    best = max(float(r["Inferences/Second"]) for r in rows)
    tflops = best * 24 * (24 * 1024**2 * tokens + 4 * 1024 * tokens**2) / 1e12
    print(f"| {tokens} | {best:.0f} | {tflops:.0f} | {tflops / peak:.0%} |")
PY
