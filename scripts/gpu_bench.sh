#!/usr/bin/env bash
# The GPU benchmark we can defend (issue 15), on a host with an NVIDIA GPU, Docker, the NVIDIA
# container toolkit and `make setup`:
#   1. build the pinned images (exporter: nvcr.io/nvidia/tensorrt:24.10-py3, server: tritonserver:24.10-py3),
#   2. for each backend in BACKENDS (our TensorRT plan; ONNX Runtime with its TensorRT EP):
#      export fp16 at MAX_LENGTH (2048) in the exporter image, serve with the server image (waits
#      at most READY_TIMEOUT s, stops at once with the log if the container dies), certify it
#      (make verify), and run the same requests through the client at each concurrency,
#      reading the server's padding counters before/after each point,
#      - with the peers that serve this model started once beside it, each in its pinned image on the
#        same GPU (PEERS: TEI, vLLM, Infinity; same model folder, fp16), and every system called
#        round-robin in a random order per trial on the same pairs (`gpu_bench interleaved`: paired
#        ratios with bootstrap 95% intervals); each peer has at most PEER_GUARD calls in flight,
#        and TEI gets at most 32 texts per call (its --max-client-batch-size; 413 beyond),
#   3. PyTorch fp16 (FlagReranker use_fp16=True) on the same pairs in the exporter image (its
#      torch, FlagEmbedding pinned by requirements/dev.txt), plus fp32 logits as the reference;
#      one compute_score() at a time (it is not re-entrant: "Already borrowed"), and its repeated
#      probe forward on each call's first batch skipped (counted in its rows),
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
TRIALS="${TRIALS:-10}"
PASSAGES="${PASSAGES:-16}"
BACKENDS="${BACKENDS:-tensorrt onnxruntime}"
READY_TIMEOUT="${READY_TIMEOUT:-1200}"   # a first TensorRT EP build takes minutes
LONG_BACKEND="${LONG_BACKEND-tensorrt}"
LONG_CASES="512:window 8192:truncate"   # max_length:mode, benchmarks/long_documents.py CASES
LONG_PASSAGES="${LONG_PASSAGES:-100}"
LONG_REPEATS="${LONG_REPEATS:-2}"
LONG_TIMEOUT="${LONG_TIMEOUT:-1800}"
FLAG_EMBEDDING="FlagEmbedding==1.4.2"   # the version requirements/dev.txt pins (CPU bench, tests)
# The peers, pinned by tag (TEI's hopper- images are its H100 builds; use 1.8 on an A100 / L4).
TEI_IMAGE="${TEI_IMAGE:-ghcr.io/huggingface/text-embeddings-inference:hopper-1.8}"
VLLM_IMAGE="${VLLM_IMAGE:-vllm/vllm-openai:v0.10.2}"
INFINITY_IMAGE="${INFINITY_IMAGE:-michaelf34/infinity:0.0.77}"
PEERS="${PEERS-tei vllm infinity}"
PEER_GUARD="${PEER_GUARD:-4}"            # calls in flight per peer, at most
SERVED_NAME="bge-reranker-v2-m3"
# shellcheck source=scripts/lib/docker_triton.sh
source scripts/lib/docker_triton.sh  # the working directory is the repository root (above)

start_peer() {  # kind port: the peer's container on the GPU, healthy within READY_TIMEOUT s
  local kind="$1" port="$2" image inner args
  case "$kind" in
    tei) image="$TEI_IMAGE" inner=80
      args=(--model-id "$MODEL" --dtype float16 --max-client-batch-size 32 --auto-truncate) ;;
    vllm) image="$VLLM_IMAGE" inner=8000
      args=(--model "$MODEL" --served-model-name "$SERVED_NAME" --dtype float16 --max-model-len "$MAX_LENGTH"
        --gpu-memory-utilization 0.2) ;;
    infinity) image="$INFINITY_IMAGE" inner=7997
      args=(v2 --model-id "$MODEL" --served-model-name "$SERVED_NAME" --port 7997 --engine torch --dtype float16
        --device cuda --batch-size 32) ;;
    *) echo "error: unknown peer $kind (PEERS takes tei, vllm, infinity)" >&2; return 1 ;;
  esac
  local cmd=("$DOCKER" run -d --gpus device=0 --shm-size 2g -p "127.0.0.1:$port:$inner" "${model_mount[@]}"
    "$image" "${args[@]}")
  if [ -n "${DRY_RUN:-}" ]; then echo "+ ${cmd[*]}"; peer_containers+=("dry-run-$kind"); return; fi
  local container deadline=$((SECONDS + READY_TIMEOUT))
  container=$("${cmd[@]}")
  peer_containers+=("$container")
  until curl -fs "http://localhost:$port/health" >/dev/null 2>&1; do
    if [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" != "true" ]; then
      echo "error: the $kind container exited before it was healthy; its log:" >&2
      "$DOCKER" logs "$container" 2>&1 | tail -50 >&2 || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then echo "error: $kind not healthy after $READY_TIMEOUT s" >&2; return 1; fi
    sleep 2
  done
}

stop_peers() {  # their logs kept in OUT/peers/
  mkdir -p "$OUT/peers"
  for container in "${peer_containers[@]}"; do
    if [ -n "${DRY_RUN:-}" ]; then echo "+ $DOCKER rm -f $container"; continue; fi
    "$DOCKER" logs "$container" > "$OUT/peers/$container.log" 2>&1 || true
    "$DOCKER" rm -f "$container" >/dev/null || true
  done
  peer_containers=()
}

started=$SECONDS
mkdir -p "$OUT"
build_images
peer_containers=()
peer_args=()
port=8081
for kind in $PEERS; do
  start_peer "$kind" "$port"
  case "$kind" in tei) name=TEI ;; vllm) name=vLLM ;; infinity) name=Infinity ;; esac
  peer_args+=(--system "$name=$kind@http://localhost:$port" --guard "$name=$PEER_GUARD")
  port=$((port + 1))
done
trap 'for c in "${peer_containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done' EXIT
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
  if [ "${#peer_args[@]}" -gt 0 ]; then  # ours and every peer, interleaved on the same pairs
    run "$PY" -m benchmarks.gpu_bench interleaved --pairs "$OUT/pairs.json" \
      --system "Triton $backend fp16=triton@localhost:8001" "${peer_args[@]}" --served-model-name "$SERVED_NAME" \
      --concurrency "$CONCURRENCY" --trials "$TRIALS" --out "$OUT/$backend/interleaved.json"
    results+=("$OUT/$backend/interleaved.json")
  fi
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
stop_peers
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
