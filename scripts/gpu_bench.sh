#!/usr/bin/env bash
# The GPU benchmark we can defend (issue 15), on a host with an NVIDIA GPU, Docker, the NVIDIA
# container toolkit and `make setup`:
#   1. build the pinned images (exporter: nvcr.io/nvidia/tensorrt:24.10-py3, server: tritonserver:24.10-py3),
#   2. for each backend in BACKENDS (our TensorRT plan; ONNX Runtime with its TensorRT EP):
#      export fp16 at MAX_LENGTH (2048) in the exporter image, serve with the server image (waits
#      at most READY_TIMEOUT s, stops at once with the log if the container dies), certify it
#      (make verify), and run the same requests through the client at each concurrency,
#      reading the server's padding counters before/after each point,
#   3. PyTorch fp16 (FlagReranker use_fp16=True) on the same pairs in the exporter image (its
#      torch, FlagEmbedding pinned by requirements/dev.txt), plus fp32 logits as the reference,
#   4. one report: bench_gpu.json / .md / .png (+ one PNG per length) in OUT,
#   5. long documents (`make bench-long`'s case, benchmarks/long_documents.py), unless LONG_BACKEND
#      is empty: LONG_BACKEND (tensorrt) exported fp16 at max_length 512 and at 8,192, each served
#      alone; the same query x LONG_PASSAGES passages of 1,000-6,000 tokens through the client,
#      window mode at 512 and one pass (truncate) at 8,192, each run at most LONG_TIMEOUT s;
#      long_documents_gpu.json / .md in OUT (passages/s, windows/s, padding efficiency, s per call).
# Pairs are exactly 128 / 512 / 2,048 tokens (TOKENS). DRY_RUN=1 prints every command.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-BAAI/bge-reranker-v2-m3}"
OUT="${OUT:-runs/gpu-bench}"
TOKENS="${TOKENS:-128,512,2048}"
MAX_LENGTH="${MAX_LENGTH:-2048}"
CONCURRENCY="${CONCURRENCY:-1,2,4}"
TRIALS="${TRIALS:-5}"
PASSAGES="${PASSAGES:-16}"
BACKENDS="${BACKENDS:-tensorrt onnxruntime}"
READY_TIMEOUT="${READY_TIMEOUT:-1200}"   # a first TensorRT EP build takes minutes
LONG_BACKEND="${LONG_BACKEND-tensorrt}"
LONG_CASES="512:window 8192:truncate"   # max_length:mode, benchmarks/long_documents.py CASES
LONG_PASSAGES="${LONG_PASSAGES:-100}"
LONG_REPEATS="${LONG_REPEATS:-2}"
LONG_TIMEOUT="${LONG_TIMEOUT:-1800}"
FLAG_EMBEDDING="FlagEmbedding==1.4.2"   # the version requirements/dev.txt pins (CPU bench, tests)
# shellcheck source=scripts/lib/docker_triton.sh
source scripts/lib/docker_triton.sh  # the working directory is the repository root (above)

started=$SECONDS
mkdir -p "$OUT"
build_images
results=()
for backend in $BACKENDS; do
  repo="$OUT/$backend/model_repository"
  export_repo "$backend" "$MAX_LENGTH" "$OUT/$backend"
  if [ ! -f "$OUT/pairs.json" ]; then  # one set of pairs for every system, from the served tokenizer
    run "$PY" -m benchmarks.gpu_bench pairs --tokenizer "$repo/tokenizer/1/tokenizer.json" --tokens "$TOKENS" \
      --passages "$PASSAGES" --out "$OUT/pairs.json"
  fi
  serve "$repo"
  selfcert_lines
  run make verify URL=localhost:$GRPC_PORT REPO="$repo" REPORT="$OUT/$backend/verify.json"
  run "$PY" -m benchmarks.gpu_bench triton --url localhost:$GRPC_PORT --metrics-url http://localhost:$METRICS_PORT/metrics \
    --pairs "$OUT/pairs.json" --system "Triton $backend fp16" --concurrency "$CONCURRENCY" --trials "$TRIALS" \
    --out "$OUT/$backend/bench.json"
  results+=("$OUT/$backend/bench.json")
  stop_server "$OUT/$backend/triton.log"
done
# PyTorch fp16 in the exporter image (CUDA torch, pinned versions): root inside this throw-away
# container only to add FlagEmbedding to its venv; the output is handed back to the caller's uid.
run "$DOCKER" run --rm --gpus "$GPU" --user 0 --entrypoint bash "${model_mount[@]}" \
  -v "$(realpath .):/src:ro" -v "$(realpath "$OUT"):/out" -w /src -e PYTHONPATH=/src bge-reranker-exporter:0.1.0 \
  -c "uv pip install --no-cache -c requirements/dev.txt $FLAG_EMBEDDING matplotlib && \
      python -m benchmarks.gpu_bench torch --model $MODEL --pairs /out/pairs.json --passages $PASSAGES \
        --concurrency $CONCURRENCY --trials $TRIALS --out /out/torch.json && chown $(id -u):$(id -g) /out/torch.json"
results+=("$OUT/torch.json")
run "$PY" -m benchmarks.gpu_bench report --results "${results[@]}" --passages "$PASSAGES" --out "$OUT"
if [ -n "$LONG_BACKEND" ]; then
  long_results=()
  for case in $LONG_CASES; do
    length="${case%:*}" mode="${case#*:}"
    dir="$OUT/long_documents/$length"
    export_repo "$LONG_BACKEND" "$length" "$dir"
    serve "$dir/model_repository"
    run timeout "$LONG_TIMEOUT" "$PY" -m benchmarks.gpu_bench long --url localhost:$GRPC_PORT --max-length "$length" \
      --mode "$mode" --tokenizer "$dir/model_repository/tokenizer/1/tokenizer.json" \
      --system "Triton $LONG_BACKEND fp16" --passages "$LONG_PASSAGES" --repeats "$LONG_REPEATS" --out "$dir/long.json"
    long_results+=("$dir/long.json")
    stop_server "$dir/triton.log"
  done
  run "$PY" -m benchmarks.gpu_bench long-report --results "${long_results[@]}" --out "$OUT"
fi
echo "gpu_bench: took $((SECONDS - started)) s; report in $OUT/bench_gpu.md"
