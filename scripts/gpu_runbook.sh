#!/usr/bin/env bash
# One command on a fresh GPU host with Docker and the NVIDIA container toolkit (issue 25):
#   MODEL=BAAI/bge-reranker-v2-m3 bash scripts/gpu_runbook.sh
# builds the pinned images, exports BACKEND (default tensorrt; onnxruntime for the ONNX Runtime
# TensorRT EP) at MAX_LENGTH (default 8192) in the exporter image, serves it with the server image's
# own command (docker/serve.py: the pod checks TensorRT took each class model and certifies itself),
# measures device memory after warm-up and the rerank throughput (perf_analyzer, PERF_SECONDS),
# and prints one PASS/FAIL line each for: engine taken, certificate, memory per class (+ total
# against the 24 GB budget), throughput (>= MIN_PAIRS_PER_S), host memory (the container's peak
# against the pod memory limit the chart derives for BACKEND and MAX_LENGTH). Exit 0 only when all pass.
# Device and ports: GPU, HTTP_PORT, GRPC_PORT, METRICS_PORT, CERT_PORT (scripts/lib/docker_triton.sh).
# DRY_RUN=1 prints the commands. Nothing here has run on a GPU yet (docs/GPU.md).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-BAAI/bge-reranker-v2-m3}"
BACKEND="${BACKEND:-tensorrt}"
MAX_LENGTH="${MAX_LENGTH:-8192}"
OUT="${OUT:-runs/gpu-runbook}"
READY_TIMEOUT="${READY_TIMEOUT:-3600}"   # plans for three classes, or three EP engines, take a while
MIN_PAIRS_PER_S="${MIN_PAIRS_PER_S:-100}"
CONCURRENCY="${CONCURRENCY:-4}"
PERF_SECONDS="${PERF_SECONDS:-20}"
PAIRS="${PAIRS:-16}"   # pairs per rerank request in the throughput run
# shellcheck source=scripts/lib/docker_triton.sh
source scripts/lib/docker_triton.sh

mkdir -p "$OUT"
build_images
export_repo "$BACKEND" "$MAX_LENGTH" "$OUT" fp16
repo="$OUT/model_repository"
# Not `serve`: a server that certified itself unready is still measured and reported.
if serve "$repo"; then :; else echo "server not ready: the lines below say why"; fi
run curl -fs "$SELFCERT_URL" -o "$OUT/selfcert.prom" || true
run nvidia-smi --id="${GPU#device=}" --query-gpu=memory.used --format=csv,noheader -f "$OUT/nvidia-smi.csv" || true
run "$PY" -m loadtest.fixed_length --tokenizer "$repo/tokenizer/1/tokenizer.json" --tokens 512 \
  --out "$OUT/input_512.json"
run timeout $((PERF_SECONDS * 4 + 120)) "$DOCKER" run --rm --network host -v "$(realpath "$OUT"):/out" \
  nvcr.io/nvidia/tritonserver:24.10-py3-sdk perf_analyzer -m rerank -u "localhost:$GRPC_PORT" -i grpc -b "$PAIRS" \
  --input-data /out/input_512.json --concurrency-range "$CONCURRENCY" \
  --measurement-interval $((PERF_SECONDS * 1000)) -f /out/perf.csv || true
# Host memory: the container's peak (cgroup v2 memory.peak, else v1's max usage) after the build,
# warm-up and the load, against what the chart's values are derived from (docs/GPU.md "Host memory").
if [ -n "${DRY_RUN:-}" ]; then echo "+ $DOCKER exec $server cat /sys/fs/cgroup/memory.peak"
else "$DOCKER" exec "$server" sh -c 'cat /sys/fs/cgroup/memory.peak 2>/dev/null ||
  cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes' > "$OUT/host_peak.txt" || true; fi
run "$PY" -m export.plan_memory --host "$BACKEND" --max-length "$MAX_LENGTH" --bytes --out "$OUT/host_need.txt"
stop_server "$OUT/triton.log"
run python3 scripts/runbook_verdict.py --metrics "$OUT/selfcert.prom" --manifest "$repo/manifest.json" \
  --nvidia-smi "$OUT/nvidia-smi.csv" --perf "$OUT/perf.csv" \
  --min-pairs-per-s "$MIN_PAIRS_PER_S" --host-peak "$OUT/host_peak.txt" --host-need "$OUT/host_need.txt"
