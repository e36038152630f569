"""nDCG@10, MRR@10 and Recall@k with pytrec_eval (trec_eval's own C code), per query and overall.

- nDCG@10: trec_eval `ndcg_cut.10` (linear gain, log2 discount), as BEIR and MTEB report it.
- MRR@10: trec_eval's `recip_rank` has no cut-off, so it runs on each query's top 10 in
  trec_eval's own order (score descending, ties by doc id descending): the MS MARCO definition.
- Recall@k: `recall.k`.
Every query in qrels counts (see dataset.py for which those are): one whose rows are all
relevance 0 scores 0, and so does one the run has nothing for (trec_eval -c), so a first stage
that drops queries cannot look better for it. BEIR's `EvaluateRetrieval.evaluate` averages over
the queries pytrec_eval returns, i.e. the qrels queries present in the results dict: the same
number whenever the results hold every query, as BEIR's retrievers and MTEB's cross-encoder
search (`results = {qid: {} for qid in queries["id"]}`) produce them.

Identical ids: a document whose id equals its query's id is removed from the run before
scoring, by default, as BEIR does (beir 2.2.0 beir/retrieval/evaluation.py, `evaluate(...,
ignore_identical_ids=True)`: `if qid == pid: results[qid].pop(pid)`) and as MTEB does for the
tasks that set `ignore_identical_ids` (ArguAna, Quora, FiQA2018, MSMARCO, FEVER, the C-MTEB
retrieval sets, ...). The run files written keep them, as BEIR's results do, so BEIR's
`evaluate` on them gives these numbers.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import pytrec_eval

from .first_stage import trec_order

Run = Dict[str, Dict[str, float]]
NDCG, MRR = "nDCG@10", "MRR@10"


def names(recall_at: Sequence[int]) -> List[str]:
    return [NDCG, MRR] + [f"Recall@{k}" for k in recall_at]


def identical_ids(run: Run) -> List[str]:
    """`qid/doc id` for every candidate whose id is its query's."""
    return [f"{qid}/{qid}" for qid, docs in run.items() if qid in docs]


def without_identical_ids(run: Run) -> Run:
    """A copy of `run` without any document whose id is its query's (BEIR's default)."""
    return {qid: {did: s for did, s in docs.items() if did != qid} for qid, docs in run.items()}


def evaluate(
    qrels: Dict[str, Dict[str, int]], run: Run, recall_at: Sequence[int], ignore_identical_ids: bool = True
) -> Dict[str, Dict[str, float]]:
    """{query id: {metric: value}} for every query in qrels."""
    if ignore_identical_ids:
        run = without_identical_ids(run)
    measures = {"ndcg_cut.10"} | {f"recall.{k}" for k in recall_at}
    present = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(present) if present else {}
    top10 = {qid: dict(trec_order(docs)[:10]) for qid, docs in present.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10) if top10 else {}
    out = {}
    for qid in qrels:
        got = full.get(qid, {})
        row = {NDCG: got.get("ndcg_cut_10", 0.0), MRR: rr.get(qid, {}).get("recip_rank", 0.0)}
        for k in recall_at:
            row[f"Recall@{k}"] = got.get(f"recall_{k}", 0.0)
        out[qid] = row
    return out


def mean(per_query: Dict[str, Dict[str, float]], metric_names: Sequence[str]) -> Dict[str, float]:
    n = len(per_query)
    return {m: (sum(row[m] for row in per_query.values()) / n if n else 0.0) for m in metric_names}
