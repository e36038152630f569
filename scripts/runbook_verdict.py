#!/usr/bin/env python3
"""The GPU runbook's verdict (scripts/gpu_runbook.sh): one PASS/FAIL line per check, from what the
runbook collected on the GPU host. Standard library only (runs with the host's python3).

    python3 scripts/runbook_verdict.py --metrics selfcert.prom --manifest REPO/manifest.json \
        --nvidia-smi smi.csv --perf perf.csv [--budget-bytes N --min-pairs-per-s N]

Checks:
- engine taken: every `reranker_tensorrt_engine_taken{model}` is 1 (and there is one)
- certificate: `reranker_selfcert_certificate_pass` is 1, with max |d logit| / |d score| printed
- memory per class: the manifest's per-class figures (measured at the plan build, else the
  estimate from the geometry) each printed, PASS when their total and the device memory nvidia-smi
  reports in use after warm-up are both within the budget
- throughput: perf_analyzer's best rerank rate (requests/s x pairs per request) >= the minimum
- host memory (with --host-peak and --host-need): the server container's peak memory (its cgroup's,
  page cache included, so an upper bound) within the pod memory limit the chart's values derive
  for this backend and max_length (export/plan_memory.py), with the estimated peak beside it
Exit 0 when every line is PASS, else 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

# export/settings.py GPU_MEMORY_BUDGET_BYTES (a 24 GB card less 1 GiB); tests/test_runbook.py
# checks the two agree.
DEFAULT_BUDGET_BYTES = (23_028 << 20) - (1 << 30)
METRIC = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    rows = []
    for line in text.splitlines():
        match = METRIC.match(line.strip())
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
            rows.append((match["name"], labels, float(match["value"])))
    return rows


def line(ok: bool, what: str, detail: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} {what}: {detail}"


def engine_taken(rows) -> str:
    taken = {
        labels.get("model", "?"): value for name, labels, value in rows if name == "reranker_tensorrt_engine_taken"
    }
    if not taken:
        return line(
            False, "engine taken", "no reranker_tensorrt_engine_taken metric (self-certification off or pending)"
        )
    missing = sorted(m for m, v in taken.items() if v != 1)
    detail = f"{len(taken) - len(missing)}/{len(taken)} class models on TensorRT"
    return line(not missing, "engine taken", detail + (f"; not taken: {', '.join(missing)}" if missing else ""))


def certificate(rows) -> str:
    values = {name: (labels, value) for name, labels, value in rows}
    if "reranker_selfcert_certificate_pass" not in values:
        return line(False, "certificate", "no verdict (reranker_selfcert_certificate_pass missing)")
    labels, passed = values["reranker_selfcert_certificate_pass"]
    logit = values.get("reranker_selfcert_max_abs_logit", ({}, float("nan")))[1]
    score = values.get("reranker_selfcert_max_abs_score", ({}, float("nan")))[1]
    return line(
        passed == 1,
        "certificate",
        f"max|d logit| {logit:.3g} max|d score| {score:.3g} on {labels.get('device', '?')}",
    )


def memory(manifest: dict, smi_csv: str, budget: int) -> list[str]:
    plan = manifest.get("tensorrt_plan") or {}
    classes = plan.get("memory") or plan.get("memory_estimate") or []
    lines = []
    for c in classes:
        kind = "measured at build" if c.get("measured") else "estimate"
        lines.append(
            line(
                True,
                f"memory {c['model']}",
                f"{c['total_bytes'] / 2**30:.2f} GiB ({c['instances']} x ({c['weights_bytes'] / 2**30:.2f} weights + "
                f"{c['context_bytes'] / 2**30:.2f} context), {kind})",
            )
        )
    total = sum(c["total_bytes"] for c in classes)
    used = [int(float(v)) for v in re.findall(r"(\d+(?:\.\d+)?)\s*MiB", smi_csv)]
    used_bytes = (used[0] << 20) if used else None
    ok = total <= budget and used_bytes is not None and used_bytes <= budget
    detail = (
        f"classes {total / 2**30:.2f} GiB; device in use {used_bytes / 2**30:.2f} GiB"
        if used_bytes is not None
        else f"classes {total / 2**30:.2f} GiB; nvidia-smi gave no memory.used"
    )
    lines.append(line(ok, "memory total", f"{detail} (budget {budget / 2**30:.2f} GiB)"))
    return lines


def throughput(perf_csv: str, pairs_per_request: int, minimum: float) -> str:
    rows = list(csv.DictReader(perf_csv.splitlines()))
    rates = [float(r["Inferences/Second"]) for r in rows if r.get("Inferences/Second")]
    if not rates:
        return line(False, "throughput", "no perf_analyzer rows")
    best = max(rates) * pairs_per_request
    return line(best >= minimum, "throughput", f"{best:.0f} pairs/s (minimum {minimum:g})")


def host_memory(peak_text: str, need_text: str) -> str:
    """peak_text: the container cgroup's peak bytes; need_text: "<estimated peak> <pod limit>" bytes
    (python -m export.plan_memory --host BACKEND --max-length N --bytes)."""
    try:
        peak = int(peak_text.split()[0])
        estimated, limit = (int(x) for x in need_text.split()[:2])
    except (IndexError, ValueError):
        return line(False, "host memory", "no container peak or no derived limit to compare")
    detail = (
        f"container peak {peak / 2**30:.2f} GiB; estimated peak {estimated / 2**30:.2f} GiB, "
        f"pod limit {limit / 2**30:.0f} GiB"
    )
    if peak > estimated:
        detail += " (over the estimate: the headroom is being used; report it)"
    return line(peak <= limit, "host memory", detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, required=True, help="the launcher's :8003/metrics text")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--nvidia-smi", type=Path, required=True, help="memory.used csv after warm-up")
    parser.add_argument("--perf", type=Path, required=True, help="perf_analyzer -f csv of the rerank model")
    # perf_analyzer counts -b pairs per request as that many inferences: its rate is pairs/s.
    parser.add_argument("--pairs-per-request", type=int, default=1)
    parser.add_argument("--budget-bytes", type=int, default=DEFAULT_BUDGET_BYTES)
    parser.add_argument("--min-pairs-per-s", type=float, default=100.0)
    parser.add_argument("--host-peak", type=Path, default=None, help="the server container's peak memory, bytes")
    parser.add_argument("--host-need", type=Path, default=None, help="'<estimated peak> <pod limit>' bytes")
    args = parser.parse_args(argv)
    rows = parse_metrics(args.metrics.read_text() if args.metrics.exists() else "")
    manifest = json.loads(args.manifest.read_text()) if args.manifest.exists() else {}
    lines = [
        engine_taken(rows),
        certificate(rows),
        *memory(manifest, args.nvidia_smi.read_text() if args.nvidia_smi.exists() else "", args.budget_bytes),
        throughput(args.perf.read_text() if args.perf.exists() else "", args.pairs_per_request, args.min_pairs_per_s),
    ]
    if args.host_peak is not None and args.host_need is not None:
        lines.append(
            host_memory(
                args.host_peak.read_text() if args.host_peak.exists() else "",
                args.host_need.read_text() if args.host_need.exists() else "",
            )
        )
    print("\n".join(lines))
    return 0 if all(entry.startswith("PASS") for entry in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
