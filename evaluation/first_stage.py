"""First-stage candidates: a TREC run file, or BM25 over the corpus with `bm25s`.

Candidates are `{query id: [(doc id, score), ...]}` in the order trec_eval ranks them
(score descending, ties by doc id descending), cut to the rerank depth, plus the texts of
exactly those documents. The model card's figures rerank the top 100 of a *dense* first
stage (bge-m3 on MIRACL): to compare with them, pass that run file; BM25 is the baseline a
user can build anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from . import dataset as ds
from .issues import EvalInputError

Candidates = Dict[str, List[Tuple[str, float]]]

BM25_TOKENIZE_CHUNK = 5_000  # documents tokenized at a time; only their token ids are kept

# Words for alphabetic scripts, one token per character for scripts written without spaces
# (CJK ideographs, kana, Hangul syllables, Thai): bm25s's default \w\w+ would make a whole
# Chinese sentence one token and find nothing. Lowercased, no stemming, no stopwords: the
# same for every language, so a multilingual set is handled alike (Pyserini's per-language
# analyzers do better; pass their run file to compare with published BM25 numbers).
_SPACELESS = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_SPACELESS}]|[^\W_{_SPACELESS}]+", re.UNICODE)


def tokens(text: str) -> List[str]:
    return _TOKEN.findall(text.lower())


def trec_order(scored: Dict[str, float]) -> List[Tuple[str, float]]:
    """trec_eval's ranking of a run: score descending, ties broken by doc id descending."""
    return sorted(scored.items(), key=lambda item: (item[1], item[0]), reverse=True)


@dataclass
class FirstStage:
    name: str  # "run:<file>" or "bm25"
    candidates: Candidates  # judged queries only, cut to depth, trec order
    texts: Dict[str, str]  # text of every candidate document


def read_run(path: Path) -> Dict[str, Dict[str, float]]:
    """A TREC run file: `qid Q0 docid rank score tag` per line (the rank column is ignored,
    as trec_eval ignores it: the score orders)."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: no such run file (TREC format: qid Q0 docid rank score tag)")
    run: Dict[str, Dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise EvalInputError(
                    f"{path}:{number}: expected 6 columns 'qid Q0 docid rank score tag', "
                    f"got {len(parts)}: {line.strip()[:80]!r}"
                )
            try:
                score = float(parts[4])
            except ValueError:
                raise EvalInputError(f"{path}:{number}: score {parts[4]!r} is not a number") from None
            docs = run.setdefault(parts[0], {})
            docs[parts[2]] = max(score, docs.get(parts[2], score))  # a repeated doc keeps its best score
    if not run:
        raise EvalInputError(f"{path}: empty run file")
    return run


def from_run(dataset: ds.Dataset, path: Path, depth: int) -> FirstStage:
    run = read_run(path)
    for qid in sorted(set(run) - set(dataset.qrels)):
        dataset.issues.add("run_query_not_judged", qid)
    cut = {qid: trec_order(run[qid])[:depth] for qid in dataset.qrels if qid in run}
    texts = ds.collect_texts(dataset, (did for docs in cut.values() for did, _ in docs))
    candidates: Candidates = {}
    for qid in dataset.qrels:
        kept = []
        for did, score in cut.get(qid, []):
            if did in texts:
                kept.append((did, score))
            else:
                dataset.issues.add("candidate_not_in_corpus", f"{qid}/{did}")
        candidates[qid] = kept
    _count_missing(dataset, candidates)
    return FirstStage(name=f"run:{Path(path).name}", candidates=candidates, texts=texts)


def bm25(dataset: ds.Dataset, depth: int, k1: float = 1.5, b: float = 0.75) -> FirstStage:
    """BM25 (bm25s, Lucene's scoring variant) over the streamed corpus: one pass keeps each
    document's token ids (int32) and byte offset, never its text; the candidates' texts are read
    back by offset afterwards."""
    import bm25s
    from bm25s.tokenization import Tokenized, Tokenizer

    tokenizer = Tokenizer(lower=False, splitter=tokens, stopwords=None)
    doc_ids: List[str] = []
    offsets: List[int] = []
    token_ids: List[np.ndarray] = []
    position: Dict[str, int] = {}  # a repeated id is indexed once, with its last copy (dataset.py)
    for batch in ds.chunks(ds.scan_corpus(dataset), BM25_TOKENIZE_CHUNK):
        ids = tokenizer.tokenize(
            [text for _, text, _ in batch], update_vocab=True, return_as="ids", show_progress=False
        )
        for (did, _, offset), doc_tokens in zip(batch, ids):
            row = np.asarray(doc_tokens, dtype=np.int32)
            if did in position:
                token_ids[position[did]], offsets[position[did]] = row, offset
                continue
            position[did] = len(doc_ids)
            token_ids.append(row)
            doc_ids.append(did)
            offsets.append(offset)
    del position
    if not doc_ids:
        raise EvalInputError(f"{dataset.corpus_path}: the corpus has no documents")
    index = bm25s.BM25(k1=k1, b=b)
    index.index(Tokenized(ids=token_ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
    del token_ids  # the index holds its own sparse matrix

    qids = [qid for qid in dataset.qrels if dataset.queries[qid]]
    candidates: Candidates = {qid: [] for qid in dataset.qrels}
    if qids:
        query_ids = tokenizer.tokenize(
            [dataset.queries[q] for q in qids], update_vocab=False, return_as="ids", show_progress=False
        )
        found, scores = index.retrieve(query_ids, k=min(depth, len(doc_ids)), show_progress=False, n_threads=1)
        for qid, rows, row_scores in zip(qids, found, scores):
            # A zero score shares no term with the query: not retrieved (as in Lucene).
            scored = {doc_ids[int(r)]: float(s) for r, s in zip(rows, row_scores) if s > 0}
            candidates[qid] = trec_order(scored)[:depth]
    where = {did: offsets[i] for i, did in enumerate(doc_ids)}
    texts = ds.read_documents(dataset.corpus_path, {did: where[did] for docs in candidates.values() for did, _ in docs})
    _count_missing(dataset, candidates)
    return FirstStage(name="bm25", candidates=candidates, texts=texts)


def _count_missing(dataset: ds.Dataset, candidates: Candidates) -> None:
    for qid in dataset.qrels:
        if not candidates.get(qid):
            dataset.issues.add("queries_without_candidates", qid)
