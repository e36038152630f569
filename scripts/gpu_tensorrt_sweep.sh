#!/usr/bin/env bash
# On a host with an NVIDIA GPU, Docker and the NVIDIA container toolkit, for each backend in
# BACKENDS (default: "tensorrt onnxruntime"):
#   1. export in the pinned exporter image (tensorrt: the plan is built and certified there),
#   2. serve the repository with the pinned Triton 24.10 image (waits at most READY_TIMEOUT s,
#      stops at once if the container dies, and keeps its log),
#   3. certify the live server (make verify: held-out pairs vs fp32 PyTorch),
#   4. sweep perf_analyzer at 128/256/512/1024 tokens per pair, on the `rerank` ensemble (what a
#      caller sees, Python tokenizer included) and on the cross-encoder alone (the engine's own
#      rate: the length-class model that serves that length, from export/tensorrt_profiles.py),
#   5. report pairs/s against the fp16 FLOP ceiling (PEAK_TFLOPS, H100 SXM dense: 989),
#   6. when EVAL_DATA names a small BEIR-layout set prepared beforehand (the GPU host may have no
#      network: `python -m evaluation.export_ir_datasets beir/scifact/test datasets/scifact`),
#      `make eval` on it: nDCG@10/MRR@10/Recall before and after reranking, served end to end.
# Each server is the image's own command (docker/serve.py): it is ready only once it certified
# itself (TensorRT took every class model; the certificate passed on this GPU), and the script
# stops at once when it says otherwise. Then, once (FP32_EXTERNAL=0 skips it): the onnxruntime
# backend exported fp32 (the 2.27 GB graph, weights in model.onnx.data) is served the same way,
# answering whether Triton 24.10's TensorRT EP takes the external-data graph; its verdict line is
# printed and kept, and the sweep goes on either way.
# Device and ports: GPU, HTTP_PORT, GRPC_PORT, METRICS_PORT, CERT_PORT (scripts/lib/docker_triton.sh).
# Needs `make setup` on the host and MODEL (Hub id or local folder). DRY_RUN=1 prints the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-BAAI/bge-reranker-v2-m3}"
OUT="${OUT:-runs/gpu}"
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"
BATCH="${BATCH:-32}"
BACKENDS="${BACKENDS:-tensorrt onnxruntime}"
MAX_LENGTH="${MAX_LENGTH:-1024}"
READY_TIMEOUT="${READY_TIMEOUT:-1200}"   # a first TensorRT EP build on a small GPU takes minutes
PERF_TIMEOUT="${PERF_TIMEOUT:-600}"
# shellcheck source=scripts/lib/docker_triton.sh
source scripts/lib/docker_triton.sh  # the working directory is the repository root (above)

mkdir -p "$OUT"
build_images
for backend in $BACKENDS; do
  repo="$OUT/$backend/model_repository"
  export_repo "$backend" "$MAX_LENGTH" "$OUT/$backend"
  serve "$repo"
  selfcert_lines | tee "$OUT/$backend/selfcert.txt"
  run make verify URL=localhost:$GRPC_PORT REPO="$repo" REPORT="$OUT/$backend/verify.json"
  if [ -n "${EVAL_DATA:-}" ]; then
    run make eval URL=localhost:$GRPC_PORT DATA="$EVAL_DATA" EVAL_OUT="$OUT/$backend/eval" ${EVAL_CANDIDATES:+CANDIDATES="$EVAL_CANDIDATES"}
  else
    echo "$backend: no EVAL_DATA: retrieval evaluation skipped"
  fi
  for tokens in 128 256 512 1024; do
    run "$PY" -m loadtest.fixed_length --tokenizer "$repo/tokenizer/1/tokenizer.json" \
      --tokens "$tokens" --out "$OUT/$backend/input_$tokens.json"
    run "$PY" -m loadtest.fixed_length --tokenizer "$repo/tokenizer/1/tokenizer.json" \
      --tokens "$tokens" --cross-encoder --out "$OUT/$backend/ids_$tokens.json"
    # Rows of this length run in one length-class model (its max_batch_size >= BATCH up to 1024).
    engine=$("$PY" -m export.tensorrt_profiles --max-length "$MAX_LENGTH" --model-for "$tokens")
    for model in rerank cross_encoder; do
      data=$([ "$model" = rerank ] && echo input || echo ids)
      target=$([ "$model" = rerank ] && echo rerank || echo "$engine")
      run timeout "$PERF_TIMEOUT" "$DOCKER" run --rm --network host -v "$(realpath "$OUT/$backend"):/out" \
        nvcr.io/nvidia/tritonserver:24.10-py3-sdk \
        perf_analyzer -m "$target" -u localhost:$GRPC_PORT -i grpc -b "$BATCH" --input-data "/out/${data}_$tokens.json" \
        --concurrency-range 1:8:1 -f "/out/perf_${model}_$tokens.csv"
    done
  done
  stop_server "$OUT/$backend/triton.log"
done
if [ "${FP32_EXTERNAL:-1}" != 0 ]; then
  ext="$OUT/onnxruntime-fp32"
  export_repo onnxruntime 512 "$ext" fp32
  if serve "$ext/model_repository"; then
    echo "fp32 external-data graph: PASS (TensorRT EP took it, certificate passed)"
  else
    echo "fp32 external-data graph: FAIL (see $ext/triton.log)"
  fi
  selfcert_lines | tee "$ext/selfcert.txt"
  stop_server "$ext/triton.log"
fi
[ -n "${DRY_RUN:-}" ] && exit 0
"$PY" - "$OUT" "$PEAK_TFLOPS" "$BATCH" "$BACKENDS" <<'PY'
import csv, sys
from pathlib import Path
out, peak, batch, backends = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
print(f"| backend | model | tokens | best pairs/s | TFLOP/s | of fp16 peak ({peak:g}) |\n|---|---|---|---|---|---|")
for backend in backends:
    for model in ("rerank", "cross_encoder"):
        for tokens in (128, 256, 512, 1024):
            rows = list(csv.DictReader(open(out / backend / f"perf_{model}_{tokens}.csv")))
            best = max(float(r["Inferences/Second"]) for r in rows)
            tflops = best * 24 * (24 * 1024**2 * tokens + 4 * 1024 * tokens**2) / 1e12
            print(f"| {backend} | {model} | {tokens} | {best:.0f} | {tflops:.0f} | {tflops / peak:.0%} |")
PY
