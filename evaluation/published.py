"""The model card's figures for bge-reranker-v2-m3, and whether a dataset can be set beside them.

The card publishes averages only (nDCG@10, reranking the top 100 at max_length 1024):
MIRACL 72.84 over its 18 languages (first stage bge-m3 dense, itself 67.91), BEIR 55.36,
C-MTEB retrieval 71.82. A single language or set is one term of an average, so the report
shows the figure beside the measured number and says which conditions differ; it never claims
a per-set match the card does not publish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

PUBLISHED_DEPTH = 100
PUBLISHED_MAX_LENGTH = 1024


@dataclass(frozen=True)
class Published:
    benchmark: str
    ndcg10: float  # percent
    scope: str
    first_stage: str
    first_stage_ndcg10: Optional[float] = None


MIRACL = Published("MIRACL", 72.84, "average over MIRACL's 18 languages (dev)", "bge-m3 dense top 100", 67.91)
BEIR = Published("BEIR", 55.36, "average over the BEIR sets", "top 100 of the card's first stage")
CMTEB = Published(
    "C-MTEB retrieval", 71.82, "average over C-MTEB's 8 retrieval sets", "top 100 of the card's first stage"
)

BEIR_SETS = {
    "msmarco",
    "trec-covid",
    "trec_covid",
    "nfcorpus",
    "nq",
    "hotpotqa",
    "fiqa",
    "arguana",
    "webis-touche2020",
    "touche2020",
    "cqadupstack",
    "quora",
    "dbpedia-entity",
    "scidocs",
    "fever",
    "climate-fever",
    "scifact",
    "bioasq",
    "signal1m",
    "trec-news",
    "robust04",
}
CMTEB_SETS = {
    "t2retrieval",
    "mmarcoretrieval",
    "duretrieval",
    "covidretrieval",
    "cmedqaretrieval",
    "ecomretrieval",
    "medicalretrieval",
    "videoretrieval",
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match(name: str) -> Optional[Published]:
    """The card's benchmark this dataset belongs to, by name (`miracl-de`, `scifact`,
    `beir-fiqa`, `T2Retrieval`), or None."""
    n = _norm(name)
    if n.startswith("miracl"):
        return MIRACL
    stripped = n[4:] if n.startswith("beir") else n
    if stripped in {_norm(s) for s in BEIR_SETS}:
        return BEIR
    if n in CMTEB_SETS or n.replace("cmteb", "") in CMTEB_SETS:
        return CMTEB
    return None


def compare(
    name: str,
    measured_ndcg10: float,
    first_stage_ndcg10: float,
    first_stage: str,
    depth: int,
    max_length: Optional[int],
) -> dict:
    """The side-by-side entry of a report: published figure, measured one, and every
    condition that differs from the card's, in plain words."""
    pub = match(name)
    if pub is None:
        return {
            "matched": False,
            "dataset": name,
            "statement": (
                f"No published figure for dataset '{name}': the model card reports MIRACL "
                f"({MIRACL.ndcg10}), BEIR ({BEIR.ndcg10}) and C-MTEB retrieval ({CMTEB.ndcg10}) "
                f"averages only; name the folder after its set (e.g. miracl-de, scifact) "
                f"or pass --dataset-name to compare."
            ),
        }
    differs: List[str] = [
        f"the card's {pub.ndcg10} is an {pub.scope}; '{name}' is one of its sets, so only "
        f"the average of runs over all of them is comparable"
    ]
    if depth != PUBLISHED_DEPTH:
        differs.append(f"depth {depth} reranked, the card reranks the top {PUBLISHED_DEPTH}")
    if max_length is not None and max_length != PUBLISHED_MAX_LENGTH:
        differs.append(f"the server truncates at max_length {max_length}, the card used {PUBLISHED_MAX_LENGTH}")
    if first_stage == "bm25":
        differs.append(f"first stage is BM25 here, the card's is {pub.first_stage}")
    else:
        differs.append(f"first stage is {first_stage}: comparable only if it is {pub.first_stage}")
    return {
        "matched": True,
        "dataset": name,
        "benchmark": pub.benchmark,
        "published_ndcg10": pub.ndcg10,
        "published_first_stage_ndcg10": pub.first_stage_ndcg10,
        "measured_ndcg10": round(100 * measured_ndcg10, 2),
        "measured_first_stage_ndcg10": round(100 * first_stage_ndcg10, 2),
        "conditions_that_differ": differs,
        "statement": (
            f"{pub.benchmark}: published {pub.ndcg10} nDCG@10 ({pub.scope}); measured "
            f"{100 * measured_ndcg10:.2f} on '{name}'. Differences: " + "; ".join(differs) + "."
        ),
    }
