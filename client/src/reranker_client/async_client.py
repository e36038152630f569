"""AsyncRerankClient: the same API on tritonclient's asyncio clients."""

from __future__ import annotations

import asyncio
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

from . import planning, transport
from .errors import DeadlineExceededError, ModelNotReadyError
from .results import RerankResult
from .transport import RETRYABLE, EndpointPool, TLSOptions, backoff_seconds


class AsyncRerankClient:
    def __init__(self, url: Union[str, Sequence[str]] = "localhost:8001", protocol: str = "grpc",
                 model: str = "rerank", timeout: float = 30.0, retries: int = 3,
                 max_concurrency: int = 4, tls: Optional[TLSOptions] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("url: at least one endpoint is required")
        transport.module_for(protocol, asyncio=True)
        self.protocol, self.model, self.timeout, self.retries = protocol, model, timeout, retries
        self.tls, self.headers = tls, dict(headers or {})
        self.max_concurrency = max_concurrency
        self.pool = EndpointPool(urls)
        self._clients: Dict[str, object] = {}
        self._max_batch_size: Optional[int] = None

    async def rerank(self, query: str, documents: Sequence[str], top_k: Optional[int] = None,
                     return_documents: bool = False, timeout: Optional[float] = None) -> List[RerankResult]:
        pairs = planning.validate_query_documents(query, documents)
        if top_k is not None:
            planning.top([], top_k)
        if not pairs:
            return []
        results = await self._score_pairs(pairs, list(documents) if return_documents else None, timeout)
        return planning.top(results, top_k)

    async def score(self, pairs: Sequence[Tuple[str, str]], timeout: Optional[float] = None) -> List[float]:
        checked = planning.validate_pairs(pairs)
        return [r.score for r in await self._score_pairs(checked, None, timeout)] if checked else []

    async def ready(self) -> bool:
        for url in self.pool.urls:
            try:
                if await self._client(url).is_model_ready(self.model, headers=self.headers):
                    return True
            except Exception:  # noqa: BLE001
                continue
        return False

    async def max_batch_size(self) -> int:
        if self._max_batch_size is None:
            config = await self._call(lambda c: c.get_model_config(self.model, headers=self.headers),
                                      time.monotonic() + self.timeout)
            self._max_batch_size = transport.max_batch_size_from(config)
        return self._max_batch_size

    async def close(self) -> None:
        for client in self._clients.values():
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                pass
        self._clients.clear()

    async def __aenter__(self) -> "AsyncRerankClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _client(self, url: str):
        if url not in self._clients:
            self._clients[url] = transport.make_client(self.protocol, True, url, self.tls, self.timeout)
        return self._clients[url]

    async def _call(self, fn, deadline: float):
        attempt, avoid = 0, None
        while True:
            url = self.pool.pick(avoid)
            try:
                return await fn(self._client(url))
            except Exception as exc:  # noqa: BLE001
                err = transport.translate(exc)
            retryable = isinstance(err, RETRYABLE) or (isinstance(err, ModelNotReadyError) and len(self.pool.urls) > 1)
            if not retryable or attempt >= self.retries:
                raise err
            self.pool.mark_down(url)
            avoid = url
            pause = backoff_seconds(attempt)
            if time.monotonic() + pause >= deadline:
                raise DeadlineExceededError(f"deadline of {self.timeout}s passed after {attempt + 1} tries: {err}")
            await asyncio.sleep(pause)
            attempt += 1

    async def _infer(self, chunk: planning.Chunk, deadline: float, limiter: asyncio.Semaphore) -> Dict:
        async def call(client):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(f"deadline of {self.timeout}s passed")
            inputs = transport.make_inputs(self.protocol, True, chunk.queries, chunk.passages)
            outputs = transport.make_outputs(self.protocol, True)
            kwargs = {"client_timeout": remaining} if self.protocol == "grpc" else {}
            result = await asyncio.wait_for(
                client.infer(self.model, inputs, outputs=outputs, headers=self.headers, **kwargs), remaining)
            return transport.read_outputs(result)
        async with limiter:
            return await self._call(call, deadline)

    async def _score_pairs(self, pairs, documents, timeout: Optional[float] = None) -> List[RerankResult]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        chunks = planning.plan_chunks(pairs, await self.max_batch_size())
        limiter = asyncio.Semaphore(self.max_concurrency)
        try:
            outputs = await asyncio.gather(*(self._infer(c, deadline, limiter) for c in chunks))
        except asyncio.TimeoutError as err:
            raise DeadlineExceededError(f"deadline of {self.timeout}s passed") from err
        return planning.assemble(len(pairs), list(zip(chunks, outputs)), documents)
