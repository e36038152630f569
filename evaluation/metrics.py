"""nDCG@10, MRR@10 and Recall@k with pytrec_eval (trec_eval's own C code), per query and overall.

- nDCG@10: trec_eval `ndcg_cut.10` (linear gain, log2 discount), as BEIR and MTEB report it.
- MRR@10: trec_eval's `recip_rank` has no cut-off, so it runs on each query's top 10 in
  trec_eval's own order (score descending, ties by doc id descending): the MS MARCO definition.
- Recall@k: `recall.k`.
Every judged query counts: one the run has nothing for scores 0 (trec_eval -c), so a first
stage that drops queries cannot look better for it.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import pytrec_eval

from .first_stage import trec_order

Run = Dict[str, Dict[str, float]]
NDCG, MRR = "nDCG@10", "MRR@10"


def names(recall_at: Sequence[int]) -> List[str]:
    return [NDCG, MRR] + [f"Recall@{k}" for k in recall_at]


def evaluate(qrels: Dict[str, Dict[str, int]], run: Run, recall_at: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """{query id: {metric: value}} for every query in qrels."""
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
