"""What the sync and async clients share: settings, input checks and the retry decision."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import planning, transport
from .errors import DeadlineExceededError, ModelNotReadyError, RerankError
from .transport import RETRYABLE, EndpointPool, TLSOptions, backoff_seconds


class ClientBase:
    def __init__(self, url: Union[str, Sequence[str]], protocol: str, model: str, timeout: float,
                 retries: int, max_concurrency: int, tls: Optional[TLSOptions],
                 headers: Optional[Dict[str, str]], length_function: Optional[Callable[[str, str], int]],
                 asyncio: bool, resolver: transport.Resolver = transport.resolve_addresses) -> None:
        """length_function(query, document) -> tokens, e.g. `lengths.token_length_function`,
        packs requests by real token counts (less padding); without it, UTF-8 byte length is
        the estimate."""
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("url: at least one endpoint is required")
        transport.module_for(protocol, asyncio=asyncio)  # validates the protocol early
        discover = transport.split_dns_url(urls[0]) if len(urls) == 1 else None
        self.protocol, self.model, self.timeout, self.retries = protocol, model, timeout, retries
        self.max_concurrency = max_concurrency
        self.tls, self.headers = tls, dict(headers or {})
        # `dns:///host:port` (e.g. the chart's headless Service): every pod, re-resolved.
        self.pool = EndpointPool([] if discover else urls, discover=discover, resolver=resolver)
        self._asyncio = asyncio
        self._length = None
        if length_function is not None:
            self._length = lambda q, p: length_function(q.decode("utf-8"), p.decode("utf-8"))
        self._limits: Optional[transport.ServerLimits] = None  # read from the server once

    @staticmethod
    def _rerank_pairs(query: str, documents: Sequence[str], top_k: Optional[int]) -> List[Tuple[bytes, bytes]]:
        pairs = planning.validate_query_documents(query, documents)
        if top_k is not None:
            planning.top([], top_k)  # validates top_k before any I/O
        return pairs

    def _chunks(self, pairs: List[Tuple[bytes, bytes]], limits: transport.ServerLimits) -> List[planning.Chunk]:
        planning.check_sizes(pairs, limits.max_text_bytes)
        return planning.plan_chunks(pairs, limits.max_batch_size, self._length, limits.buckets)

    def _request(self, chunk: planning.Chunk):
        inputs = transport.make_inputs(self.protocol, self._asyncio, chunk.queries, chunk.passages)
        outputs = transport.make_outputs(self.protocol, self._asyncio)
        return inputs, outputs

    def _retry_pause(self, exc: BaseException, url: str, attempt: int, deadline: float, budget: float) -> float:
        """After a failed attempt: the pause before the next one, or raise the typed error.
        Retried: connection failures, UNAVAILABLE and queue-full (a rerank is a pure function,
        so repeating it is safe), and a missing model when another endpoint may have it."""
        err: RerankError = transport.translate(exc)
        retryable = isinstance(err, RETRYABLE) or (isinstance(err, ModelNotReadyError) and len(self.pool.urls) > 1)
        if not retryable or attempt >= self.retries:
            raise err
        self.pool.mark_down(url)
        pause = backoff_seconds(attempt)
        if time.monotonic() + pause >= deadline:
            raise DeadlineExceededError(f"deadline of {budget}s passed after {attempt + 1} tries: {err}")
        return pause

    def _remaining(self, deadline: float, budget: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"deadline of {budget}s passed")
        return remaining
