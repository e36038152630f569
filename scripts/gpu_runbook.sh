#!/usr/bin/env bash
# One command on a fresh GPU host with Docker and the NVIDIA container toolkit (issue 25):
#   MODEL=BAAI/bge-reranker-v2-m3 bash scripts/gpu_runbook.sh
# builds the pinned images (and pulls perf_analyzer's), then runs one pass per configuration:
#   1. what the chart deploys by default: BACKEND/PRECISION/MAX_LENGTH default to the `served:`
#      block of deploy/helm/bge-reranker/values.yaml (onnxruntime fp16 at 512: the ONNX Runtime
#      TensorRT EP at graph level 2, the build-once pass and the engine-file check of serve.py);
#   2. with PLAN=1, the plan path as well: tensorrt fp16 at PLAN_MAX_LENGTH (default 8192).
# Each pass exports in the exporter image, serves with the server image's own command
# (docker/serve.py: the pod checks TensorRT took each class model and certifies itself), measures
# device memory after warm-up and the rerank throughput (perf_analyzer, PERF_SECONDS), and prints
# one PASS/FAIL line each for: engine taken, certificate, memory per class (+ total against the
# 24 GB budget), throughput (>= MIN_PAIRS_PER_S), host memory (the container's peak against the pod
# memory limit the chart derives for the backend and max_length). Exit 0 only when all pass.
# Device and ports: GPU, HTTP_PORT, GRPC_PORT, METRICS_PORT, CERT_PORT (scripts/lib/docker_triton.sh).
# Fetched: the images (before anything is timed) and, for a Hub MODEL, the model at export time
# into HF_CACHE (reused by later passes and runs); a local MODEL folder fetches nothing.
# DRY_RUN=1 prints the commands. Nothing here has run on a GPU yet (docs/GPU.md).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-BAAI/bge-reranker-v2-m3}"
PY="${PY:-.venv/bin/python}"
# The chart's default, from its one definition (values.yaml `served:`).
read -r CHART_BACKEND CHART_PRECISION CHART_MAX_LENGTH < <("$PY" -c '
import yaml
s = yaml.safe_load(open("deploy/helm/bge-reranker/values.yaml"))["served"]
print(s["backend"], s["precision"], s["maxLength"])')
BACKEND="${BACKEND:-$CHART_BACKEND}"
PRECISION="${PRECISION:-$CHART_PRECISION}"
MAX_LENGTH="${MAX_LENGTH:-$CHART_MAX_LENGTH}"
PLAN="${PLAN:-}"
PLAN_MAX_LENGTH="${PLAN_MAX_LENGTH:-8192}"
OUT="${OUT:-runs/gpu-runbook}"
READY_TIMEOUT="${READY_TIMEOUT:-3600}"   # plans for three classes, or three EP engines, take a while
MIN_PAIRS_PER_S="${MIN_PAIRS_PER_S:-100}"
CONCURRENCY="${CONCURRENCY:-4}"
PERF_SECONDS="${PERF_SECONDS:-20}"
PAIRS="${PAIRS:-16}"   # pairs per rerank request in the throughput run
# shellcheck source=scripts/lib/docker_triton.sh
source scripts/lib/docker_triton.sh

run_pass() {  # backend precision max_length folder: one pass, its verdict's exit status
  local backend="$1" precision="$2" max_length="$3" out="$4" repo
  echo "== pass: $backend $precision max_length $max_length -> $out"
  mkdir -p "$out"
  export_repo "$backend" "$max_length" "$out" "$precision"
  repo="$out/model_repository"
  # Not `serve`: a server that certified itself unready is still measured and reported.
  if serve "$repo"; then :; else echo "server not ready: the lines below say why"; fi
  run curl -fs "$SELFCERT_URL" -o "$out/selfcert.prom" || true
  run nvidia-smi --id="${GPU#device=}" --query-gpu=memory.used --format=csv,noheader -f "$out/nvidia-smi.csv" || true
  run "$PY" -m loadtest.fixed_length --tokenizer "$repo/tokenizer/1/tokenizer.json" --tokens 512 \
    --out "$out/input_512.json"
  run timeout $((PERF_SECONDS * 4 + 120)) "$DOCKER" run --rm --network host -v "$(realpath "$out"):/out" \
    "$SDK_IMAGE" perf_analyzer -m rerank -u "localhost:$GRPC_PORT" -i grpc -b "$PAIRS" \
    --input-data /out/input_512.json --concurrency-range "$CONCURRENCY" \
    --measurement-interval $((PERF_SECONDS * 1000)) -f /out/perf.csv || true
  # Host memory: the container's peak after the build, warm-up and the load (memory.peak, v1's max
  # usage, or the sampled memory.current), against what the chart's values are derived from
  # (docs/GPU.md "Host memory").
  host_peak "$out/host_peak.txt"
  run "$PY" -m export.plan_memory --host "$backend" --max-length "$max_length" --bytes --out "$out/host_need.txt"
  stop_server "$out/triton.log"
  run python3 scripts/runbook_verdict.py --metrics "$out/selfcert.prom" --manifest "$repo/manifest.json" \
    --nvidia-smi "$out/nvidia-smi.csv" --perf "$out/perf.csv" \
    --min-pairs-per-s "$MIN_PAIRS_PER_S" --host-peak "$out/host_peak.txt" --host-need "$out/host_need.txt"
}

mkdir -p "$OUT"
build_images
status=0
run_pass "$BACKEND" "$PRECISION" "$MAX_LENGTH" "$OUT/$BACKEND-$PRECISION-$MAX_LENGTH" || status=1
if [ -n "$PLAN" ]; then
  run_pass tensorrt fp16 "$PLAN_MAX_LENGTH" "$OUT/tensorrt-fp16-$PLAN_MAX_LENGTH" || status=1
fi
exit "$status"
