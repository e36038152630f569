"""RerankClient: blocking API; chunks run concurrently on a small thread pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

from . import planning, transport
from .errors import DeadlineExceededError, ModelNotReadyError, RerankError
from .results import RerankResult
from .transport import RETRYABLE, EndpointPool, TLSOptions, backoff_seconds


class RerankClient:
    def __init__(self, url: Union[str, Sequence[str]] = "localhost:8001", protocol: str = "grpc",
                 model: str = "rerank", timeout: float = 30.0, retries: int = 3,
                 max_concurrency: int = 4, tls: Optional[TLSOptions] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("url: at least one endpoint is required")
        transport.module_for(protocol, asyncio=False)  # validates the protocol early
        self.protocol, self.model, self.timeout, self.retries = protocol, model, timeout, retries
        self.tls, self.headers = tls, dict(headers or {})
        self.pool = EndpointPool(urls)
        self._local = threading.local()  # tritonclient's HTTP client is not thread-safe
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="rerank")
        self._max_batch_size: Optional[int] = None
        self._clients: List = []
        self._clients_lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------
    def rerank(self, query: str, documents: Sequence[str], top_k: Optional[int] = None,
               return_documents: bool = False, timeout: Optional[float] = None) -> List[RerankResult]:
        """Results sorted by score (best first); `index` is the document's input position."""
        pairs = planning.validate_query_documents(query, documents)
        if top_k is not None:
            planning.top([], top_k)  # validates top_k before any I/O
        if not pairs:
            return []
        results = self._score_pairs(pairs, list(documents) if return_documents else None, timeout)
        return planning.top(results, top_k)

    def score(self, pairs: Sequence[Tuple[str, str]], timeout: Optional[float] = None) -> List[float]:
        """sigmoid scores in input order."""
        checked = planning.validate_pairs(pairs)
        return [r.score for r in self._score_pairs(checked, None, timeout)] if checked else []

    def score_details(self, pairs: Sequence[Tuple[str, str]]) -> List[RerankResult]:
        checked = planning.validate_pairs(pairs)
        return self._score_pairs(checked, None) if checked else []

    def ready(self) -> bool:
        for url in self.pool.urls:
            try:
                if self._client(url).is_model_ready(self.model, headers=self.headers):
                    return True
            except Exception:  # noqa: BLE001 - not ready is the answer
                continue
        return False

    def max_batch_size(self) -> int:
        if self._max_batch_size is None:
            config = self._call(lambda c: c.get_model_config(self.model, headers=self.headers),
                                time.monotonic() + self.timeout)
            self._max_batch_size = transport.max_batch_size_from(config)
        return self._max_batch_size

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._clients_lock:
            for client in self._clients:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
            self._clients.clear()

    def __enter__(self) -> "RerankClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _client(self, url: str):
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            clients[url] = transport.make_client(self.protocol, False, url, self.tls, self.timeout)
            with self._clients_lock:
                self._clients.append(clients[url])
        return clients[url]

    def _call(self, fn, deadline: float, budget: Optional[float] = None):
        """Run fn(client) on an endpoint; retry retryable failures on the next endpoint with
        backoff until `retries` or the deadline runs out."""
        attempt, avoid = 0, None
        while True:
            url = self.pool.pick(avoid)
            try:
                return fn(self._client(url))
            except Exception as exc:  # noqa: BLE001 - translated below
                err = transport.translate(exc)
            if isinstance(err, ModelNotReadyError) and len(self.pool.urls) > 1:
                err_retryable = True
            else:
                err_retryable = isinstance(err, RETRYABLE)
            if not err_retryable or attempt >= self.retries:
                raise err
            self.pool.mark_down(url)
            avoid = url
            pause = backoff_seconds(attempt)
            if time.monotonic() + pause >= deadline:
                raise DeadlineExceededError(f"deadline of {budget or self.timeout}s passed after {attempt + 1} tries: {err}")
            time.sleep(pause)
            attempt += 1

    def _infer(self, chunk: planning.Chunk, deadline: float, budget: float) -> Dict:
        def call(client):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(f"deadline of {budget}s passed")
            inputs = transport.make_inputs(self.protocol, False, chunk.queries, chunk.passages)
            outputs = transport.make_outputs(self.protocol, False)
            kwargs = {"client_timeout": remaining} if self.protocol == "grpc" else {}
            return transport.read_outputs(client.infer(self.model, inputs, outputs=outputs,
                                                       headers=self.headers, **kwargs))
        return self._call(call, deadline, budget)

    def _score_pairs(self, pairs, documents, timeout: Optional[float] = None) -> List[RerankResult]:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        chunks = planning.plan_chunks(pairs, self.max_batch_size())
        futures = [(chunk, self._executor.submit(self._infer, chunk, deadline, budget)) for chunk in chunks]
        answered, first_error = [], None
        for chunk, future in futures:
            try:
                answered.append((chunk, future.result()))
            except RerankError as err:
                first_error = first_error or err
        if first_error is not None:
            raise first_error
        return planning.assemble(len(pairs), answered, documents)
