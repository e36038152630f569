"""Bad input that does not stop a run: counted, a few examples kept, reported.

Fatal problems (a missing file, an unreadable line, an unreachable server) raise
`EvalInputError` instead; the CLI turns it into one clear message and exit status 2.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, List

EXAMPLES_KEPT = 5

# What each counted problem means for the numbers, shown next to its count in every report.
MEANINGS = {
    "qrels_doc_not_in_corpus": "judged relevant documents that are not in corpus.jsonl: they still count in the "
    "ideal ranking (no system can retrieve them), so metrics are lower than the set allows",
    "qrels_query_not_in_queries": "qrels rows whose query id is not in queries.jsonl: ignored",
    "queries_without_relevant": "queries whose qrels rows all have relevance 0: counted, scoring 0 on every "
    "metric (BEIR and MTEB count them too; MTEB drops only queries with no qrels row)",
    "duplicate_document_ids": "document ids on more than one line of corpus.jsonl (id and copies shown): the "
    "last copy is read, as BEIR's and MTEB's loaders keep the last; the earlier copies are never scored",
    "identical_ids_removed": "candidates whose document id equals the query id (query/doc shown): removed "
    "before scoring, as BEIR's evaluate(ignore_identical_ids=True) does; --keep-identical-ids keeps them",
    "queries_without_candidates": "judged queries the first stage returned nothing for: they score 0 before and after",
    "candidate_not_in_corpus": "run-file candidates whose document id is not in corpus.jsonl: dropped",
    "run_query_not_judged": "run-file queries without relevance judgements in this split: ignored",
    "empty_documents_in_corpus": "corpus documents whose title and text are empty",
    "empty_candidates": "candidates with empty text: not sent (the server rejects empty text), ranked last",
    "empty_queries": "judged queries with empty text: not reranked, first-stage order kept",
    "documents_cut_to_byte_limit": "candidates longer than the server's per-text byte limit: cut on a character "
    "boundary before sending (the model only reads max_length tokens anyway)",
    "failed_queries": "queries the server refused: NOT reranked, their first-stage order is in the reranked "
    "metrics, and the run exits with status 1",
    "documents_scored_in_part": "window mode: documents over the server's per-passage window limit, scored on "
    "their first windows only (the rest of the document was not read)",
}


class EvalInputError(Exception):
    """A problem that makes the run meaningless: the message says what and where."""


@dataclass
class Issues:
    counts: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)  # reranking threads add

    def add(self, kind: str, example: str = "", n: int = 1) -> None:
        if kind not in MEANINGS:
            raise KeyError(kind)  # every kind must say what it does to the numbers
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + n
            kept = self.examples.setdefault(kind, [])
            if example and len(kept) < EXAMPLES_KEPT:
                kept.append(example)

    def __getitem__(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def to_dict(self) -> dict:
        return {
            kind: {"count": n, "examples": self.examples.get(kind, []), "meaning": MEANINGS[kind]}
            for kind, n in sorted(self.counts.items())
        }

    def lines(self) -> List[str]:
        out = []
        for kind, n in sorted(self.counts.items()):
            shown = ", ".join(self.examples.get(kind, []))
            out.append(f"{kind}: {n}{f' (e.g. {shown})' if shown else ''} - {MEANINGS[kind]}")
        return out
