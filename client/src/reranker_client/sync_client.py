"""RerankClient: blocking API; the requests of one call run concurrently on a small thread pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Dict, List, Optional, Sequence, Tuple

from . import planning, tritonclient_adapter
from .base import ClientBase
from .errors import DeadlineExceededError, RerankError
from .results import RerankResult
from .server_limits import ServerLimits


DEADLINE_GRACE_S = 0.1


class RerankClient(ClientBase):
    ASYNCIO = False

    def __init__(self, *args, **kwargs) -> None:
        """The arguments of ClientBase (url, protocol, model, timeout, retries, max_concurrency,
        tls, headers, token_counter, resolver) or config=ClientConfig(...)."""
        super().__init__(*args, **kwargs)
        self._local = threading.local()  # tritonclient's HTTP client is not thread-safe
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="rerank")
        self._clients: List = []
        self._clients_lock = threading.Lock()

    def rerank(self, query: str, documents: Sequence[str], top_k: Optional[int] = None,
               return_documents: bool = False, timeout: Optional[float] = None,
               long_documents: str = "truncate", window_stride: Optional[int] = None) -> List[RerankResult]:
        """Results sorted by score (best first); `index` is the document's input position.

        long_documents="truncate" (default): FlagReranker's scoring, the document cut to fit
        max_length. "window": a long document is scored by overlapping windows of whole words
        (`window_stride` passage tokens apart; default half a window) and gets its best window's
        score; `span` gives that window's character offsets in the document."""
        planning.check_mode(long_documents, window_stride)
        pairs = self._rerank_pairs(query, documents, top_k)
        if not pairs:
            return []
        results = self._score_pairs(pairs, list(documents) if return_documents else None, timeout,
                                    long_documents, window_stride)
        return planning.top(results, top_k)

    def score(self, pairs: Sequence[Tuple[str, str]], timeout: Optional[float] = None) -> List[float]:
        """sigmoid scores in input order."""
        checked = planning.validate_pairs(pairs)
        return [r.score for r in self._score_pairs(checked, None, timeout)] if checked else []

    def score_details(self, pairs: Sequence[Tuple[str, str]], timeout: Optional[float] = None,
                      long_documents: str = "truncate", window_stride: Optional[int] = None) -> List[RerankResult]:
        """Full results (score, logit, tokens, truncated, span) in input order."""
        planning.check_mode(long_documents, window_stride)
        checked = planning.validate_pairs(pairs)
        return self._score_pairs(checked, None, timeout, long_documents, window_stride) if checked else []

    def ready(self) -> bool:
        for url in self.pool.urls:
            try:
                if self._client(url).is_model_ready(self.model, headers=self.headers):
                    return True
            except Exception:  # noqa: BLE001 - not ready is the answer
                continue
        return False

    def max_batch_size(self) -> int:
        return self.server_limits().max_batch_size

    def server_limits(self) -> ServerLimits:
        """Every limit the served ensemble publishes, read once."""
        if self._limits is None:
            return self._limits_from(self._call(lambda c: c.get_model_config(self.model, headers=self.headers),
                                                time.monotonic() + self.timeout, self.timeout))
        return self._limits

    def close(self) -> None:
        """Close every connection this client opened, from any thread, and drop every reference
        to them now: a tritonclient object still held by a thread-local would be closed again by
        its __del__ during interpreter shutdown, after grpc's module is gone (an ignored
        exception printed on every exit)."""
        self._executor.shutdown(wait=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
            self._local = threading.local()  # the main thread's entries go with the old object
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort; nothing to report to the caller
                pass
        del clients  # last references: finalisers run now, while grpc is still importable

    def __enter__(self) -> "RerankClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _client(self, url: str):
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            clients[url] = self._new_client(url)
            with self._clients_lock:
                self._clients.append(clients[url])
        return clients[url]

    def _call(self, fn, deadline: float, budget: float):
        """fn(client) on an endpoint; retryable failures go to the next endpoint after a backoff,
        within `retries` and the deadline."""
        attempt, avoid = 0, None
        while True:
            url = self.pool.pick(avoid)
            try:
                return fn(self._client(url))
            except Exception as exc:  # noqa: BLE001 - typed by _retry_pause
                pause = self._retry_pause(exc, url, attempt, deadline, budget)
            avoid = url
            time.sleep(pause)
            attempt += 1

    def _infer(self, chunk: planning.Chunk, deadline: float, budget: float) -> Dict:
        def call(client):
            remaining = self._remaining(deadline, budget)
            inputs, outputs = self._request(chunk)
            return tritonclient_adapter.read_outputs(client.infer(self._model_for(chunk), inputs, outputs=outputs,
                                                                  headers=self.headers,
                                                                  **self._infer_kwargs(remaining)),
                                                     window=chunk.strides is not None)
        try:
            return self._call(call, deadline, budget)
        except RerankError as err:
            if not self._should_split(err, chunk):
                raise
        first, second = planning.split(chunk)
        return planning.join_outputs(self._infer(first, deadline, budget), self._infer(second, deadline, budget))

    def _score_pairs(self, pairs, documents, timeout: Optional[float] = None, long_documents: str = "truncate",
                     window_stride: Optional[int] = None) -> List[RerankResult]:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        chunks = self._chunks(pairs, self.server_limits(), long_documents, window_stride)
        futures = [(chunk, self._executor.submit(self._infer, chunk, deadline, budget)) for chunk in chunks]
        answered, first_error = [], None
        for chunk, future in futures:
            try:
                # Bounded wait: a chunk still queued behind this client's other calls (every
                # max_concurrency worker busy) must not hold the caller past its deadline. The
                # grace lets an in-flight call's own gRPC deadline error arrive typed.
                wait = max(0.0, deadline - time.monotonic()) + DEADLINE_GRACE_S
                answered.append((chunk, future.result(timeout=wait)))
            except FutureTimeout:
                for _, pending in futures:
                    pending.cancel()  # queued chunks never start; running ones end at the deadline
                raise DeadlineExceededError(f"deadline of {budget}s passed with chunks still queued "
                                            f"behind {self.max_concurrency} busy workers") from None
            except RerankError as err:
                first_error = first_error or err
        if first_error is not None:
            raise first_error
        return planning.assemble(len(pairs), answered, documents)
