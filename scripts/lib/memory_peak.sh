# The server container's peak memory, run inside it through `docker exec -i <c> sh -s -- MODE <
# scripts/lib/memory_peak.sh` (POSIX sh: the image's /bin/sh). CGROUP (default /sys/fs/cgroup) is
# the container's cgroup; SAMPLED (default /tmp/memory.sampled-peak) the sampler's file.
#   sample  every SAMPLE_INTERVAL s (default 1; SAMPLES > 0 stops after that many), keep the largest
#           memory.current (cgroup v2) or memory/memory.usage_in_bytes (v1) seen in SAMPLED
#   peak    print the peak: cgroup v2 memory.peak (kernel >= 5.19), else v1's
#           memory.max_usage_in_bytes, else the sampled peak. Ubuntu 22.04's kernel 5.15 on cgroup
#           v2 has neither file (memory.peak: Linux 5.19, Documentation/admin-guide/cgroup-v2.rst),
#           so the runbook starts the sampler with the container, before the engine build.
cg="${CGROUP:-/sys/fs/cgroup}"
sampled="${SAMPLED:-/tmp/memory.sampled-peak}"
case "$1" in
sample)
  n=0 peak=$(cat "$sampled" 2>/dev/null || echo 0)  # a restarted sampler keeps the peak so far
  while :; do
    now=$(cat "$cg/memory.current" 2>/dev/null || cat "$cg/memory/memory.usage_in_bytes" 2>/dev/null || echo 0)
    if [ "$now" -gt "$peak" ]; then peak=$now; echo "$peak" > "$sampled.tmp" && mv "$sampled.tmp" "$sampled"; fi
    n=$((n + 1))
    if [ "${SAMPLES:-0}" -gt 0 ] && [ "$n" -ge "${SAMPLES:-0}" ]; then exit 0; fi
    sleep "${SAMPLE_INTERVAL:-1}"
  done
  ;;
peak)
  if [ -r "$cg/memory.peak" ]; then cat "$cg/memory.peak"
  elif [ -r "$cg/memory/memory.max_usage_in_bytes" ]; then cat "$cg/memory/memory.max_usage_in_bytes"
  elif [ -s "$sampled" ]; then cat "$sampled"
  else echo "no memory.peak, no memory.max_usage_in_bytes and no sampled peak under $cg" >&2; exit 1
  fi
  ;;
*) echo "usage: memory_peak.sh sample|peak" >&2; exit 2 ;;
esac
