"""The export's parity gates: each graph the export produces is scored on the held-out
certificate (export/certificate.py) and compared with fp32 PyTorch by the same rules the live
verifier uses (reranker_client.certificate.compare). An export whose gate fails writes no
repository.

On top of the certificate's checks (max |d logit| and |d score|, NaN/Inf, top-10 set and order
and Kendall tau on a 100-passage list, per-language worst case) the gate checks padding
invariance: a few short pairs scored alone vs inside the padded batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from common import calibration_texts
from export import certificate
from export.onnx_export import INPUT_NAMES, OUTPUT_NAMES
from export.settings import gate_batch
from reranker_client.certificate import compare, fixture_rows, score_rows

PADDING_PAIRS = 6


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


def run_gate(precision: str, fixture: dict, candidate_run, artifact: str = "", served: str = "") -> ParityResult:
    rows = fixture_rows(fixture)
    scored = score_rows(candidate_run, rows, fixture["buckets"], fixture["pad_id"], gate_batch)
    n = len(fixture["pairs"])
    report = compare(fixture, scored[:n].tolist(), scored[n:].tolist(), precision)

    # Padding invariance: the shortest pairs alone (no padding) vs inside the padded batches.
    shortest = np.argsort([len(ids) for ids in rows], kind="stable")[:PADDING_PAIRS]
    alone = np.array([certificate.score_alone(candidate_run, rows[i]) for i in shortest])
    d_padding = float(np.max(np.abs(alone - scored[shortest])))

    lengths = [p["tokens"] for p in fixture["pairs"]]
    result = ParityResult(
        **asdict(report),  # the certificate's checks, as the live verifier reports them (copies)
        artifact=artifact,
        served=served,
        truncated_pairs=sum(p["truncated"] for p in fixture["pairs"]),
        token_lengths={"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
        padding_max_abs_logit=d_padding,
    )
    bound = report.thresholds["max_abs_logit"]
    if not report.non_finite and not d_padding <= bound:
        result.failures.append(f"padding changes logits by {d_padding:.3g} > {bound:.3g}")
    return result
