"""RerankClient: blocking API; the requests of one call run concurrently on a small thread pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

from . import planning, tritonclient_adapter
from .base import ClientBase, Job
from .errors import DeadlineExceededError, RerankError
from .results import RerankResult
from .server_limits import ServerLimits, server_limits_from
from .signatures import same_parameters
from .tritonclient_adapter import Outputs, SyncTritonClient

T = TypeVar("T")


DEADLINE_GRACE_S = 0.1
# Threads shared by all calls of one client. Each call keeps at most max_concurrency requests in
# flight (the same meaning as the async client); this only bounds threads when many callers share
# a client. Beyond it calls queue, and each still gives up at its own deadline.
POOL_THREADS_PER_CONCURRENCY = 8
MIN_POOL_THREADS = 16


class RerankClient(ClientBase):
    ASYNCIO = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments of ClientBase (url, protocol, model, timeout, retries, max_concurrency,
        tls, headers, token_counter, resolver) or config=ClientConfig(...)."""
        super().__init__(*args, **kwargs)
        self._local = threading.local()  # tritonclient's HTTP client is not thread-safe
        self._executor = ThreadPoolExecutor(
            max_workers=max(MIN_POOL_THREADS, POOL_THREADS_PER_CONCURRENCY * self.max_concurrency),
            thread_name_prefix="rerank",
        )
        self._clients: List[SyncTritonClient] = []
        self._clients_lock = threading.Lock()

    @same_parameters(ClientBase._rerank_job)
    def rerank(self, *args: Any, **kwargs: Any) -> List[RerankResult]:
        job = self._rerank_job(*args, **kwargs)
        return planning.top(self._score(job), job.top_k)

    @same_parameters(ClientBase._score_job)
    def score(self, *args: Any, **kwargs: Any) -> List[float]:
        return [r.score for r in self._score(self._score_job(*args, **kwargs))]

    @same_parameters(ClientBase._score_details_job)
    def score_details(self, *args: Any, **kwargs: Any) -> List[RerankResult]:
        return self._score(self._score_details_job(*args, **kwargs))

    def ready(self) -> bool:
        self._check_open()
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
        return self._server_limits(*self._start(None))

    def _server_limits(self, deadline: float, budget: float) -> ServerLimits:
        if self._limits is None:
            self._limits = server_limits_from(self._call(self._get_config, deadline, budget))
        return self._limits

    def close(self) -> None:
        """Close every connection this client opened, from any thread, and drop every reference
        to them now: a tritonclient object still held by a thread-local would be closed again by
        its __del__ during interpreter shutdown, after grpc's module is gone (an ignored
        exception printed on every exit). Later calls raise ClientClosedError."""
        self._closed = True
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

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        self.close()

    def _client(self, url: str) -> SyncTritonClient:
        clients: Optional[Dict[str, SyncTritonClient]] = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            clients[url] = tritonclient_adapter.make_sync_client(self.protocol, url, self.tls, self.timeout)
            with self._clients_lock:
                self._clients.append(clients[url])
        return clients[url]

    def _drop_client(self, url: str, client: SyncTritonClient) -> None:
        clients: Dict[str, SyncTritonClient] = getattr(self._local, "clients", {})
        if clients.get(url) is client:
            del clients[url]
        with self._clients_lock:
            if client in self._clients:
                self._clients.remove(client)
        try:
            client.close()
        except Exception:  # noqa: BLE001 - it is being discarded
            pass

    def _call(self, fn: Callable[[SyncTritonClient, float], T], deadline: float, budget: float) -> T:
        """fn(client, remaining) on an endpoint, bounded by the call's deadline; retryable
        failures go to the next endpoint after a backoff, within `retries` and the deadline."""
        attempt, avoid = 0, None
        while True:
            url = self._picked(self.pool.pick(avoid), avoid)
            client: Optional[SyncTritonClient] = None
            try:
                client = self._client(url)
                remaining = self._remaining(deadline, budget)
                with tritonclient_adapter.deadline_guard(self.protocol, False, remaining):
                    return fn(client, remaining)
            except tritonclient_adapter.HttpDeadline as exc:
                # The HTTP connection was interrupted mid-exchange: never reuse it.
                if client is not None:
                    self._drop_client(url, client)
                raise DeadlineExceededError(f"deadline of {budget}s passed waiting for {url}: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - typed by _retry_pause
                pause = self._retry_pause(exc, url, attempt, deadline, budget)
            avoid = url
            time.sleep(pause)
            attempt += 1

    def _infer(self, chunk: planning.Chunk, deadline: float, budget: float) -> Outputs:
        def call(client: SyncTritonClient, remaining: float) -> Outputs:
            return self._outputs(chunk, self._send(client, chunk, remaining))

        try:
            return self._call(call, deadline, budget)
        except RerankError as err:
            if not self._should_split(err, chunk):
                raise
        first, second = planning.split(chunk)
        return planning.join_outputs(self._infer(first, deadline, budget), self._infer(second, deadline, budget))

    def _score(self, job: Job) -> List[RerankResult]:
        """The job's results in input order. Its requests run on the shared threads, at most
        max_concurrency of them at once; the first failure ends the call."""
        if not job.pairs:
            return []
        deadline, budget = self._start(job.timeout)
        limits = self._server_limits(deadline, budget)
        deadline, budget = self._lengthened(job, limits, deadline, budget)
        queued, cut = self._plan(job, limits)
        in_flight: Dict[Future[Outputs], planning.Chunk] = {}
        answered: List[Tuple[planning.Chunk, Outputs]] = []

        def submit_next() -> None:
            while queued and len(in_flight) < self.max_concurrency:
                chunk = queued.pop(0)
                in_flight[self._executor.submit(self._infer, chunk, deadline, budget)] = chunk

        def give_up() -> None:
            queued.clear()
            for pending in in_flight:
                pending.cancel()  # queued ones never start; running ones end at the deadline

        submit_next()
        while in_flight:
            # Bounded wait: a chunk still queued behind other callers' work (every shared thread
            # busy) must not hold the caller past its deadline. The grace lets an in-flight
            # call's own deadline error arrive typed.
            done, _ = wait_futures(
                list(in_flight),
                timeout=max(0.0, deadline - time.monotonic()) + DEADLINE_GRACE_S,
                return_when=FIRST_COMPLETED,
            )
            if not done:
                give_up()
                raise DeadlineExceededError(
                    f"deadline of {budget}s passed with {len(in_flight)} requests unanswered (queued or in flight)"
                )
            for future in done:
                chunk = in_flight.pop(future)
                try:
                    answered.append((chunk, future.result()))
                except BaseException:
                    # One failed chunk ends the call: the rest are not sent (the answer could not
                    # be complete) and the first error is raised as it is (typed by _call).
                    give_up()
                    raise
            submit_next()
        return planning.assemble(len(job.pairs), answered, job.documents, cut)
