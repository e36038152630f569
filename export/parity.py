"""The export's parity gates: each graph the export produces is scored on the held-out
certificate (export/certificate.py) and compared with fp32 PyTorch by the same rules the live
verifier uses (reranker_client.certificate.compare). An export whose gate fails writes no
repository.

On top of the certificate's checks (max |d logit| and |d score|, NaN/Inf, top-10 set and order
and Kendall tau on a 100-passage list, per-language worst case) the gate checks padding
invariance: a few short pairs scored alone vs inside the padded batches.

Batch composition (`Compositions`): a precision whose row's result depends on its batch-mates
(dynamic int8: ONNX Runtime's DynamicQuantizeLinear takes ONE activation scale per tensor, i.e.
per batch, padding positions included) is certified on the worst of several compositions of the
same rows, not on the gate's batches alone: what the server forms (the client's length-sorted
chunks of the class batch, padded by the tokenizer's bucket rule, run whole by the dynamic batcher
and the onnxruntime backend or in the class model's own routing.batch_parts splits), each row
alone, and a full class batch at the widest bucket where the longest rows share a scale with the
rest (the widest activation range a row can be quantized with). fp32 and fp16 have no per-batch
scale (a row's result differs with its batch only by float summation order, which the padding
check bounds), so they keep the one composition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from common import calibration_texts
from common.serving_code import routing_module
from export import certificate
from export.onnx_export import INPUT_NAMES, OUTPUT_NAMES
from export.settings import gate_batch
from reranker_client.certificate import Report, compare, fixture_rows, pad_batches, score_rows

PADDING_PAIRS = 6
# Rows of a `mixed` batch taken by the longest certificate rows (the rest: every row in turn).
MIXED_BALLAST_FRACTION = 1 / 16


@dataclass(frozen=True)
class Compositions:
    """How the server may batch rows, for a precision whose rows depend on their batch-mates."""

    class_batch: Callable[[int], int]  # rows per class batch at a padded length (the class model's max_batch_size)
    split_cost: str | None = None  # the class model's split_cost parameter (None: it never splits)


@dataclass
class ParityResult:
    precision: str
    artifact: str  # what was run: which graph, on which runtime
    served: str  # how this artifact relates to what Triton serves (see pipeline.served_artifacts)
    thresholds: dict
    pairs: int
    truncated_pairs: int
    token_lengths: dict
    max_abs_logit: float
    max_abs_score: float
    padding_max_abs_logit: float
    top10_same_set: bool
    top10_order_ok: bool
    kendall_tau: float
    non_finite: int
    worst_pairs: list
    per_language: dict
    failures: list[str] = field(default_factory=list)
    # Per batch composition scored: its numbers, and which one the gate's result above comes from.
    compositions: dict = field(default_factory=dict)
    worst_composition: str = "gate"

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def torch_runner(model):
    import torch

    model.eval()  # dropout off, whatever touched the model before

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
            ).logits
        return logits.float().numpy().reshape(-1)

    return run


def onnx_runner(session):
    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logit, _ = session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, (input_ids, attention_mask))))
        return logit.reshape(-1)

    return run


def calibration_feeds(pair_tokenizer, size: int = 8) -> list[dict[str, np.ndarray]]:
    """Padded batches of the calibration texts (never the certificate's): they choose what the
    fp16 conversion and the TensorRT build keep in fp32."""
    texts = calibration_texts.pairs()
    pairs = []
    for i, (query, passage) in enumerate(texts):
        q, p = pair_tokenizer.tokenizer.encode_batch([query, passage], add_special_tokens=False)
        pairs.append(pair_tokenizer.join(i, q.ids, p.ids))
    order = np.argsort([-len(ids) for ids, _ in pairs], kind="stable")
    feeds = []
    for start in range(0, len(order), size):
        batch = pair_tokenizer.pad([pairs[i] for i in order[start : start + size]])
        feeds.append(dict(zip(INPUT_NAMES, (batch.input_ids, batch.attention_mask))))
    return feeds


def served_scores(run, rows, buckets, pad_id, compositions: Compositions, split: bool) -> np.ndarray:
    """Rows as the served path batches them: the client's length-sorted chunks of at most a class
    batch, each padded to the bucket of its longest row (the tokenizer's rule), run whole (the
    dynamic batcher merges same-shape requests; the onnxruntime backend never splits) or, with
    `split`, in the runs the Python class model cuts it into (its own routing.batch_parts)."""
    routing = routing_module()
    cost = routing.parse_split_cost(compositions.split_cost)
    out = np.empty(len(rows), dtype=np.float64)
    for chunk, ids, mask in pad_batches(rows, buckets, pad_id, compositions.class_batch):
        where = np.asarray(chunk)
        parts = routing.batch_parts(mask, list(buckets), cost) if split else [(None, ids.shape[1])]
        for part_rows, width in parts:
            if part_rows is None:
                out[where] = np.asarray(run(ids, mask), dtype=np.float64).reshape(-1)
            else:
                part_ids = routing.cut(ids, part_rows, width, pad_id)
                part_mask = routing.cut(mask, part_rows, width, 0)
                out[where[part_rows]] = np.asarray(run(part_ids, part_mask), dtype=np.float64).reshape(-1)
    return out


def mixed_scores(run, rows, buckets, pad_id, compositions: Compositions) -> np.ndarray:
    """Every row inside a full class batch padded to the widest bucket of the certificate, beside
    its longest rows: the largest activation range (padding included) a row's per-batch scale can
    be stretched to by traffic it shares a batch with."""
    width = next(b for b in buckets if b >= max(len(r) for r in rows))
    batch = max(2, compositions.class_batch(width))
    ballast = list(np.argsort([-len(r) for r in rows], kind="stable")[: max(1, int(batch * MIXED_BALLAST_FRACTION))])
    others = [i for i in range(len(rows)) if i not in set(ballast)]
    take = batch - len(ballast)
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, max(1, len(others)), take):
        members = ballast + others[start : start + take]
        ids = np.full((len(members), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(members), width), dtype=np.int64)
        for r, i in enumerate(members):
            ids[r, : len(rows[i])] = rows[i]
            mask[r, : len(rows[i])] = 1
        out[members] = np.asarray(run(ids, mask), dtype=np.float64).reshape(-1)
    return out


def composition_scores(run, fixture: dict, compositions: Compositions | None) -> dict[str, np.ndarray]:
    """Logits of every certificate row under each batch composition: `gate` always (the export's
    padded batches of gate_batch rows), the others only for a batch-dependent precision."""
    rows = fixture_rows(fixture)
    buckets, pad_id = fixture["buckets"], fixture["pad_id"]
    scored = {"gate": score_rows(run, rows, buckets, pad_id, gate_batch)}
    if compositions is None:
        return scored
    scored["served"] = served_scores(run, rows, buckets, pad_id, compositions, split=False)
    if compositions.split_cost:
        scored["served_split"] = served_scores(run, rows, buckets, pad_id, compositions, split=True)
    scored["alone"] = np.array([certificate.score_alone(run, ids) for ids in rows])
    scored["mixed"] = mixed_scores(run, rows, buckets, pad_id, compositions)
    return scored


def _severity(report: Report) -> tuple:
    return (not report.passed, report.max_abs_score, report.max_abs_logit)


def run_gate(
    precision: str,
    fixture: dict,
    candidate_run,
    artifact: str = "",
    served: str = "",
    compositions: Compositions | None = None,
) -> ParityResult:
    """The certificate's checks on the candidate's logits; with `compositions` (a batch-dependent
    precision), on each composition's logits, and the result is the worst composition's."""
    rows = fixture_rows(fixture)
    n = len(fixture["pairs"])
    scores = composition_scores(candidate_run, fixture, compositions)
    reports = {name: compare(fixture, s[:n].tolist(), s[n:].tolist(), precision) for name, s in scores.items()}
    worst = max(reports, key=lambda name: _severity(reports[name]))
    report = reports[worst]
    scored = scores["gate"]

    # Padding invariance: the shortest pairs alone (no padding) vs inside the padded batches.
    shortest = np.argsort([len(ids) for ids in rows], kind="stable")[:PADDING_PAIRS]
    alone = (
        scores["alone"][shortest]
        if "alone" in scores
        else np.array([certificate.score_alone(candidate_run, rows[i]) for i in shortest])
    )
    d_padding = float(np.max(np.abs(alone - scored[shortest])))

    lengths = [p["tokens"] for p in fixture["pairs"]]
    result = ParityResult(
        **asdict(report),  # the certificate's checks, as the live verifier reports them (copies)
        artifact=artifact,
        served=served,
        truncated_pairs=sum(p["truncated"] for p in fixture["pairs"]),
        token_lengths={"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
        padding_max_abs_logit=d_padding,
        compositions={
            name: {
                "max_abs_logit": r.max_abs_logit,
                "max_abs_score": r.max_abs_score,
                "kendall_tau": r.kendall_tau,
                "passed": r.passed,
            }
            for name, r in reports.items()
        },
        worst_composition=worst,
    )
    if len(reports) > 1:
        # Name the composition in each failure: the refusal says which batching missed the bound.
        result.failures = [f"{f} (batch composition `{worst}`)" for f in result.failures]
    bound = report.thresholds["max_abs_logit"]
    if not report.non_finite and not d_padding <= bound:
        result.failures.append(f"padding changes logits by {d_padding:.3g} > {bound:.3g}")
    return result
