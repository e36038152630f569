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
#   4. one report: bench_gpu.json / .md / .png (+ one PNG per length) in OUT.
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
FLAG_EMBEDDING="FlagEmbedding==1.4.2"   # the version requirements/dev.txt pins (CPU bench, tests)
# shellcheck source=scripts/lib/docker_triton.sh
source scripts/lib/docker_triton.sh  # the working directory is the repository root (above)

started=$SECONDS
mkdir -p "$OUT"
run "$DOCKER" build -f docker/Dockerfile --target exporter -t bge-reranker-exporter:0.1.0 .
run "$DOCKER" build -f docker/Dockerfile --target server -t bge-reranker-triton:0.1.0 .
model_mount=()
if [ -d "$MODEL" ]; then model_mount=(-v "$(realpath "$MODEL"):/model:ro"); MODEL=/model; fi
results=()
for backend in $BACKENDS; do
  repo="$OUT/$backend/model_repository"
  mkdir -p "$OUT/$backend"
  run "$DOCKER" run --rm --gpus device=0 --user "$(id -u):$(id -g)" "${model_mount[@]}" \
    -v "$(realpath "$OUT/$backend"):/out" bge-reranker-exporter:0.1.0 \
    --model "$MODEL" --backend "$backend" --precision fp16 --max-length "$MAX_LENGTH" --repo /out/model_repository
  if [ ! -f "$OUT/pairs.json" ]; then  # one set of pairs for every system, from the served tokenizer
    run "$PY" -m benchmarks.gpu_bench pairs --tokenizer "$repo/tokenizer/1/tokenizer.json" --tokens "$TOKENS" \
      --passages "$PASSAGES" --out "$OUT/pairs.json"
  fi
  if [ -n "${DRY_RUN:-}" ]; then server=dry-run; else
    server=$("$DOCKER" run -d --gpus device=0 --shm-size 2g -p 127.0.0.1:8000:8000 -p 127.0.0.1:8001:8001 -p 127.0.0.1:8002:8002 \
      -v "$(realpath "$repo"):/models:ro" bge-reranker-triton:0.1.0 \
      tritonserver --model-repository=/models)
  fi
  trap '"$DOCKER" rm -f "$server" >/dev/null 2>&1 || true' EXIT
  if [ -z "${DRY_RUN:-}" ]; then
    wait_ready "$server" "$READY_TIMEOUT"
  fi
  run make verify URL=localhost:8001 REPO="$repo" REPORT="$OUT/$backend/verify.json"
  run "$PY" -m benchmarks.gpu_bench triton --url localhost:8001 --metrics-url http://localhost:8002/metrics \
    --pairs "$OUT/pairs.json" --system "Triton $backend fp16" --concurrency "$CONCURRENCY" --trials "$TRIALS" \
    --out "$OUT/$backend/bench.json"
  results+=("$OUT/$backend/bench.json")
  if [ -z "${DRY_RUN:-}" ]; then "$DOCKER" logs "$server" > "$OUT/$backend/triton.log" 2>&1 || true; fi
  run "$DOCKER" rm -f "$server"
done
# PyTorch fp16 in the exporter image (CUDA torch, pinned versions): root inside this throw-away
# container only to add FlagEmbedding to its venv; the output is handed back to the caller's uid.
run "$DOCKER" run --rm --gpus device=0 --user 0 --entrypoint bash "${model_mount[@]}" \
  -v "$(realpath .):/src:ro" -v "$(realpath "$OUT"):/out" -w /src -e PYTHONPATH=/src bge-reranker-exporter:0.1.0 \
  -c "uv pip install --no-cache -c requirements/dev.txt $FLAG_EMBEDDING matplotlib && \
      python -m benchmarks.gpu_bench torch --model $MODEL --pairs /out/pairs.json --passages $PASSAGES \
        --concurrency $CONCURRENCY --trials $TRIALS --out /out/torch.json && chown $(id -u):$(id -g) /out/torch.json"
results+=("$OUT/torch.json")
run "$PY" -m benchmarks.gpu_bench report --results "${results[@]}" --passages "$PASSAGES" --out "$OUT"
echo "gpu_bench: took $((SECONDS - started)) s; report in $OUT/bench_gpu.md"
