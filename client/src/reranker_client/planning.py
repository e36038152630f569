"""Input validation and chunk planning, shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidInputError
from .results import RerankResult


@dataclass(frozen=True)
class Chunk:
    rows: List[int]  # indices into the caller's pair list
    queries: np.ndarray  # object [B, 1] of UTF-8 bytes
    passages: np.ndarray


def _check_text(field: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"{field}: is empty or whitespace only")
    return value.encode("utf-8")


def validate_pairs(pairs: Sequence[Tuple[str, str]]) -> List[Tuple[bytes, bytes]]:
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidInputError(f"pairs[{i}]: expected a (query, document) pair")
        out.append((_check_text(f"pairs[{i}].query", pair[0]), _check_text(f"pairs[{i}].document", pair[1])))
    return out


def validate_query_documents(query: object, documents: Sequence[object]) -> List[Tuple[bytes, bytes]]:
    if isinstance(documents, (str, bytes)):
        raise InvalidInputError("documents: expected a list of strings, got a single string")
    q = _check_text("query", query)
    return [(q, _check_text(f"documents[{i}]", d)) for i, d in enumerate(documents)]


def plan_chunks(pairs: List[Tuple[bytes, bytes]], max_batch_size: int) -> List[Chunk]:
    """Sort by length so each chunk holds similar lengths (the server pads a request to its
    longest pair), then cut into chunks of at most max_batch_size pairs."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    chunks = []
    for start in range(0, len(order), max_batch_size):
        rows = order[start:start + max_batch_size]
        queries = np.array([[pairs[i][0]] for i in rows], dtype=np.object_)
        passages = np.array([[pairs[i][1]] for i in rows], dtype=np.object_)
        chunks.append(Chunk(rows, queries, passages))
    return chunks


def assemble(total: int, answered: List[Tuple[Chunk, dict]], documents: Optional[Sequence[str]] = None
             ) -> List[RerankResult]:
    """Results in input order, from each chunk's output arrays; refuses to drop any row."""
    results: List[Optional[RerankResult]] = [None] * total
    for chunk, outputs in answered:
        n = len(chunk.rows)
        arrays = {k: np.asarray(outputs[k]).reshape(-1) for k in ("score", "logit", "tokens", "truncated")}
        if any(len(a) != n for a in arrays.values()):
            raise RuntimeError(f"server returned {[len(a) for a in arrays.values()]} rows for a chunk of {n}")
        for j, row in enumerate(chunk.rows):
            results[row] = RerankResult(
                index=row, score=float(arrays["score"][j]), logit=float(arrays["logit"][j]),
                tokens=int(arrays["tokens"][j]), truncated=bool(arrays["truncated"][j]),
                document=documents[row] if documents is not None else None)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no result for rows {missing[:10]}")
    return results  # type: ignore[return-value]


def top(results: List[RerankResult], top_k: Optional[int]) -> List[RerankResult]:
    if top_k is not None and top_k < 0:
        raise InvalidInputError(f"top_k: must be >= 0, got {top_k}")
    ranked = sorted(results, key=lambda r: (-r.score, -r.logit, r.index))
    return ranked if top_k is None else ranked[:top_k]
