"""The parity certificate: a fixture that travels inside every exported repository, and the
comparison that decides whether a served model still computes what fp32 PyTorch computed.

`python -m export` writes `certificate.json` at the repository root: held-out multilingual
pairs (never used to choose fp16 ranges), the fp32 PyTorch logits of each pair scored alone,
token counts, the model's file hashes and the thresholds of each precision. Anything that
can produce logits for those texts can be certified with `compare`: the exporter's ONNX
Runtime graphs, a TensorRT plan right after it is built, or the live `rerank` ensemble
(`python -m reranker_client.verify`). Only numpy here: the verifier runs wherever the
client is installed (a Helm test pod, a laptop), without torch or the export code.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

# A certificate.json document as json.load returns it (its schema is the exporter's; the keys
# read here are documented where they are used).
Fixture = Dict[str, Any]
Logits = Union[Sequence[float], npt.NDArray[np.float64]]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
# run(input_ids, attention_mask) -> logits (anything np.asarray accepts)
Runner = Callable[[IntArray, IntArray], npt.ArrayLike]


class LanguageStats(TypedDict):
    pairs: int
    max_abs_logit: float
    max_abs_score: float


class WorstPair(TypedDict):
    id: str
    language: str
    tokens: int
    reference: float
    served: float
    abs_logit: float


FORMAT = "bge-reranker-certificate/1"
FILENAME = "certificate.json"  # at the repository root: Triton treats every folder there as a model
TOP_K = 10
WORST_SHOWN = 5


class FixtureError(RuntimeError):
    """The certificate file is missing or unreadable; the message names the path and the fix."""


@dataclass(frozen=True)
class Thresholds:
    max_abs_logit: float
    max_abs_score: float
    # Two passages may swap places in the top-10 only if PyTorch scored them within this many
    # logits. Fixed per precision, never derived from the measured error: a candidate inside the
    # logit bound can still fail this check on its own (a swap of two passages 1.5x the bound apart).
    tie_logit: float
    min_kendall_tau: float  # over the 100-passage list


@dataclass
class Report:
    precision: str
    thresholds: Dict[str, float]
    pairs: int
    max_abs_logit: float
    max_abs_score: float
    non_finite: int
    top10_same_set: bool
    top10_order_ok: bool
    kendall_tau: float
    per_language: Dict[str, LanguageStats]
    worst_pairs: List[WorstPair]
    failures: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        return (
            f"certificate ({self.precision}): {'PASS' if self.passed else 'FAIL'} over {self.pairs} pairs\n"
            + describe(self.to_dict())
        )


def describe(doc: Dict[str, Any]) -> str:
    """The report's lines after its headline: the numbers, worst languages and pairs, failures."""
    limits = doc["thresholds"]
    lines = [
        f"  max |d logit| {doc['max_abs_logit']:.3g} (bound {limits['max_abs_logit']:.3g}), "
        f"max |d score| {doc['max_abs_score']:.3g} (bound {limits['max_abs_score']:.3g}), "
        f"NaN/Inf {doc['non_finite']}",
        f"  100-passage list: top-{TOP_K} set {'same' if doc['top10_same_set'] else 'DIFFERENT'}, "
        f"order {'ok' if doc['top10_order_ok'] else 'DIFFERENT'}, Kendall tau {doc['kendall_tau']:.4f} "
        f"(min {limits['min_kendall_tau']})",
    ]
    worst_lang = sorted(doc["per_language"].items(), key=lambda kv: -kv[1]["max_abs_logit"])[:3]
    lines.append("  worst languages: " + ", ".join(f"{k} {v['max_abs_logit']:.3g}" for k, v in worst_lang))
    lines.append(
        "  worst pairs: "
        + "; ".join(
            f"{w['id']} ({w['language']}, {w['tokens']} tokens) {w['reference']:.4f} -> {w['served']:.4f}"
            for w in doc["worst_pairs"][:3]
        )
    )
    lines += [f"  FAILED: {f}" for f in doc["failures"]]
    return "\n".join(lines)


def sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))
    return out


def fixture_path(repo_or_file: Path) -> Path:
    path = Path(repo_or_file)
    return path if path.suffix == ".json" else path / FILENAME


def load_fixture(repo_or_file: Path) -> Fixture:
    path = fixture_path(repo_or_file)
    if not path.is_file():
        raise FixtureError(
            f"no certificate at {path}: every exported repository has one at its root "
            f"({FILENAME}); produce it with `make export REPO=<dir>` (python -m export)"
        )
    try:
        fixture = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FixtureError(f"cannot read the certificate {path}: {err}") from err
    if not isinstance(fixture, dict):
        raise FixtureError(f"{path} is not a {FORMAT} certificate (not a JSON object)")
    if fixture.get("format") != FORMAT:
        raise FixtureError(f"{path} is not a {FORMAT} certificate (format={fixture.get('format')!r})")
    return fixture


def thresholds_for(fixture: Fixture, precision: str) -> Thresholds:
    try:
        return Thresholds(**fixture["thresholds"][precision])
    except KeyError:
        raise FixtureError(
            f"the certificate has no thresholds for precision {precision!r}; it has {sorted(fixture['thresholds'])}"
        ) from None


def kendall_tau(a: FloatArray, b: FloatArray) -> float:
    """Kendall's tau-b (ties counted as in scipy.stats.kendalltau); O(n^2), n is 100 here."""
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), k=1)
    da, db = da[upper], db[upper]
    concordant_minus_discordant = float(np.sum(da * db))
    denominator = math.sqrt(float(np.sum(da != 0)) * float(np.sum(db != 0)))
    return concordant_minus_discordant / denominator if denominator else 0.0


def top_k_agreement(reference: FloatArray, candidate: FloatArray, k: int, tie: float) -> Tuple[bool, bool]:
    """(same set, same order): the candidate's top-k may differ from the reference's only by
    passages PyTorch scored within `tie` of each other."""
    ref_top = list(np.argsort(-reference, kind="stable")[:k])
    cand_top = list(np.argsort(-candidate, kind="stable")[:k])
    kth = reference[ref_top[-1]]
    same_set = all(abs(reference[i] - kth) <= tie for i in set(cand_top) - set(ref_top))
    order_ok = all(reference[a] >= reference[b] - tie for a, b in zip(cand_top, cand_top[1:]))
    return same_set, order_ok


def compare(fixture: Fixture, pair_logits: Logits, ranking_logits: Logits, precision: str) -> Report:
    """Served logits (pairs, then the 100-passage list, both in fixture order) vs the references."""
    limits = thresholds_for(fixture, precision)
    pairs = fixture["pairs"]
    ranking = fixture["ranking"]
    reference = np.array([p["logit"] for p in pairs] + list(ranking["logits"]), dtype=np.float64)
    served = np.array(list(pair_logits) + list(ranking_logits), dtype=np.float64)
    if served.shape != reference.shape:
        raise ValueError(
            f"expected {reference.size} logits ({len(pairs)} pairs + {len(ranking['logits'])} "
            f"ranking passages), got {served.size}"
        )
    finite = np.isfinite(served)
    non_finite = int((~finite).sum())
    d_logit = np.where(finite, np.abs(served - reference), np.inf)
    d_score = np.where(finite, np.abs(sigmoid(served) - sigmoid(reference)), np.inf)

    ids = [p["id"] for p in pairs] + [f"ranking-{i}" for i in range(len(ranking["logits"]))]
    languages = [p["language"] for p in pairs] + [fixture["ranking"].get("language", "ranking")] * len(
        ranking["logits"]
    )
    tokens = [p["tokens"] for p in pairs] + list(ranking["tokens"])
    per_language: Dict[str, LanguageStats] = {}
    for i, language in enumerate(languages):
        entry = per_language.setdefault(language, {"pairs": 0, "max_abs_logit": 0.0, "max_abs_score": 0.0})
        entry["pairs"] += 1
        entry["max_abs_logit"] = max(entry["max_abs_logit"], float(d_logit[i]))
        entry["max_abs_score"] = max(entry["max_abs_score"], float(d_score[i]))
    worst: List[WorstPair] = [
        {
            "id": ids[i],
            "language": languages[i],
            "tokens": int(tokens[i]),
            "reference": float(reference[i]),
            "served": float(served[i]),
            "abs_logit": float(d_logit[i]),
        }
        for i in np.argsort(-d_logit, kind="stable")[:WORST_SHOWN]
    ]

    ref_rank = np.array(ranking["logits"], dtype=np.float64)
    cand_rank = np.nan_to_num(served[len(pairs) :], nan=-np.inf)
    same_set, order_ok = top_k_agreement(ref_rank, cand_rank, TOP_K, limits.tie_logit)
    tau = kendall_tau(ref_rank, np.nan_to_num(cand_rank, neginf=-1e30, posinf=1e30))

    report = Report(
        precision=precision,
        thresholds=asdict(limits),
        pairs=int(reference.size),
        max_abs_logit=float(d_logit.max()),
        max_abs_score=float(d_score.max()),
        non_finite=non_finite,
        top10_same_set=same_set,
        top10_order_ok=order_ok,
        kendall_tau=tau,
        per_language=per_language,
        worst_pairs=worst,
    )
    if non_finite:
        # Reported as what it is; the rank checks below say nothing useful about NaN scores.
        report.failures.append(f"{non_finite} NaN/Inf logits (first: {[ids[i] for i in np.flatnonzero(~finite)[:3]]})")
        return report
    worst_names = ", ".join(
        f"{w['id']} ({w['language']}, {w['tokens']} tokens: {w['reference']:.4g} vs {w['served']:.4g})"
        for w in worst[:3]
    )
    if not report.max_abs_logit <= limits.max_abs_logit:
        report.failures.append(
            f"max |d logit| {report.max_abs_logit:.3g} > {limits.max_abs_logit:.3g}; worst pairs: {worst_names}"
        )
    if not report.max_abs_score <= limits.max_abs_score:
        report.failures.append(f"max |d score| {report.max_abs_score:.3g} > {limits.max_abs_score:.3g}")
    if not same_set:
        report.failures.append(
            f"top-{TOP_K} set on the 100-passage list differs from PyTorch beyond ties of {limits.tie_logit:g} logits"
        )
    elif not order_ok:
        report.failures.append(
            f"top-{TOP_K} order on the 100-passage list differs from PyTorch beyond ties of {limits.tie_logit:g} logits"
        )
    if not tau >= limits.min_kendall_tau:
        report.failures.append(f"Kendall tau {tau:.4f} over the 100-passage list < {limits.min_kendall_tau}")
    return report


def pad_batches(
    rows: Sequence[Sequence[int]],
    buckets: Sequence[int],
    pad_id: int,
    max_batch: Callable[[int], int] = lambda length: 16,
) -> Iterator[Tuple[List[int], IntArray, IntArray]]:
    """(row indices, input_ids, attention_mask) as the server forms them: rows sorted by length,
    each batch right-padded to the smallest bucket that holds its longest row, at most
    max_batch(padded length) rows (a TensorRT profile may hold fewer long rows)."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    start = 0
    while start < len(order):
        longest = len(rows[order[start]])
        length = next((b for b in buckets if b >= longest), None)
        if length is None:
            raise ValueError(f"a row of {longest} tokens is longer than the largest bucket {buckets[-1]}")
        chunk = order[start : start + max(1, max_batch(length))]
        ids = np.full((len(chunk), length), pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), length), dtype=np.int64)
        for r, i in enumerate(chunk):
            ids[r, : len(rows[i])] = rows[i]
            mask[r, : len(rows[i])] = 1
        yield chunk, ids, mask
        start += len(chunk)


def score_rows(
    run: Runner,
    rows: Sequence[Sequence[int]],
    buckets: Sequence[int],
    pad_id: int,
    max_batch: Callable[[int], int] = lambda length: 16,
) -> FloatArray:
    """Logits of token-id rows, in input order; run(input_ids, attention_mask) -> logits."""
    out = np.empty(len(rows), dtype=np.float64)
    for chunk, ids, mask in pad_batches(rows, buckets, pad_id, max_batch):
        out[chunk] = np.asarray(run(ids, mask), dtype=np.float64).reshape(-1)
    return out


def fixture_rows(fixture: Fixture) -> List[List[int]]:
    """Token ids of every certificate row in `compare` order: the pairs, then the ranking list."""
    return [p["input_ids"] for p in fixture["pairs"]] + list(fixture["ranking"]["input_ids"])


def certify(
    fixture: Fixture, run: Runner, precision: str, max_batch: Callable[[int], int] = lambda length: 16
) -> Report:
    """Score the fixture's token ids with any runner (ONNX Runtime, a TensorRT plan) and compare:
    the check a built engine passes before it is installed."""
    logits = score_rows(run, fixture_rows(fixture), fixture["buckets"], fixture["pad_id"], max_batch)
    n = len(fixture["pairs"])
    return compare(fixture, logits[:n], logits[n:], precision)


def all_texts(fixture: Fixture) -> List[Tuple[str, str]]:
    """(query, passage) for every pair, then the 100-passage list: the order `compare` expects."""
    ranking = fixture["ranking"]
    return [(p["query"], p["passage"]) for p in fixture["pairs"]] + [
        (ranking["query"], passage) for passage in ranking["passages"]
    ]


def served_precision(fixture: Fixture, override: Optional[str] = None) -> str:
    return override or fixture.get("served", {}).get("precision", "fp32")
