# Shared by the GPU scripts (sourced from the repository root): settings they all take from the
# environment, a dry-run wrapper, the pinned images, an fp16 export in the exporter image, and
# Triton served on the GPU with a wait that fails fast when its container is gone.
DOCKER="${DOCKER:-docker}"
PY="${PY:-.venv/bin/python}"
READY_URL="${READY_URL:-http://localhost:8000/v2/health/ready}"
run() { if [ -n "${DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi; }

build_images() {  # the exporter and server images; a local MODEL folder is mounted as /model
  run "$DOCKER" build -f docker/Dockerfile --target exporter -t bge-reranker-exporter:0.1.0 .
  run "$DOCKER" build -f docker/Dockerfile --target server -t bge-reranker-triton:0.1.0 .
  model_mount=()
  if [ -d "$MODEL" ]; then model_mount=(-v "$(realpath "$MODEL"):/model:ro"); MODEL=/model; fi
}

export_repo() {  # backend, max_length, folder: MODEL exported fp16 to <folder>/model_repository
  mkdir -p "$3"
  run "$DOCKER" run --rm --gpus device=0 --user "$(id -u):$(id -g)" "${model_mount[@]}" \
    -v "$(realpath "$3"):/out" bge-reranker-exporter:0.1.0 \
    --model "$MODEL" --backend "$1" --precision fp16 --max-length "$2" --repo /out/model_repository
}

wait_ready() {  # container, deadline in seconds
  local container="$1" deadline=$((SECONDS + $2))
  until curl -fs "$READY_URL" >/dev/null 2>&1; do
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

serve() {  # repository [tritonserver flags...]: Triton on the GPU (ports 8000-8002 on localhost),
  # ready within READY_TIMEOUT s; $server is its container, removed on exit if still there
  local cmd=("$DOCKER" run -d --gpus device=0 --shm-size 2g -p 127.0.0.1:8000:8000 -p 127.0.0.1:8001:8001
    -p 127.0.0.1:8002:8002 -v "$(realpath "$1"):/models:ro" bge-reranker-triton:0.1.0
    tritonserver --model-repository=/models "${@:2}")
  if [ -n "${DRY_RUN:-}" ]; then echo "+ ${cmd[*]}"; server=dry-run; return; fi
  server=$("${cmd[@]}")
  trap '"$DOCKER" rm -f "$server" >/dev/null 2>&1 || true' EXIT
  wait_ready "$server" "$READY_TIMEOUT"
}

stop_server() {  # log file: the server's log kept there, its container removed
  if [ -n "${DRY_RUN:-}" ]; then echo "+ $DOCKER rm -f $server"; return; fi
  "$DOCKER" logs "$server" > "$1" 2>&1 || true
  "$DOCKER" rm -f "$server" >/dev/null
}
