# Shared by the GPU scripts (sourced): settings they all take from the environment, a dry-run
# wrapper, and a wait for Triton that fails fast when its container is gone.
DOCKER="${DOCKER:-docker}"
PY="${PY:-.venv/bin/python}"
READY_URL="${READY_URL:-http://localhost:8000/v2/health/ready}"
run() { if [ -n "${DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi; }

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
