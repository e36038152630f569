"""Serving overhead by request size: how much work a request must carry before what the server
adds falls under 5% (issue 30 item 4).

    python -m benchmarks.overhead_by_request_size [--shape tiny] [--passages 8 16 32 64] [--trials 60]
    python -m benchmarks.overhead_by_request_size --from DIR [DIR ...]    # re-read earlier runs

Runs benchmarks/serving_overhead.py once per request size (its method: the served `rerank` over
bare tritonclient vs the serving tokenizer + ONNX Runtime in process on the same model.onnx, one
request at a time, systems interleaved in random order per trial, paired per-trial ratios with a
bootstrap 95% interval). From each run's trials: the in-process ms per request (the work), the
served ms per request, their per-trial difference (the fixed cost serving adds to one request:
gRPC, the ensemble, two Python-stub hops) with its interval, and the ratio. A fixed cost c gives
ratio work / (work + c), so 0.95 needs work >= 19 c; the table says where each size stands and
the plot shows the ratio against the work per request with the 0.95 line.

What it does not show: a GPU (the class model's stub hop does not exist there, the work per
request is a few ms, so the ratio is lower for the same fixed cost); concurrency above one.
Writes benchmarks/results/overhead_by_request_size_<shape>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks import interleave
from benchmarks.serving_overhead import IN_PROCESS, IN_PROCESS_PARTS, SERVED, TARGET

WORK_PER_FIXED_COST = TARGET / (1 - TARGET)  # work / (work + c) >= 0.95  <=>  work >= 19 c


def summarise(result: dict) -> dict:
    """One request size: the work, the served time, the fixed cost (with its interval) and the ratios,
    from its trials. The fixed cost is taken against the same runs in process (the class model's
    parts): against one run per request the split's padding saving would hide part of it."""
    passages = result["passages_per_request"]

    def ms(name: str) -> np.ndarray:
        return np.array([passages / t[name]["pairs_per_s"] * 1e3 for t in result["trials"]])

    served, local, same_runs = ms(SERVED), ms(IN_PROCESS), ms(IN_PROCESS_PARTS)
    fixed = served - same_runs
    low, high = interleave.bootstrap_median(fixed)
    return {
        "passages_per_request": passages,
        "in_process_ms_per_request": round(float(np.median(local)), 3),
        "same_runs_in_process_ms_per_request": round(float(np.median(same_runs)), 3),
        "served_ms_per_request": round(float(np.median(served)), 3),
        "fixed_cost_ms": round(float(np.median(fixed)), 3),
        "fixed_cost_ms_ci95": [round(low, 3), round(high, 3)],
        "ratio": result["ratio_served_over_in_process"],
        "ratio_same_runs": result["ratio_served_over_in_process_same_runs"],
        "work_needed_for_target_ms": round(WORK_PER_FIXED_COST * float(np.median(fixed)), 1),
        "cross_encoder_runs_per_request": result["cross_encoder_runs_per_request"],
        "trials": len(result["trials"]),
    }


def markdown(summary: dict) -> str:
    def interval(ratio: dict) -> str:
        return f"{ratio['ratio']} [{ratio['ci95'][0]}, {ratio['ci95'][1]}]"

    lines = [
        f"# Serving overhead by request size ({summary['shape']})",
        "",
        f"Written by `python -m benchmarks.overhead_by_request_size` (method in its docstring). {summary['model']}; "
        f"{summary['machine']['cpu']} x {summary['machine']['cores']}; one request at a time; "
        f"{summary['shared_machine']}",
        "",
        "| passages per request | in process ms, one run (the work) | in process ms, the served runs | served ms "
        f"| fixed cost ms [95%] | **served / in process** [95%] | served / the same runs [95%] | >= {TARGET}? "
        f"| work for {TARGET} at this fixed cost (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["sizes"]:
        ratio = row["ratio"]
        met = "yes" if ratio["ci95"][0] >= TARGET else ("point only" if ratio["ratio"] >= TARGET else "no")
        lines.append(
            f"| {row['passages_per_request']} | {row['in_process_ms_per_request']} | "
            f"{row['same_runs_in_process_ms_per_request']} | {row['served_ms_per_request']} | "
            f"{row['fixed_cost_ms']} [{row['fixed_cost_ms_ci95'][0]}, {row['fixed_cost_ms_ci95'][1]}] | "
            f"**{interval(ratio)}** | {interval(row['ratio_same_runs'])} | {met} | {row['work_needed_for_target_ms']} |"
        )
    lines += [
        "",
        f"{summary['sizes'][0]['trials']} interleaved trials per size, 4 requests per system per trial. "
        f"`>= {TARGET}?` (of the headline, served / in process): yes = the whole interval; point only = the median "
        "but not the interval. The headline's reference runs each request as one batch at the tokenizer's padding, "
        "as an in-process caller would; the served class model splits a request whose pairs span buckets where "
        "that pays, and that padding saving is in the headline. `served / the same runs` leaves it out. Fixed "
        "cost: served minus the same runs in process, per trial (median, bootstrap interval) - what serving adds; "
        f"a ratio of {TARGET} needs work >= {WORK_PER_FIXED_COST:.0f} x fixed cost.",
        "",
        "Not shown: a GPU (no Python stub for the class model there, a few ms of work per request: a lower "
        "ratio for the same fixed cost), concurrency above one, other CPUs.",
        "",
        f"![ratio by request size](overhead_by_request_size_{summary['shape']}.png)",
        "",
    ]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = summary["sizes"]
    work = [s["in_process_ms_per_request"] for s in sizes]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for key, x_key, label in (
        ("ratio", "in_process_ms_per_request", "served / in process, one run per request (headline)"),
        ("ratio_same_runs", "same_runs_in_process_ms_per_request", "served / the same runs in process (pure overhead)"),
    ):
        point = [s[key]["ratio"] for s in sizes]
        x = [s[x_key] for s in sizes]
        errors = [
            [p - s[key]["ci95"][0] for p, s in zip(point, sizes)],
            [s[key]["ci95"][1] - p for p, s in zip(point, sizes)],
        ]
        ax.errorbar(x, point, yerr=errors, fmt="o-", capsize=4, label=f"{label}, 95% interval")
    for s, x in zip(sizes, work):
        ax.annotate(
            f"{s['passages_per_request']} passages", (x, s["ratio"]["ratio"]), textcoords="offset points", xytext=(5, 6)
        )
    ax.axhline(TARGET, color="grey", linestyle="--", label=f"target {TARGET}")
    grid = np.linspace(min(work) * 0.8, max(work) * 1.2, 100)
    fixed = float(np.median([s["fixed_cost_ms"] for s in sizes]))
    ax.plot(grid, grid / (grid + fixed), color="tab:orange", alpha=0.6, label=f"work / (work + {fixed:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("in-process ms per request (the tokenizer's and the model's own work, as each reference runs it)")
    ax.set_ylabel("served / in-process throughput")
    ax.set_title(f"Serving overhead by request size ({summary['shape']} stand-in, CPU, one request at a time)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("tiny", "bench"), default="tiny")
    parser.add_argument("--passages", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--from", dest="sources", type=Path, nargs="+", help="serving_overhead result folders")
    args = parser.parse_args(argv)

    folders = args.sources
    if not folders:
        from benchmarks import serving_overhead

        folders = []
        for passages in args.passages:
            folder = args.work / "overhead_by_request_size" / f"{args.shape}-p{passages}"
            print(f"[overhead-by-size] {passages} passages per request ...", flush=True)
            code = serving_overhead.main(
                [
                    *("--shape", args.shape, "--trials", str(args.trials), "--requests", str(args.requests)),
                    *("--passages", str(passages), "--no-router", "--breakdown-rounds", "2", "--out", str(folder)),
                ]
            )
            if code:
                return code
            folders.append(folder)
    results = [json.loads(next(Path(f).glob("serving_overhead_*.json")).read_text()) for f in folders]
    results.sort(key=lambda r: r["passages_per_request"])
    shape = results[0]["shape"]
    summary = {
        "what": __doc__.split("\n\n")[0],
        "shape": shape,
        "model": results[0]["model"],
        "machine": results[0]["machine"],
        "shared_machine": results[0]["shared_machine"],
        "target": TARGET,
        "sizes": [summarise(r) for r in results],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"overhead_by_request_size_{shape}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(summary))
    plot(summary, stem.with_suffix(".png"))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
