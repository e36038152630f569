"""Rerank every query's candidates through the live `rerank` ensemble with our client.

What a user's search service does: one `score_details` call per query (the client splits it
into requests of at most max_batch_size pairs and sends them concurrently), several queries
in flight. Documents are ranked by the served logit (sigmoid would round nearby high scores
to the same float32 and invent ties).

Modes: `truncate` (FlagReranker's truncation at max_length, the server's default) and `window`
(the `rerank_windows` ensemble: a long document is scored by overlapping windows and keeps its
best window's score). A scorer plugs in through `make_scorer`; nothing else here changes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from reranker_client import RerankClient, RerankError
from reranker_client.errors import InvalidInputError

from .first_stage import FirstStage
from .issues import EvalInputError, Issues

MODES = ("truncate", "window")


class EvalServerError(EvalInputError):
    """The server cannot be used (unreachable, model missing, failing): no verdict."""


@dataclass(frozen=True)
class Scored:
    logit: float
    tokens: int
    truncated: bool
    # Scored on only part of what the mode promises to read: in window mode, a document over the
    # server's per-passage window limit, scored on its first windows (reranker_client's
    # `truncated` with `windows` at the limit). Truncate mode cuts by design: never degraded.
    degraded: bool = False


class Scorer(Protocol):
    """Scores one query's documents, in input order. The hook for other scoring modes."""

    mode: str

    def __call__(self, query: str, documents: Sequence[str]) -> List[Scored]: ...


class ClientScorer:
    """One score_details call per query, in the client's long-document mode."""

    def __init__(self, client: RerankClient, mode: str):
        self.client, self.mode = client, mode
        self.window_limit = client.server_limits().max_windows_per_passage if mode == "window" else None

    def __call__(self, query: str, documents: Sequence[str]) -> List[Scored]:
        pairs = [(query, d) for d in documents]
        limit = self.window_limit
        return [
            Scored(
                r.logit,
                r.tokens,
                r.truncated,
                bool(limit and r.truncated and r.windows is not None and r.windows >= limit),
            )
            for r in self.client.score_details(pairs, long_documents=self.mode)
        ]


def make_scorer(mode: str, client: RerankClient) -> Scorer:
    if mode not in MODES:
        raise EvalInputError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    return ClientScorer(client, mode)


@dataclass
class RerankRun:
    run: Dict[str, Dict[str, float]]  # query id -> doc id -> served logit (ranked last: empty docs)
    latencies_ms: List[float] = field(default_factory=list)  # one per reranked query
    pairs: int = 0
    tokens: int = 0
    truncated: int = 0
    degraded: int = 0  # documents scored on only part of what the mode reads (Scored.degraded)
    failed: List[str] = field(default_factory=list)  # query ids the server refused: NOT reranked
    wall_s: float = 0.0

    def stats(self) -> dict:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> Optional[float]:
            return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else None

        wall = self.wall_s or float("nan")
        return {
            "queries": len(lat),
            "pairs": self.pairs,
            "tokens": self.tokens,
            "truncated_pairs": self.truncated,
            "degraded_documents": self.degraded,
            "failed_queries": len(self.failed),
            "wall_s": self.wall_s,
            "queries_per_s": len(lat) / wall if lat else 0.0,
            "pairs_per_s": self.pairs / wall if lat else 0.0,
            "latency_ms": {
                "p50": pct(50),
                "p95": pct(95),
                "p99": pct(99),
                "max": lat[-1] if lat else None,
                "mean": sum(lat) / len(lat) if lat else None,
            },
        }


def fit_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes on a character boundary."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


def _rank_query(
    scorer: Scorer,
    query: str,
    docs: List[Tuple[str, float]],
    texts: Dict[str, str],
    max_text_bytes: Optional[int],
    issues: Issues,
    qid: str,
):
    sent_ids, sent_texts, unsent = [], [], []
    for did, _ in docs:
        text = texts.get(did, "")
        if not text.strip():
            issues.add("empty_candidates", f"{qid}/{did}")
            unsent.append(did)
            continue
        if max_text_bytes and len(text.encode("utf-8")) > max_text_bytes:
            issues.add("documents_cut_to_byte_limit", f"{qid}/{did}")
            text = fit_bytes(text, max_text_bytes)
        sent_ids.append(did)
        sent_texts.append(text)
    start = time.perf_counter()
    scored = scorer(query, sent_texts) if sent_texts else []
    latency_ms = (time.perf_counter() - start) * 1e3
    ranked = {did: s.logit for did, s in zip(sent_ids, scored)}
    for did, s in zip(sent_ids, scored):
        if s.degraded:
            issues.add("documents_scored_in_part", f"{qid}/{did}")
    floor = min(ranked.values(), default=0.0) - 1.0
    for did in unsent:  # below every scored document
        ranked[did] = floor
    return ranked, scored, latency_ms


def rerank(
    first: FirstStage,
    queries: Dict[str, str],
    scorer: Scorer,
    issues: Issues,
    max_text_bytes: Optional[int] = None,
    concurrency: int = 4,
    progress: Optional[Callable[[int, int], None]] = None,
) -> RerankRun:
    """Reranked run for every query with candidates. A query with an empty text keeps its
    first-stage order and is counted; a query the server refuses keeps it too (the metrics need a
    ranking for every judged query), is counted and listed in `failed`, and makes the CLI exit
    non-zero: a run with a query that could not be reranked is no clean result."""
    out = RerankRun(run={})
    todo = []
    for qid, docs in first.candidates.items():
        if not docs:
            continue
        if not queries.get(qid, "").strip():
            issues.add("empty_queries", qid)
            out.run[qid] = dict(docs)
            continue
        todo.append(qid)

    def one(qid: str):
        try:
            return (
                qid,
                _rank_query(scorer, queries[qid], first.candidates[qid], first.texts, max_text_bytes, issues, qid),
                None,
            )
        except InvalidInputError as err:  # this query's input, not the server: keep going
            return qid, None, err

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for done, (qid, result, err) in enumerate(pool.map(one, todo), 1):
            if err is not None:
                issues.add("failed_queries", f"{qid}: {err}")
                out.run[qid] = dict(first.candidates[qid])
                out.failed.append(qid)
            else:
                ranked, scored, latency_ms = result
                out.run[qid] = ranked
                out.latencies_ms.append(latency_ms)
                out.pairs += len(scored)
                out.tokens += sum(s.tokens for s in scored)
                out.truncated += sum(s.truncated for s in scored)
                out.degraded += sum(s.degraded for s in scored)
            if progress:
                progress(done, len(todo))
    out.wall_s = time.perf_counter() - start
    return out


def connect(
    url: str, protocol: str = "grpc", model: str = "rerank", timeout: float = 60.0, connect_timeout: float = 5.0
) -> RerankClient:
    """A client whose server answered; EvalServerError (one line) otherwise."""
    from reranker_client.verify import reachable

    why = reachable(url, protocol, None, {}, connect_timeout)
    if why is not None:
        raise EvalServerError(f"cannot reach {url} ({protocol}) within {connect_timeout:g}s: {why}")
    client = RerankClient(url, protocol=protocol, model=model, timeout=timeout, retries=2)
    try:
        client.server_limits()
    except RerankError as err:
        client.close()
        raise EvalServerError(f"{url}: model {model!r} is not usable: {type(err).__name__}: {err}") from None
    return client
