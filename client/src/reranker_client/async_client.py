"""AsyncRerankClient: the same API as RerankClient on tritonclient's asyncio clients.

tritonclient's asyncio clients belong to the event loop they were created on (gRPC's aio
channel and aiohttp's session bind to it), and a loop's end leaves them unusable. So one
AsyncRerankClient keeps its tritonclient clients per event loop: shared across two
`asyncio.run` calls (or loops in two threads) it opens new connections on each loop, and each
loop's connections are closed when that loop shuts down: asyncio.run cancels every pending task
before closing its loop (asyncio.runners.Runner.close -> _cancel_all_tasks), and a small task
per loop waits for exactly that cancellation and then awaits the clients' close(). Without it,
aiohttp prints "Unclosed client session" at exit for every loop that used HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Type, TypeVar

from . import planning, tritonclient_adapter
from .base import ClientBase, Job
from .errors import DeadlineExceededError, RerankError
from .results import RerankResult
from .server_limits import ServerLimits, server_limits_from
from .signatures import same_parameters
from .sync_client import DEADLINE_GRACE_S
from .tritonclient_adapter import AsyncTritonClient, Outputs

T = TypeVar("T")


@dataclass
class _LoopClients:
    """The tritonclient clients of one event loop, and the task that closes them when the loop
    shuts down (or when the AsyncRerankClient is closed)."""

    loop: asyncio.AbstractEventLoop
    clients: Dict[str, AsyncTritonClient] = field(default_factory=dict)
    closer: Optional[asyncio.Task[None]] = None


class AsyncRerankClient(ClientBase):
    ASYNCIO = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments of ClientBase, or config=ClientConfig(...): the same as RerankClient."""
        super().__init__(*args, **kwargs)
        self._loops: Dict[asyncio.AbstractEventLoop, _LoopClients] = {}
        self._loops_lock = threading.Lock()  # loops in several threads may share one client

    @same_parameters(ClientBase._rerank_job)
    async def rerank(self, *args: Any, **kwargs: Any) -> List[RerankResult]:
        job = self._rerank_job(*args, **kwargs)
        return planning.top(await self._score(job), job.top_k)

    @same_parameters(ClientBase._score_job)
    async def score(self, *args: Any, **kwargs: Any) -> List[float]:
        return [r.score for r in await self._score(self._score_job(*args, **kwargs))]

    @same_parameters(ClientBase._score_details_job)
    async def score_details(self, *args: Any, **kwargs: Any) -> List[RerankResult]:
        return await self._score(self._score_details_job(*args, **kwargs))

    async def ready(self) -> bool:
        self._check_open()
        for url in self.pool.urls:
            try:
                if await self._client(url).is_model_ready(self.model, headers=self.headers):
                    return True
            except Exception:  # noqa: BLE001 - not ready is the answer
                continue
        return False

    async def max_batch_size(self) -> int:
        return (await self.server_limits()).max_batch_size

    async def server_limits(self) -> ServerLimits:
        """Every limit the served ensemble publishes, read once."""
        return await self._server_limits(*self._start(None))

    async def _server_limits(self, deadline: float, budget: float) -> ServerLimits:
        if self._limits is None:
            self._limits = server_limits_from(await self._call(self._get_config, deadline, budget))
        return self._limits

    async def close(self) -> None:
        """Close every connection, on every event loop it was used on; later calls raise
        ClientClosedError."""
        self._closed = True
        with self._loops_lock:
            bound, self._loops = list(self._loops.values()), {}
        here = asyncio.get_running_loop()
        for entry in bound:
            if entry.loop is here:
                await _stop(entry.closer)  # its finally closes this loop's clients
            else:
                _stop_soon(entry)

    def _close_soon(self) -> None:
        """close() for synchronous callers (an adapter's close()): each loop's clients are closed
        on their own loop, as soon as it runs (at once where it is running in another thread or
        is this thread's loop; at its shutdown at the latest). Later calls raise ClientClosedError."""
        self._closed = True
        with self._loops_lock:
            bound, self._loops = list(self._loops.values()), {}
        for entry in bound:
            _stop_soon(entry)

    async def __aenter__(self) -> AsyncRerankClient:
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        await self.close()

    def _client(self, url: str) -> AsyncTritonClient:
        entry = self._bound(asyncio.get_running_loop())
        if url not in entry.clients:
            entry.clients[url] = tritonclient_adapter.make_async_client(self.protocol, url, self.tls, self.timeout)
        return entry.clients[url]

    def _bound(self, loop: asyncio.AbstractEventLoop) -> _LoopClients:
        """This loop's clients; the first use on a loop starts the task that closes them when
        the loop shuts down. Loops already closed are forgotten (their clients were closed by
        that task at shutdown)."""
        with self._loops_lock:
            for gone in [other for other in self._loops if other.is_closed()]:
                del self._loops[gone]
            entry = self._loops.get(loop)
            if entry is None:
                entry = self._loops[loop] = _LoopClients(loop)
            if entry.closer is None or entry.closer.done():
                # First use on this loop, or its closer was cancelled by someone else (a framework
                # cancelling every task) while the loop runs on: the new clients need one too.
                entry.closer = loop.create_task(_close_at_shutdown(entry))
            return entry

    async def _call(self, fn: Callable[[AsyncTritonClient, float], Awaitable[T]], deadline: float, budget: float) -> T:
        """fn(client, remaining) on an endpoint, bounded by the call's deadline; retryable
        failures go to the next endpoint after a backoff, within `retries` and the deadline."""
        attempt, avoid = 0, None
        while True:
            url = self._picked(self.pool.pick(avoid), avoid)
            try:
                remaining = self._remaining(deadline, budget)
                return await asyncio.wait_for(fn(self._client(url), remaining), remaining)
            except Exception as exc:  # noqa: BLE001 - typed by _retry_pause (a timeout: DeadlineExceededError)
                pause = self._retry_pause(exc, url, attempt, deadline, budget)
            avoid = url
            await asyncio.sleep(pause)
            attempt += 1

    async def _infer(
        self, chunk: planning.Chunk, deadline: float, budget: float, limiter: asyncio.Semaphore
    ) -> Outputs:
        async def call(client: AsyncTritonClient, remaining: float) -> Outputs:
            return self._outputs(chunk, await self._send(client, chunk, remaining))

        try:
            async with limiter:
                return await self._call(call, deadline, budget)
        except RerankError as err:
            if not self._should_split(err, chunk):
                raise
        first, second = planning.split(chunk)  # the limiter is released: the halves take it in turn
        return planning.join_outputs(
            await self._infer(first, deadline, budget, limiter), await self._infer(second, deadline, budget, limiter)
        )

    async def _score(self, job: Job) -> List[RerankResult]:
        """The job's results in input order. Its requests run concurrently, at most
        max_concurrency of them at once; the first failure cancels the others."""
        if not job.pairs:
            return []
        deadline, budget = self._start(job.timeout)
        limits = await self._server_limits(deadline, budget)
        deadline, budget = self._lengthened(job, limits, deadline, budget)
        chunks, cut = self._plan(job, limits)
        limiter = asyncio.Semaphore(self.max_concurrency)  # per call: the one meaning of max_concurrency
        outputs = await _all_or_nothing(
            [self._infer(c, deadline, budget, limiter) for c in chunks], deadline + DEADLINE_GRACE_S, budget
        )
        return planning.assemble(len(job.pairs), list(zip(chunks, outputs)), job.documents, cut)


async def _close_at_shutdown(entry: _LoopClients) -> None:
    """Waits until cancelled (the loop shutting down, or close()), then closes the loop's clients
    on that loop, while it can still run them."""
    try:
        await asyncio.Event().wait()
    finally:
        clients, entry.clients = list(entry.clients.values()), {}
        for client in clients:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


async def _stop(task: Optional[asyncio.Task[None]]) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _stop_soon(entry: _LoopClients) -> None:
    """Cancel a loop's closer task from any thread; it closes the clients on its loop."""
    task = entry.closer
    if task is None or task.done() or entry.loop.is_closed():
        return
    try:
        entry.loop.call_soon_threadsafe(task.cancel)
    except RuntimeError:  # the loop closed meanwhile: its shutdown already ran the closer
        pass


async def _all_or_nothing(coroutines: Iterable[Awaitable[T]], deadline: float, budget: float) -> List[T]:
    """Every result in order, or the first failure with every other request cancelled (and
    awaited, so none outlives the call). asyncio.gather would leave the others running after
    one fails. Cancelling the caller cancels them all too; the deadline bounds waiting for the
    concurrency limiter as well as the requests."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, pending = await asyncio.wait(
            tasks, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_EXCEPTION
        )
        failed = [err for err in (t.exception() for t in tasks if t.done() and not t.cancelled()) if err is not None]
        if failed:
            raise failed[0]
        if pending:
            raise DeadlineExceededError(f"deadline of {budget}s passed with {len(pending)} requests unanswered")
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()  # no-op for finished ones
        await asyncio.gather(*tasks, return_exceptions=True)
