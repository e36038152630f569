"""The model card's figures for bge-reranker-v2-m3, per set, and whether a dataset is one of them.

Source: FlagEmbedding research/llm_reranker/README.md, "Evaluation" (the card links it), whose
tables are the images research/llm_reranker/evaluation/{BEIR-bge-en-v1.5,
CMTEB-retrieval-bge-zh-v1.5,miracl-bge-m3}.png (FlagOpen/FlagEmbedding commit 7ed43d67,
images unchanged since ed54c410). Each table is nDCG@10 of one first stage (its first row,
inference length 512+512) and of the rerankers that rerank its top 100 at length 1024:

- BEIR, the top 100 of bge-en-v1.5 large: 15 sets, average 55.36 (first stage 54.31);
- C-MTEB retrieval, the top 100 of bge-zh-v1.5 large: 8 sets, average 71.82 (70.46);
- MIRACL, the top 100 of bge-m3: 18 languages, average 72.84 (67.91).

A dataset is matched to a set by its exact name (folder or --dataset-name): a BEIR folder
name (`scifact`, `beir-fiqa`, `webis-touche2020`), an MTEB C-MTEB task name (`T2Retrieval`),
`miracl-<language>`. Anything else - MTEB's `MIRACLReranking` (another candidate set), a
BEIR set the card's table leaves out (`bioasq`, `robust04`) - has no published figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

PUBLISHED_DEPTH = 100
PUBLISHED_MAX_LENGTH = 1024
SOURCE = "FlagEmbedding research/llm_reranker/README.md (Evaluation) and research/llm_reranker/evaluation/*.png"


@dataclass(frozen=True)
class Benchmark:
    name: str
    average: float  # the reranker's nDCG@10 average over `sets`, percent
    first_stage: str  # whose top 100 the card reranks
    first_stage_average: float
    sets: Dict[str, Tuple[float, float]]  # the table's set name -> (reranker, first stage)
    split: str
    table: str  # the image the figures are read from

    def split_of(self, card_set: str) -> str:
        return "dev" if (self.name, card_set) == ("BEIR", "msmarco") else self.split


BEIR = Benchmark(
    "BEIR",
    55.36,
    "bge-en-v1.5 large",
    54.31,
    {
        "trec-covid": (83.39, 74.89),
        "quora": (89.13, 89.06),
        "dbpedia": (48.15, 44.16),
        "scidocs": (18.25, 22.62),
        "fever": (90.15, 87.17),
        "nq": (69.37, 55.04),
        "touche": (33.22, 25.08),
        "arguana": (37.7, 63.54),
        "msmarco": (47.79, 42.48),
        "fiqa": (44.51, 44.97),
        "climate-fever": (37.99, 36.49),
        "scifact": (73.08, 74.64),
        "nfcorpus": (34.85, 38.12),
        "hotpotqa": (84.51, 74.11),
        "cqadupstack": (38.24, 42.23),
    },
    "test",
    "BEIR-bge-en-v1.5.png",
)
CMTEB = Benchmark(
    "C-MTEB retrieval",
    71.82,
    "bge-zh-v1.5 large",
    70.46,
    {
        "T2Retrieval": (84.57, 83.99),
        "MMarcoRetrieval": (83.85, 79.23),
        "DuRetrieval": (89.6, 86.31),
        "CovidRetrieval": (89.38, 73.4),
        "CmedqaRetrieval": (38.77, 42.57),
        "EcomRetrieval": (63.04, 65.32),
        "MedicalRetrieval": (59.48, 59.55),
        "VideoRetrieval": (65.89, 73.31),
    },
    "dev",
    "CMTEB-retrieval-bge-zh-v1.5.png",
)
MIRACL = Benchmark(
    "MIRACL",
    72.84,
    "bge-m3",
    67.91,
    {
        "ar": (81.7, 78.4),
        "bn": (84.63, 80.0),
        "en": (63.45, 59.6),
        "es": (63.71, 55.5),
        "fa": (62.49, 57.7),
        "fi": (82.41, 78.6),
        "fr": (63.26, 57.8),
        "hi": (68.25, 59.3),
        "id": (62.71, 56.0),
        "ja": (79.96, 72.8),
        "ko": (73.79, 69.9),
        "ru": (76.93, 70.1),
        "sw": (82.27, 78.6),
        "te": (89.36, 86.2),
        "th": (85.3, 82.6),
        "zh": (64.2, 61.7),
        "de": (62.64, 56.8),
        "yo": (64.03, 60.7),
    },
    "dev",
    "miracl-bge-m3.png",
)
BENCHMARKS = (BEIR, CMTEB, MIRACL)

# Other names the same BEIR set goes by: BEIR's own folder names, where they differ from the table's.
BEIR_ALIASES = {
    "dbpedia-entity": "dbpedia",
    "webis-touche2020": "touche",
    "touche2020": "touche",
    "trec_covid": "trec-covid",
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _names() -> Dict[str, Tuple[Benchmark, str]]:
    """Every accepted spelling, normalised, -> (benchmark, the table's set name)."""
    out: Dict[str, Tuple[Benchmark, str]] = {}
    for card_set in BEIR.sets:
        for spelling in (card_set, f"beir-{card_set}"):
            out[_norm(spelling)] = (BEIR, card_set)
    for alias, card_set in BEIR_ALIASES.items():
        for spelling in (alias, f"beir-{alias}"):
            out[_norm(spelling)] = (BEIR, card_set)
    for card_set in CMTEB.sets:
        for spelling in (card_set, f"cmteb-{card_set}"):
            out[_norm(spelling)] = (CMTEB, card_set)
    for language in MIRACL.sets:
        out[_norm(f"miracl-{language}")] = (MIRACL, language)
    return out


NAMES = _names()


def match(name: str) -> Optional[Tuple[Benchmark, str]]:
    """(benchmark, the card's set name) for a dataset named exactly as one of the card's sets
    (`miracl-de`, `scifact`, `beir-fiqa`, `T2Retrieval`), else None. Case, `-`, `_` and `/` do
    not matter; nothing else is stripped (`MIRACLReranking`, `my-scifact-copy`: no match)."""
    return NAMES.get(_norm(name))


def compare(
    name: str,
    measured_ndcg10: float,
    first_stage_ndcg10: float,
    first_stage: str,
    depth: int,
    max_length: Optional[int],
    split: Optional[str] = None,
) -> dict:
    """The side-by-side entry of a report: the card's figure for this set and for its first
    stage, the measured ones, and every condition that differs from the card's, in plain words."""
    found = match(name)
    if found is None:
        return {
            "matched": False,
            "dataset": name,
            "statement": (
                f"No published figure for dataset '{name}': the model card's tables ({SOURCE}) cover the "
                + "; ".join(f"{b.name} sets {', '.join(b.sets)}" for b in (BEIR, CMTEB))
                + f"; MIRACL languages {', '.join(MIRACL.sets)} (as miracl-<language>). Name the folder after "
                f"its set (e.g. miracl-de, scifact) or pass --dataset-name to compare."
            ),
        }
    bench, card_set = found
    published, published_first = bench.sets[card_set]
    differs: List[str] = []
    if depth != PUBLISHED_DEPTH:
        differs.append(f"depth {depth} reranked, the card reranks the top {PUBLISHED_DEPTH}")
    if max_length is not None and max_length != PUBLISHED_MAX_LENGTH:
        differs.append(f"the server truncates at max_length {max_length}, the card used {PUBLISHED_MAX_LENGTH}")
    if first_stage == "bm25":
        differs.append(f"first stage is BM25 here, the card's is {bench.first_stage} (top 100)")
    else:
        differs.append(f"first stage is {first_stage}: comparable only if it is {bench.first_stage} (top 100)")
    card_split = bench.split_of(card_set)
    if split is not None and split != card_split:
        differs.append(f"split {split}, the card's {bench.name} figures are on {card_split}")
    return {
        "matched": True,
        "dataset": name,
        "benchmark": bench.name,
        "card_set": card_set,
        "published_ndcg10": published,
        "published_first_stage": bench.first_stage,
        "published_first_stage_ndcg10": published_first,
        "published_average": bench.average,
        "published_first_stage_average": bench.first_stage_average,
        "source": f"{SOURCE}: {bench.table}",
        "measured_ndcg10": round(100 * measured_ndcg10, 2),
        "measured_first_stage_ndcg10": round(100 * first_stage_ndcg10, 2),
        "conditions_that_differ": differs,
        "statement": (
            f"{bench.name} {card_set}: the card publishes {published} nDCG@10 reranking the top 100 of "
            f"{bench.first_stage} ({published_first}); measured {100 * measured_ndcg10:.2f} reranking "
            f"{first_stage} ({100 * first_stage_ndcg10:.2f}) on '{name}'. "
            + ("Differences: " + "; ".join(differs) + "." if differs else "Same conditions as the card.")
        ),
    }
