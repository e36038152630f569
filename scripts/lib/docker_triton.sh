# Shared by the GPU scripts (sourced from the repository root): settings they all take from the
# environment, a dry-run wrapper, the pinned images, an export in the exporter image, and Triton
# served on the GPU by the image's own command (docker/serve.py: engine cache, self-certification)
# with a wait that fails fast when the container is gone or the pod's own verdict says unready.
# Parameters (issue 25 item 9): GPU (docker --gpus value, default device=0), HTTP_PORT, GRPC_PORT,
# METRICS_PORT, CERT_PORT (host ports for Triton's 8000/8001/8002 and the launcher's verdict
# metrics 8003). What is fetched: the images' builds and the perf_analyzer image, both in
# build_images before anything is timed; and, when MODEL is a Hub id (not a local folder), the
# model, by the exporter at export time, into HF_CACHE (default ~/.cache/huggingface, mounted as
# the image's HF_HOME) so a second export or run reuses it.
DOCKER="${DOCKER:-docker}"
PY="${PY:-.venv/bin/python}"
GPU="${GPU:-device=0}"
HTTP_PORT="${HTTP_PORT:-8000}"
GRPC_PORT="${GRPC_PORT:-8001}"
METRICS_PORT="${METRICS_PORT:-8002}"
CERT_PORT="${CERT_PORT:-8003}"
SELFCERT_URL="${SELFCERT_URL:-http://localhost:$CERT_PORT/metrics}"
EXPORTER_IMAGE="bge-reranker-exporter:0.1.0"   # export/tensorrt_build.py EXPORTER_IMAGE
SERVER_IMAGE="bge-reranker-triton:0.1.0"
# perf_analyzer 2.51.0 (Triton 24.10's SDK): multi-GB, pulled in build_images, never inside a
# timed `docker run` (a first pull there ate the throughput run's timeout).
SDK_IMAGE="nvcr.io/nvidia/tritonserver:24.10-py3-sdk"
HF_CACHE="${HF_CACHE:-$HOME/.cache/huggingface}"
run() { if [ -n "${DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi; }

build_images() {  # the exporter and server images and perf_analyzer's; a local MODEL folder is
  # mounted as /model, else the Hub download goes to the persistent HF_CACHE
  run "$DOCKER" build -f docker/Dockerfile --target exporter -t "$EXPORTER_IMAGE" .
  run "$DOCKER" build -f docker/Dockerfile --target server -t "$SERVER_IMAGE" .
  run "$DOCKER" pull "$SDK_IMAGE"
  model_mount=()
  if [ -d "$MODEL" ]; then model_mount=(-v "$(realpath "$MODEL"):/model:ro"); MODEL=/model
  else mkdir -p "$HF_CACHE"; model_mount=(-v "$(realpath "$HF_CACHE"):/tmp/huggingface"); fi
}

export_repo() {  # backend, max_length, folder[, precision=fp16]: MODEL exported to <folder>/model_repository
  mkdir -p "$3"
  run "$DOCKER" run --rm --gpus "$GPU" --user "$(id -u):$(id -g)" "${model_mount[@]}" \
    -v "$(realpath "$3"):/out" "$EXPORTER_IMAGE" \
    --model "$MODEL" --backend "$1" --precision "${4:-fp16}" --max-length "$2" --repo /out/model_repository
}

verdict_of() {  # the launcher's verdict metrics: "ready", "unready", or "" while pending/unreachable
  local text
  text=$(curl -fs "$SELFCERT_URL" 2>/dev/null) || return 0
  grep -q '^reranker_selfcert_pending 0' <<<"$text" || return 0
  if grep -Eq '^reranker_selfcert_ready\{.*\} 1$' <<<"$text"; then echo ready; else echo unready; fi
}

wait_ready() {  # container, deadline in seconds: ready only once the pod certified itself
  local container="$1" deadline=$((SECONDS + $2)) state
  while :; do
    state=$(verdict_of)
    [ "$state" = ready ] && return 0
    if [ "$state" = unready ]; then
      echo "error: the server certified itself NOT READY (engine not taken or certificate failed):" >&2
      "$DOCKER" logs "$container" 2>&1 | grep -E '\[self-certify\]|\[serve\]' | tail -5 >&2 || true
      return 1
    fi
    if [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" != "true" ]; then
      echo "error: the Triton container exited before it was ready; its log:" >&2
      "$DOCKER" logs "$container" 2>&1 | tail -50 >&2 || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: Triton not ready after $2 s" >&2
      return 1
    fi
    sleep 2
  done
}

serve() {  # repository: the server image's own command (serve.py -> tritonserver), ports on localhost,
  # certified ready within READY_TIMEOUT s; $server is its container, removed on exit if still there
  local cmd=("$DOCKER" run -d --gpus "$GPU" --shm-size 2g -p "127.0.0.1:$HTTP_PORT:8000"
    -p "127.0.0.1:$GRPC_PORT:8001" -p "127.0.0.1:$METRICS_PORT:8002" -p "127.0.0.1:$CERT_PORT:8003"
    -v "$(realpath "$1"):/models:ro" "$SERVER_IMAGE")
  if [ -n "${DRY_RUN:-}" ]; then
    echo "+ ${cmd[*]}"; server=dry-run
    echo "+ $DOCKER exec -i $server sh -s -- sample < scripts/lib/memory_peak.sh &"; return
  fi
  server=$("${cmd[@]}")
  trap '"$DOCKER" rm -f "$server" >/dev/null 2>&1 || true' EXIT
  # From the start (the engine build is the peak): sampled memory for kernels without memory.peak.
  "$DOCKER" exec -i "$server" sh -s -- sample < scripts/lib/memory_peak.sh >/dev/null 2>&1 &
  wait_ready "$server" "$READY_TIMEOUT"
}

selfcert_lines() {  # the launcher's verdict line and per-model engine metrics (after serve)
  if [ -n "${DRY_RUN:-}" ]; then echo "+ $DOCKER logs $server | grep [self-certify]"; return; fi
  "$DOCKER" logs "$server" 2>&1 | grep '\[self-certify\]' | tail -1 || true
  curl -fs "$SELFCERT_URL" | grep -E '^reranker_(selfcert_pass|tensorrt_engine_taken)' || true
}

host_peak() {  # file: the server container's peak memory (scripts/lib/memory_peak.sh peak)
  if [ -n "${DRY_RUN:-}" ]; then echo "+ $DOCKER exec -i $server sh -s -- peak < scripts/lib/memory_peak.sh"; return; fi
  "$DOCKER" exec -i "$server" sh -s -- peak < scripts/lib/memory_peak.sh > "$1" || true
}

stop_server() {  # log file: the server's log kept there, its container removed
  if [ -n "${DRY_RUN:-}" ]; then echo "+ $DOCKER rm -f $server"; return; fi
  "$DOCKER" logs "$server" > "$1" 2>&1 || true
  "$DOCKER" rm -f "$server" >/dev/null
}
