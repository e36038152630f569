"""The parity gate: ONNX Runtime vs PyTorch fp32 on the same tokens. An export that fails it
does not produce a repository.

Checks (thresholds per precision below): max |d logit| and |d score| over multilingual pairs
of mixed length (some truncated) batched together; no NaN/Inf; the same top-10 on a
100-passage list (swaps allowed only between near-ties); padding invariance (a pair scored
alone vs padded inside a longer batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from export import calibration_texts


@dataclass(frozen=True)
class Thresholds:
    max_abs_logit: float
    max_abs_score: float


THRESHOLDS = {
    "fp32": Thresholds(max_abs_logit=1e-4, max_abs_score=1e-4),
    "fp16": Thresholds(max_abs_logit=0.1, max_abs_score=1e-2),
}
TOP_K = 10
BATCH = 16


@dataclass
class ParityResult:
    precision: str
    thresholds: dict
    pairs: int
    truncated_pairs: int
    token_lengths: dict
    max_abs_logit: float
    max_abs_score: float
    padding_max_abs_logit: float
    top10_same_set: bool
    top10_order_ok: bool
    non_finite: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def batches_by_length(pair_tokenizer, pairs: list[tuple[list[int], bool]], size: int):
    """Sort by length and pad each chunk to its bucket, as the server does; yields (rows, batch)."""
    order = np.argsort([-len(ids) for ids, _ in pairs], kind="stable")
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        yield rows, pair_tokenizer.pad([pairs[i] for i in rows])


def score_all(run, pair_tokenizer, pairs, size: int = BATCH) -> np.ndarray:
    """Logits of all pairs in input order, batched by length."""
    out = np.empty(len(pairs), dtype=np.float64)
    for rows, batch in batches_by_length(pair_tokenizer, pairs, size):
        out[rows] = run(batch.input_ids, batch.attention_mask)
    return out


def torch_runner(model):
    import torch

    model.eval()  # dropout off, whatever touched the model before

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(input_ids),
                           attention_mask=torch.from_numpy(attention_mask)).logits
        return logits.float().numpy().reshape(-1)

    return run


class CachedRunner:
    """Memoises a runner by its exact inputs. Every gate feeds the reference the same batches, so
    PyTorch runs once per export; after `release()` the model can be freed (2.3 GB for the real
    model) and later gates read the cache."""

    def __init__(self, run) -> None:
        self._run = run
        self._cache: dict[tuple, np.ndarray] = {}

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        key = (input_ids.shape, input_ids.tobytes(), attention_mask.tobytes())
        if key not in self._cache:
            if self._run is None:
                raise RuntimeError("reference released: this batch was never scored before")
            self._cache[key] = self._run(input_ids, attention_mask)
        return self._cache[key]

    def release(self) -> None:
        self._run = None


def onnx_runner(session):
    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logit, _ = session.run(["logit", "score"],
                               {"input_ids": input_ids, "attention_mask": attention_mask})
        return logit.reshape(-1)

    return run


def calibration_pairs(pair_tokenizer) -> list[tuple[list[int], bool]]:
    texts = calibration_texts.pairs()
    return [pair_tokenizer.join(i, *_ids(pair_tokenizer, q, p)) for i, (q, p) in enumerate(texts)]


def _ids(pair_tokenizer, query: str, passage: str) -> tuple[list[int], list[int]]:
    q, p = pair_tokenizer.tokenizer.encode_batch([query, passage], add_special_tokens=False)
    return q.ids, p.ids


def run_gate(precision: str, reference_run, candidate_run, pair_tokenizer) -> ParityResult:
    limits = THRESHOLDS[precision]
    pairs = calibration_pairs(pair_tokenizer)
    reference = score_all(reference_run, pair_tokenizer, pairs)
    candidate = score_all(candidate_run, pair_tokenizer, pairs)
    non_finite = int((~np.isfinite(candidate)).sum())
    d_logit = float(np.max(np.abs(candidate - reference)))
    d_score = float(np.max(np.abs(sigmoid(candidate) - sigmoid(reference))))

    # Padding invariance: each of a few short pairs alone (no padding) vs inside the padded
    # mixed-length batches above.
    shortest = np.argsort([len(ids) for ids, _ in pairs])[:6]
    alone = np.array([candidate_run(*_single(pair_tokenizer, pairs[i]))[0] for i in shortest])
    d_padding = float(np.max(np.abs(alone - candidate[shortest])))

    # Top-10 of one query over 100 passages.
    query, passages = calibration_texts.hundred_passages()
    hundred = [pair_tokenizer.join(i, *_ids(pair_tokenizer, query, p)) for i, p in enumerate(passages)]
    ref100 = score_all(reference_run, pair_tokenizer, hundred)
    cand100 = score_all(candidate_run, pair_tokenizer, hundred)
    error100 = float(np.max(np.abs(cand100 - ref100)))
    d_logit = max(d_logit, error100)
    same_set, order_ok = _top_k_agreement(ref100, cand100, TOP_K, tie=2 * error100)

    lengths = [len(ids) for ids, _ in pairs]
    result = ParityResult(
        precision=precision, thresholds=asdict(limits), pairs=len(pairs) + len(hundred),
        truncated_pairs=sum(t for _, t in pairs), non_finite=non_finite,
        token_lengths={"min": min(lengths), "max": max(lengths), "mean": float(np.mean(lengths))},
        max_abs_logit=d_logit, max_abs_score=d_score, padding_max_abs_logit=d_padding,
        top10_same_set=same_set, top10_order_ok=order_ok,
    )
    if non_finite:
        result.failures.append(f"{non_finite} NaN/Inf outputs")
    if not d_logit <= limits.max_abs_logit:
        result.failures.append(f"max |d logit| {d_logit:.3g} > {limits.max_abs_logit}")
    if not d_score <= limits.max_abs_score:
        result.failures.append(f"max |d score| {d_score:.3g} > {limits.max_abs_score}")
    if not d_padding <= limits.max_abs_logit:
        result.failures.append(f"padding changes logits by {d_padding:.3g} > {limits.max_abs_logit}")
    if not same_set:
        result.failures.append("top-10 set differs from PyTorch on the 100-passage list")
    elif not order_ok:
        result.failures.append("top-10 order differs beyond near-ties")
    return result


def _single(pair_tokenizer, pair) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray([pair[0]], dtype=np.int64)
    return ids, np.ones_like(ids)


def _top_k_agreement(reference: np.ndarray, candidate: np.ndarray, k: int, tie: float
                     ) -> tuple[bool, bool]:
    """Same top-k set; order may differ only where reference scores are within `tie`."""
    ref_top = list(np.argsort(-reference, kind="stable")[:k])
    cand_top = list(np.argsort(-candidate, kind="stable")[:k])
    kth = reference[ref_top[-1]]
    # A set difference is acceptable only if the swapped-in passage ties with the k-th.
    extra = set(cand_top) - set(ref_top)
    same_set = all(abs(reference[i] - kth) <= tie for i in extra)
    order_ok = all(reference[a] >= reference[b] - tie for a, b in zip(cand_top, cand_top[1:]))
    return same_set, order_ok
