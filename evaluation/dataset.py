"""A dataset in the BEIR layout, read without holding the corpus twice.

    <dir>/corpus.jsonl       {"_id": ..., "title": ..., "text": ...} per line
    <dir>/queries.jsonl      {"_id": ..., "text": ...} per line
    <dir>/qrels/<split>.tsv  query-id <TAB> corpus-id <TAB> score (header line optional)

This is what `beir`, `ir_datasets` exports and MTEB's BEIR-format datasets contain. Qrels and
the queries they name are small and read whole; the corpus (100k to millions of lines) is only
ever streamed: `scan_corpus` yields one document at a time with its byte offset, and
`read_documents` seeks to the offsets of the few documents a run needs. No step keeps the
corpus text in memory: a run-file evaluation keeps the candidates' texts, BM25 keeps token ids.

Which queries count, as BEIR and MTEB count them: every query with a row in qrels/<split>.tsv
(and a text), including one whose rows all have relevance 0 - it scores 0 on every metric.
BEIR's GenericDataLoader keeps every qrels row and restricts the queries to the qrels' ids
(beir 2.2.0 beir/datasets/data_loader.py: `_load_qrels` and `self.queries = {qid: ... for qid
in self.qrels}`); MTEB 2.x drops only queries with no qrels rows at all
(mteb/abstasks/retrieval.py `_filter_queries_without_positives`: `len(relevant_docs[idx]) == 0`);
pytrec_eval then scores such a query 0. Both counts are the same set, so there is one rule here.

A document id that occurs twice in corpus.jsonl is reported (`duplicate_document_ids`, with the
ids) and its last copy is the one read, as BEIR's loader (`self.corpus[_id] = ...`) and MTEB's
cross-encoder search (`doc_id_to_idx = {doc: idx ...}`) both keep the last.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .issues import EvalInputError, Issues

LAYOUT = "BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"


def document_text(record: dict) -> str:
    """Title and text joined by a space, as BEIR's and MTEB's evaluators build a passage."""
    title = record.get("title") or ""
    text = record.get("text") or ""
    return f"{title} {text}".strip() if title.strip() else text.strip()


@dataclass
class Dataset:
    root: Path
    name: str
    split: str
    queries: Dict[str, str]  # the queries that count: a qrels row and a text
    qrels: Dict[str, Dict[str, int]]  # those queries' rows, 0-grade ones included
    corpus_path: Path
    issues: Issues = field(default_factory=Issues)
    corpus_size: Optional[int] = None  # set by the first full corpus scan


def _parse_json_line(path: Path, number: int, line: bytes) -> dict:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvalInputError(f"{path}:{number}: not a JSON object ({err})") from None
    if not isinstance(record, dict) or "_id" not in record:
        raise EvalInputError(f'{path}:{number}: expected a JSON object with an "_id" field')
    return record


def iter_jsonl(path: Path) -> Iterator[Tuple[int, int, dict]]:
    """(line number, byte offset, record) for each non-blank line, one at a time."""
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, offset, _parse_json_line(path, number, line)
            offset += len(line)


def _required(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise EvalInputError(f"{root}: missing {relative} ({LAYOUT})")
    return path


def read_qrels(path: Path) -> Dict[str, Dict[str, int]]:
    qrels: Dict[str, Dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not line.strip():
                continue
            if len(parts) == 4:  # TREC qrels: qid iteration docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise EvalInputError(
                    f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line.strip()!r}"
                )
            qid, did, rel = (p.strip() for p in parts)
            try:
                grade = int(float(rel))
            except ValueError:
                if number == 1:
                    continue  # the header line BEIR writes
                raise EvalInputError(f"{path}:{number}: relevance {rel!r} is not a number") from None
            qrels.setdefault(qid, {})[did] = grade
    return qrels


def load(root: Path, split: str = "test", name: Optional[str] = None) -> Dataset:
    """Qrels and the queries that count; checks the corpus exists but does not read it."""
    root = Path(root)
    if not root.is_dir():
        raise EvalInputError(f"{root}: no such dataset folder ({LAYOUT})")
    corpus = _required(root, "corpus.jsonl")
    queries_path = _required(root, "queries.jsonl")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise EvalInputError(
            f"{root}: missing qrels/{split}.tsv ({LAYOUT}); splits found: {', '.join(found) if found else 'none'}"
        )
    issues = Issues()
    qrels = read_qrels(qrels_path)
    if not qrels:
        raise EvalInputError(f"{qrels_path}: no relevance judgements")
    judged = dict(qrels)  # every query with a qrels row counts (BEIR and MTEB; see the module doc)
    queries: Dict[str, str] = {}
    for _, _, record in iter_jsonl(queries_path):
        qid = str(record["_id"])
        if qid in judged:
            queries[qid] = (record.get("text") or "").strip()
    for qid in list(judged):
        if qid not in queries:
            issues.add("qrels_query_not_in_queries", qid)
            del judged[qid]
        elif not any(rel > 0 for rel in judged[qid].values()):
            issues.add("queries_without_relevant", qid)
    if not any(rel > 0 for docs in judged.values() for rel in docs.values()):
        raise EvalInputError(
            f"{root}: no query in qrels/{split}.tsv has a relevant document and a text in "
            f"queries.jsonl; nothing to evaluate (every metric would be 0)"
        )
    return Dataset(
        root=root, name=name or root.name, split=split, queries=queries, qrels=judged, corpus_path=corpus, issues=issues
    )


def scan_corpus(dataset: Dataset) -> Iterator[Tuple[str, str, int]]:
    """(doc id, text, byte offset) for every line of the corpus, in file order, checking as it
    goes: qrels ids never seen, empty documents and repeated ids are counted when the scan ends.
    A repeated id is yielded again: a consumer keeps the last copy (see the module doc)."""
    wanted = {did for docs in dataset.qrels.values() for did in docs}
    # 8 bytes per document (not a set of ids: MS MARCO has 8.8M); names are looked up afterwards.
    hashes = array("q")
    seen = 0
    for _, offset, record in iter_jsonl(dataset.corpus_path):
        did = str(record["_id"])
        wanted.discard(did)
        hashes.append(_id_hash(did))
        text = document_text(record)
        if not text:
            dataset.issues.add("empty_documents_in_corpus", did)
        seen += 1
        yield did, text, offset
    for did in sorted(wanted):
        dataset.issues.add("qrels_doc_not_in_corpus", did)
    duplicates = repeated_ids(dataset.corpus_path, hashes)
    for did, copies in sorted(duplicates.items()):
        dataset.issues.add("duplicate_document_ids", f"{did} (x{copies})")
    dataset.corpus_size = seen - sum(copies - 1 for copies in duplicates.values())  # distinct ids


def _id_hash(did: str) -> int:
    return int.from_bytes(hashlib.blake2b(did.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def repeated_ids(path: Path, hashes: array[int]) -> Dict[str, int]:
    """{id: copies} for every id on more than one line of `path`, given each line's id hash in
    file order. Equal hashes are only candidates; a second pass (only when there are some)
    compares the ids themselves."""
    values = np.frombuffer(hashes, dtype=np.int64) if len(hashes) else np.zeros(0, np.int64)
    unique, counts = np.unique(values, return_counts=True)
    suspects = set(unique[counts > 1].tolist())
    if not suspects:
        return {}
    copies: Dict[str, int] = {}
    for _, _, record in iter_jsonl(path):
        did = str(record["_id"])
        if _id_hash(did) in suspects:
            copies[did] = copies.get(did, 0) + 1
    return {did: n for did, n in copies.items() if n > 1}


def collect_texts(dataset: Dataset, doc_ids: Iterable[str]) -> Dict[str, str]:
    """The texts of `doc_ids` in one streaming pass (run-file mode: only candidates kept); a
    repeated id keeps its last copy's text."""
    needed = set(doc_ids)
    return {did: text for did, text, _ in scan_corpus(dataset) if did in needed}


def read_documents(path: Path, offsets: Dict[str, int]) -> Dict[str, str]:
    """Texts of the documents at `offsets` (from a scan), read by seeking in offset order."""
    out: Dict[str, str] = {}
    with path.open("rb") as handle:
        for did, offset in sorted(offsets.items(), key=lambda item: item[1]):
            handle.seek(offset)
            out[did] = document_text(_parse_json_line(path, 0, handle.readline()))
    return out


def chunks(items: Iterable, size: int) -> Iterator[List]:
    batch: List = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
