"""AsyncRerankClient: the same API as RerankClient on tritonclient's asyncio clients."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import planning, transport
from .base import ClientBase
from .errors import DeadlineExceededError
from .results import RerankResult
from .transport import TLSOptions


class AsyncRerankClient(ClientBase):
    def __init__(self, url: Union[str, Sequence[str]] = "localhost:8001", protocol: str = "grpc",
                 model: str = "rerank", timeout: float = 30.0, retries: int = 3,
                 max_concurrency: int = 4, tls: Optional[TLSOptions] = None,
                 headers: Optional[Dict[str, str]] = None,
                 length_function: Optional[Callable[[str, str], int]] = None,
                 resolver: transport.Resolver = transport.resolve_addresses) -> None:
        """url: "host:port", a list of them, or "dns:///host:port" for every address of host,
        re-resolved every transport.DNS_REFRESH_S (the chart's headless Service)."""
        super().__init__(url, protocol, model, timeout, retries, max_concurrency, tls, headers,
                         length_function, resolver=resolver, asyncio=True)
        self._clients: Dict[str, object] = {}

    async def rerank(self, query: str, documents: Sequence[str], top_k: Optional[int] = None,
                     return_documents: bool = False, timeout: Optional[float] = None) -> List[RerankResult]:
        """Results sorted by score (best first); `index` is the document's input position."""
        pairs = self._rerank_pairs(query, documents, top_k)
        if not pairs:
            return []
        results = await self._score_pairs(pairs, list(documents) if return_documents else None, timeout)
        return planning.top(results, top_k)

    async def score(self, pairs: Sequence[Tuple[str, str]], timeout: Optional[float] = None) -> List[float]:
        """sigmoid scores in input order."""
        checked = planning.validate_pairs(pairs)
        return [r.score for r in await self._score_pairs(checked, None, timeout)] if checked else []

    async def ready(self) -> bool:
        for url in self.pool.urls:
            try:
                if await self._client(url).is_model_ready(self.model, headers=self.headers):
                    return True
            except Exception:  # noqa: BLE001 - not ready is the answer
                continue
        return False

    async def max_batch_size(self) -> int:
        return (await self.server_limits()).max_batch_size

    async def server_limits(self) -> transport.ServerLimits:
        """max_batch_size, max_length, length buckets and the per-text byte limit, read once."""
        if self._limits is None:
            config = await self._call(lambda c: c.get_model_config(self.model, headers=self.headers),
                                      time.monotonic() + self.timeout, self.timeout)
            self._limits = transport.server_limits_from(config)
        return self._limits

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

    async def _call(self, fn, deadline: float, budget: float):
        attempt, avoid = 0, None
        while True:
            url = self.pool.pick(avoid)
            try:
                return await fn(self._client(url))
            except Exception as exc:  # noqa: BLE001 - typed by _retry_pause
                pause = self._retry_pause(exc, url, attempt, deadline, budget)
            avoid = url
            await asyncio.sleep(pause)
            attempt += 1

    async def _infer(self, chunk: planning.Chunk, deadline: float, budget: float, limiter: asyncio.Semaphore) -> Dict:
        async def call(client):
            remaining = self._remaining(deadline, budget)
            inputs, outputs = self._request(chunk)
            kwargs = {"client_timeout": remaining} if self.protocol == "grpc" else {}
            result = await asyncio.wait_for(
                client.infer(self.model, inputs, outputs=outputs, headers=self.headers, **kwargs), remaining)
            return transport.read_outputs(result)
        async with limiter:
            return await self._call(call, deadline, budget)

    async def _score_pairs(self, pairs, documents, timeout: Optional[float] = None) -> List[RerankResult]:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        chunks = self._chunks(pairs, await self.server_limits())
        limiter = asyncio.Semaphore(self.max_concurrency)
        try:
            outputs = await asyncio.gather(*(self._infer(c, deadline, budget, limiter) for c in chunks))
        except asyncio.TimeoutError as err:
            raise DeadlineExceededError(f"deadline of {budget}s passed") from err
        return planning.assemble(len(pairs), list(zip(chunks, outputs)), documents)
