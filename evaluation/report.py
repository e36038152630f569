"""Outputs of a run: report.json, report.md, ndcg_delta.png and TREC run files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from .first_stage import trec_order
from .metrics import NDCG


def write_run(path: Path, run: Dict[str, Dict[str, float]], tag: str) -> None:
    """TREC run format, ranks in trec_eval's order (what any TREC tool will read back)."""
    with path.open("w", encoding="utf-8") as handle:
        for qid in sorted(run):
            for rank, (did, score) in enumerate(trec_order(run[qid]), 1):
                handle.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def markdown(report: dict) -> str:
    before, after = report["overall"]["first_stage"], report["overall"]["reranked"]
    lines = [
        f"# Evaluation: {report['dataset']['name']} ({report['dataset']['split']})",
        "",
        f"First stage `{report['first_stage']}`, top {report['depth']} reranked through `{report['server']['model']}` "
        f"at {report['server']['url']} (mode {report['mode']}, server max_length {report['server']['max_length']}); "
        f"{report['dataset']['judged_queries']} queries counted "
        f"({report['dataset']['queries_without_relevant']} of them without a relevant document: 0 each); "
        f"identical query/document ids {report['conventions']['identical_ids']}.",
        "",
        "| metric | first stage | reranked | delta |",
        "|---|---|---|---|",
    ]
    for name in before:
        lines.append(f"| {name} | {before[name]:.4f} | {after[name]:.4f} | {after[name] - before[name]:+.4f} |")
    t = report["throughput"]
    lat = t["latency_ms"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    lines += [
        "",
        "| queries | pairs | pairs/s | queries/s | latency p50 / p95 / p99 / max (ms) | truncated pairs |",
        "|---|---|---|---|---|---|",
        f"| {t['queries']} | {t['pairs']} | {t['pairs_per_s']:.1f} | {t['queries_per_s']:.2f} | "
        f"{fmt(lat['p50'])} / {fmt(lat['p95'])} / {fmt(lat['p99'])} / {fmt(lat['max'])} | {t['truncated_pairs']} |",
        "",
        "Latency: one query's candidates scored (client call, all its requests), "
        f"{report['concurrency']} queries in flight.",
        "",
        "## Published figures",
        "",
        report["published"]["statement"],
    ]
    if report["published"]["matched"]:
        p = report["published"]
        lines += [
            "",
            "| nDCG@10 | first stage | reranked |",
            "|---|---|---|",
            f"| model card, {p['benchmark']} {p['card_set']} | {p['published_first_stage_ndcg10']} "
            f"({p['published_first_stage']}) | {p['published_ndcg10']} |",
            f"| measured here, {p['dataset']} | {p['measured_first_stage_ndcg10']} ({report['first_stage']}) "
            f"| {p['measured_ndcg10']} |",
            f"| model card, {p['benchmark']} average | {p['published_first_stage_average']} | "
            f"{p['published_average']} |",
            "",
            f"Source: {p['source']}.",
        ]
    lines += ["", "## Input problems (counted, not fatal)", ""]
    issues = report["issues"]
    lines += [
        f"- {k}: {v['count']}{' (e.g. ' + ', '.join(v['examples']) + ')' if v['examples'] else ''} - {v['meaning']}"
        for k, v in issues.items()
    ] or ["none"]
    return "\n".join(lines) + "\n"


def plot_delta(path: Path, per_query: Dict[str, Dict[str, Dict[str, float]]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    deltas: List[float] = sorted(row["reranked"][NDCG] - row["first_stage"][NDCG] for row in per_query.values())
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = ["#c0392b" if d < 0 else "#27ae60" for d in deltas]
    ax.bar(range(len(deltas)), deltas, color=colors, width=1.0)
    ax.axhline(0, color="black", linewidth=0.8)
    better, worse = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    ax.set_title(
        f"{title}: per-query nDCG@10 change ({better} better, {worse} worse, {len(deltas) - better - worse} same)"
    )
    ax.set_xlabel("queries (sorted by change)")
    ax.set_ylabel("nDCG@10 reranked - first stage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(
    out: Path, report: dict, first_run: Dict[str, Dict[str, float]], reranked_run: Dict[str, Dict[str, float]]
) -> Dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "png": out / "ndcg_delta.png",
        "reranked_run": out / "reranked.trec",
        "first_stage_run": out / "first_stage.trec",
    }
    report["files"] = {k: str(v) for k, v in files.items()}
    write_run(files["reranked_run"], reranked_run, "bge-reranker-v2-m3")
    write_run(files["first_stage_run"], first_run, report["first_stage"].replace(" ", "_"))
    plot_delta(files["png"], report["per_query"], report["dataset"]["name"])
    files["markdown"].write_text(markdown(report), encoding="utf-8")
    files["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report["files"]
