"""Input validation and chunk planning, shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from typing import AbstractSet, Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from . import contract
from .errors import InvalidInputError
from .results import RerankResult

# A response's output tensors by name (tritonclient_adapter.Outputs; None: missing output).
Outputs = Dict[str, Optional[npt.NDArray[Any]]]


@dataclass(frozen=True)
class Chunk:
    rows: List[int]  # indices into the caller's pair list
    queries: npt.NDArray[np.object_]  # object [B, 1] of UTF-8 bytes
    passages: npt.NDArray[np.object_]
    strides: Optional[npt.NDArray[np.int32]] = None  # window mode: int32 [B, 1] (0 = the server's default)
    # window mode with strict=True: the server's max_windows_per_passage; a passage scored on only
    # that many of its windows (see refuse_capped) fails the call instead of coming back truncated.
    strict_windows: Optional[int] = None
    max_length: Optional[int] = None  # the call's own tokens per pair, sent with the request (None: the server's)


LONG_DOCUMENT_MODES = ("truncate", "window")


def check_mode(long_documents: str, window_stride: Optional[int]) -> None:
    if long_documents not in LONG_DOCUMENT_MODES:
        raise InvalidInputError(f"long_documents: must be 'truncate' or 'window', got {long_documents!r}")
    if window_stride is not None and (
        long_documents != "window" or not isinstance(window_stride, int) or window_stride < 1
    ):
        raise InvalidInputError(
            f"window_stride: a positive int, with long_documents='window' only; got {window_stride!r}"
        )


def check_max_length(max_length: Optional[int]) -> None:
    """A call's own max_length, before any I/O: an int >= 1 (the server's range is checked once
    its limits are read: ServerLimits.for_request)."""
    if max_length is None:
        return
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise InvalidInputError(f"max_length: a positive int (tokens per query+document pair); got {max_length!r}")


def _check_text(field: str, value: object, index: Optional[int] = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field}: expected str, got {type(value).__name__}", index=index)
    if not value.strip():
        raise InvalidInputError(f"{field}: is empty or whitespace only", index=index)
    if "\x00" in value:
        # The server refuses it too, but names the row inside one request (passage[j]), not
        # the caller's document.
        raise InvalidInputError(f"{field}: contains a NUL character", index=index)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: no UTF-8 for it
        message = f"{field}: not valid UTF-8 ({err.reason} at character {err.start})"
        raise InvalidInputError(message, index=index) from None


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
    return [(q, _check_text(f"documents[{i}]", d, i)) for i, d in enumerate(documents)]


# What one more request costs, as a number of average-length pairs computed for nothing:
# the per-request work (scheduling, a tokenizer call, kernel launches) that makes many tiny
# requests slower than a little padding.
REQUEST_COST_PAIRS = 1.0


def utf8_length(query: bytes, passage: bytes) -> int:
    """Default length estimate without a tokenizer: UTF-8 bytes track token counts across
    scripts better than characters (CJK characters are 3 bytes and ~1 token each)."""
    return len(query) + len(passage)


def chunk_bounds(
    lengths: Sequence[int],
    max_batch_size: int,
    request_cost: Optional[float] = None,
    max_rows: Optional[Callable[[int], int]] = None,
) -> List[Tuple[int, int]]:
    """Cut ascending `lengths` into runs of at most max_batch_size (and at most max_rows(longest)
    rows, the server's batch for that length) that minimise padded size (each run is padded to
    its longest item) plus a fixed cost per run. Dynamic programming, O(n * max_batch_size)."""
    n = len(lengths)
    if request_cost is None:
        request_cost = REQUEST_COST_PAIRS * (sum(lengths) / n if n else 0.0)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        rows = max_batch_size if max_rows is None else max(1, min(max_batch_size, max_rows(lengths[end - 1])))
        for start in range(max(0, end - rows), end):
            cost = best[start] + (end - start) * lengths[end - 1] + request_cost
            if cost < best[end]:
                best[end], cut[end] = cost, start
    bounds, end = [], n
    while end > 0:
        bounds.append((cut[end], end))
        end = cut[end]
    return bounds[::-1]


def utf8_head(text: bytes, limit: int) -> bytes:
    """The longest prefix of UTF-8 `text` within `limit` bytes that ends on a character
    boundary (a continuation byte is 0b10xxxxxx), so the head is valid UTF-8 itself."""
    if len(text) <= limit:
        return text
    end = limit
    while end > 0 and (text[end] & 0xC0) == 0x80:
        end -= 1
    return text[:end]


def fit_sizes(
    pairs: List[Tuple[bytes, bytes]], max_text_bytes: Optional[int], strict: bool = False
) -> Tuple[List[Tuple[bytes, bytes]], FrozenSet[int]]:
    """The server's per-text byte limit, applied before anything is sent: (pairs to send, rows
    cut). A text over it is cut to its head at the limit (on a UTF-8 character boundary): the
    server reads only a text's head anyway (max_length tokens need far fewer bytes than the
    limit), so the head scores as the whole text would, and the row is reported truncated, as
    the frameworks' built-in rerankers truncate. strict=True refuses such a text instead, naming
    it (the caller's index) and the limit."""
    if not max_text_bytes:
        return pairs, frozenset()
    out, cut = [], set()
    for i, (query, document) in enumerate(pairs):
        texts = []
        for name, index, text in (("query", None, query), (f"documents[{i}]", i, document)):
            if len(text) > max_text_bytes:
                head = utf8_head(text, max_text_bytes)
                if strict or not head.strip():
                    why = "strict=True" if strict else "its head is blank"
                    raise InvalidInputError(
                        f"{name}: {len(text)} bytes exceeds the limit of {max_text_bytes} bytes per text "
                        f"(not cut: {why})",
                        index=index,
                    )
                text = head
                cut.add(i)
            texts.append(text)
        out.append((texts[0], texts[1]))
    return out, frozenset(cut)


def check_sizes(pairs: List[Tuple[bytes, bytes]], max_text_bytes: Optional[int]) -> None:
    """The server's per-text limit, enforced before anything is sent (fit_sizes with strict)."""
    fit_sizes(pairs, max_text_bytes, strict=True)


def plan_chunks(
    pairs: List[Tuple[bytes, bytes]],
    max_batch_size: int,
    length: Optional[Callable[[bytes, bytes], int]] = None,
    buckets: Optional[Sequence[int]] = None,
    class_batch: Optional[Callable[[int], int]] = None,
) -> List[Chunk]:
    """Sort by length so each chunk holds similar lengths (the server pads a request to its
    longest pair), then cut where padding would cost more than another request. `length`
    gives a pair's tokens (a real tokenizer packs tightest; UTF-8 bytes are the fallback);
    with token lengths, the server's `buckets` say what each chunk really costs and its length
    classes (`class_batch(padded length)`) how many such pairs one model batch holds, so a
    request of long pairs is one batch, not a queue of them."""
    estimates = [(length or utf8_length)(q, p) for q, p in pairs]
    if length is not None and buckets:
        estimates = [buckets[min(bisect.bisect_left(buckets, e), len(buckets) - 1)] for e in estimates]
    order = sorted(range(len(pairs)), key=lambda i: estimates[i])
    lengths = [estimates[i] for i in order]
    chunks = []
    for start, end in chunk_bounds(
        lengths, max_batch_size, max_rows=class_batch if length is not None and buckets else None
    ):
        rows = order[start:end]
        queries = np.array([[pairs[i][0]] for i in rows], dtype=np.object_)
        passages = np.array([[pairs[i][1]] for i in rows], dtype=np.object_)
        chunks.append(Chunk(rows, queries, passages))
    return chunks


def estimate_windows(
    query_tokens: int,
    passage_tokens: int,
    max_length: int,
    query_max_length: int,
    special_tokens: int,
    stride: Optional[int],
) -> int:
    """Windows the server will cut a passage into, from token estimates: windows of
    max_length - query - special tokens, `stride` apart (default half a window). The server cuts
    at word boundaries, which can add a window; the client splits a request the server finds too
    large (see `split`)."""
    width = max(1, max_length - min(query_tokens, query_max_length) - special_tokens)
    step = stride or max(1, width // 2)
    if passage_tokens <= width:
        return 1
    return 1 + math.ceil((passage_tokens - width) / step)


def plan_window_chunks(
    pairs: List[Tuple[bytes, bytes]],
    windows: Sequence[int],
    max_batch_size: int,
    max_windows_per_request: int,
    stride: Optional[int],
    strict_windows: Optional[int] = None,
) -> List[Chunk]:
    """Window mode: passages sorted by their estimated windows, packed so a request holds at most
    max_batch_size passages and (by the estimates) max_windows_per_request windows."""
    order = sorted(range(len(pairs)), key=lambda i: windows[i])
    groups: List[List[int]] = [[]]
    load = 0
    for i in order:
        cost = min(windows[i], max_windows_per_request)
        if groups[-1] and (len(groups[-1]) >= max_batch_size or load + cost > max_windows_per_request):
            groups.append([])
            load = 0
        groups[-1].append(i)
        load += cost
    return [
        Chunk(
            rows,
            np.array([[pairs[i][0]] for i in rows], dtype=np.object_),
            np.array([[pairs[i][1]] for i in rows], dtype=np.object_),
            np.full((len(rows), 1), stride or 0, dtype=np.int32),
            strict_windows,
        )
        for rows in groups
        if rows
    ]


def split(chunk: Chunk) -> Tuple[Chunk, Chunk]:
    """Two halves of a chunk, for a request the server found over its per-request window limit."""
    half = len(chunk.rows) // 2
    parts = []
    for part in (slice(0, half), slice(half, None)):
        parts.append(
            replace(
                chunk,
                rows=chunk.rows[part],
                queries=chunk.queries[part],
                passages=chunk.passages[part],
                strides=None if chunk.strides is None else chunk.strides[part],
            )
        )
    return parts[0], parts[1]


def refuse_capped(chunk: Chunk, outputs: Outputs) -> None:
    """strict=True in window mode: the server scores a passage that needs more than
    max_windows_per_passage windows on its first ones and flags it truncated (windows == the
    limit); strict callers get today's refusal instead, naming the document and the limit. A
    passage needing exactly the limit whose query was also cut (truncated too) is refused as well:
    the flag cannot tell the two apart, and strict errs towards refusing."""
    limit = chunk.strict_windows
    if limit is None:
        return
    windows = np.asarray(outputs[contract.WINDOWS.name]).reshape(-1)
    truncated = np.asarray(outputs[contract.TRUNCATED.name]).reshape(-1)
    for j, row in enumerate(chunk.rows):
        if truncated[j] and windows[j] >= limit:
            raise InvalidInputError(
                f"documents[{row}]: needs more than {limit} windows, over the limit of {limit} windows per "
                f"passage (strict=True; without it the document is scored on its first {limit} windows "
                f"and flagged truncated)"
            )


def join_outputs(first: Outputs, second: Outputs) -> Outputs:
    return {name: np.concatenate([np.asarray(first[name]), np.asarray(second[name])]) for name in first}


def assemble(
    total: int,
    answered: Sequence[Tuple[Chunk, Outputs]],
    documents: Optional[Sequence[str]] = None,
    cut: AbstractSet[int] = frozenset(),
) -> List[RerankResult]:
    """Results in input order, from each chunk's output arrays; refuses to drop any row. Rows in
    `cut` had a text cut client-side (fit_sizes): reported truncated whatever the server says."""
    results: List[Optional[RerankResult]] = [None] * total
    for chunk, outputs in answered:
        n = len(chunk.rows)
        arrays = {t.name: np.asarray(outputs[t.name]).reshape(-1) for t in contract.ENSEMBLE_OUTPUTS}
        spans = np.asarray(outputs[contract.SPAN.name]).reshape(-1, 2) if contract.SPAN.name in outputs else None
        windows = np.asarray(outputs[contract.WINDOWS.name]).reshape(-1) if contract.WINDOWS.name in outputs else None
        if any(len(a) != n for a in arrays.values()) or (spans is not None and len(spans) != n):
            raise RuntimeError(f"server returned {[len(a) for a in arrays.values()]} rows for a chunk of {n}")
        for j, row in enumerate(chunk.rows):
            results[row] = RerankResult(
                index=row,
                score=float(arrays[contract.SCORE.name][j]),
                logit=float(arrays[contract.LOGIT.name][j]),
                tokens=int(arrays[contract.TOKENS.name][j]),
                truncated=bool(arrays[contract.TRUNCATED.name][j]) or row in cut,
                document=documents[row] if documents is not None else None,
                span=(int(spans[j][0]), int(spans[j][1])) if spans is not None else None,
                windows=int(windows[j]) if windows is not None else None,
            )
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no result for rows {missing[:10]}")
    return results  # type: ignore[return-value]


def top(results: List[RerankResult], top_k: Optional[int]) -> List[RerankResult]:
    if top_k is not None and top_k < 0:
        raise InvalidInputError(f"top_k: must be >= 0, got {top_k}")
    ranked = sorted(results, key=lambda r: (-r.score, -r.logit, r.index))
    return ranked if top_k is None else ranked[:top_k]
