"""What the sync and async clients share: one constructor and configuration, input checks,
chunk planning, the request tensors and the retry decision. The two subclasses add only how
they wait (threads or asyncio) and their public methods, which have the same names and
arguments."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import contract, planning, tritonclient_adapter
from .endpoints import RETRYABLE, EndpointPool, Resolver, backoff_seconds, resolve_addresses, split_dns_url
from .errors import DeadlineExceededError, InvalidInputError, ModelNotReadyError, RerankError
from .server_limits import ServerLimits, server_limits_from
from .tritonclient_adapter import TLSOptions

Pair = Tuple[bytes, bytes]


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client is built from; RerankClient and AsyncRerankClient take the same.

    url: "host:port", a list of them (failover), or "dns:///host:port" for every address of
    host, re-resolved every endpoints.DNS_REFRESH_S (the chart's headless Service).
    token_counter(text) -> tokens, e.g. `lengths.token_counter(tokenizer_json)`, packs requests
    by real pair lengths (less padding) under the server's published rules; without it, UTF-8
    byte length is the estimate."""

    url: Union[str, Sequence[str]] = "localhost:8001"
    protocol: str = "grpc"
    model: str = "rerank"
    timeout: float = 30.0  # seconds for one call, retries included
    retries: int = 3
    max_concurrency: int = 4  # requests of one call in flight at once
    tls: Optional[TLSOptions] = None
    headers: Dict[str, str] = field(default_factory=dict)
    token_counter: Optional[Callable[[str], int]] = None
    resolver: Resolver = resolve_addresses


class ClientBase:
    ASYNCIO = False  # which tritonclient flavour the subclass drives

    def __init__(self, url: Union[str, Sequence[str]] = "localhost:8001", protocol: str = "grpc",
                 model: str = "rerank", timeout: float = 30.0, retries: int = 3, max_concurrency: int = 4,
                 tls: Optional[TLSOptions] = None, headers: Optional[Dict[str, str]] = None,
                 token_counter: Optional[Callable[[str], int]] = None, resolver: Resolver = resolve_addresses,
                 config: Optional[ClientConfig] = None) -> None:
        """Keyword arguments, or one ClientConfig (shared by sync and async clients)."""
        if config is None:
            config = ClientConfig(url, protocol, model, timeout, retries, max_concurrency, tls,
                                  dict(headers or {}), token_counter, resolver)
        self.config = config
        urls = [config.url] if isinstance(config.url, str) else list(config.url)
        if not urls:
            raise ValueError("url: at least one endpoint is required")
        tritonclient_adapter.module_for(config.protocol, asyncio=self.ASYNCIO)  # validates the protocol early
        discover = split_dns_url(urls[0]) if len(urls) == 1 else None
        self.protocol, self.model, self.timeout = config.protocol, config.model, config.timeout
        self.retries, self.max_concurrency = config.retries, config.max_concurrency
        self.tls, self.headers = config.tls, dict(config.headers)
        self.pool = EndpointPool([] if discover else urls, discover=discover, resolver=config.resolver)
        self._count = config.token_counter
        self._limits: Optional[ServerLimits] = None  # read from the server once

    @classmethod
    def from_config(cls, config: ClientConfig):
        return cls(config=config)

    @staticmethod
    def _rerank_pairs(query: str, documents: Sequence[str], top_k: Optional[int]) -> List[Pair]:
        pairs = planning.validate_query_documents(query, documents)
        if top_k is not None:
            planning.top([], top_k)  # validates top_k before any I/O
        return pairs

    def _limits_from(self, response) -> ServerLimits:
        self._limits = server_limits_from(response)
        return self._limits

    def _chunks(self, pairs: List[Pair], limits: ServerLimits, long_documents: str = "truncate",
                window_stride: Optional[int] = None) -> List[planning.Chunk]:
        planning.check_sizes(pairs, limits.max_text_bytes)
        if long_documents == "window":
            return self._window_chunks(pairs, limits, window_stride)
        length = None
        if self._count is not None:
            count = self._count

            def length(q: bytes, p: bytes) -> int:
                return limits.pair_tokens(count(q.decode("utf-8")), count(p.decode("utf-8")))
        return planning.plan_chunks(pairs, limits.max_batch_size, length, limits.buckets, limits.class_batch)

    def _window_chunks(self, pairs: List[Pair], limits: ServerLimits, stride: Optional[int]) -> List[planning.Chunk]:
        """Requests of at most max_windows_per_request windows by estimate (token_counter, else
        UTF-8 bytes: an XLM-R token is at least one byte, so bytes over-count)."""
        if None in (limits.max_windows_per_request, limits.max_length, limits.query_max_length,
                    limits.special_tokens_per_pair):
            raise ModelNotReadyError("the server does not publish window limits: it predates window mode "
                                     "(re-export it)")
        count = self._count or (lambda text: len(text.encode("utf-8")) + 1)
        windows = [planning.estimate_windows(count(q.decode("utf-8")), count(p.decode("utf-8")), limits.max_length,
                                             limits.query_max_length, limits.special_tokens_per_pair, stride)
                   for q, p in pairs]
        return planning.plan_window_chunks(pairs, windows, limits.max_batch_size, limits.max_windows_per_request,
                                           stride)

    def _model_for(self, chunk: planning.Chunk) -> str:
        return self.model if chunk.strides is None else contract.WINDOW_ENSEMBLE

    def _request(self, chunk: planning.Chunk):
        inputs = tritonclient_adapter.make_inputs(self.protocol, self.ASYNCIO, chunk.queries, chunk.passages,
                                                  chunk.strides)
        outputs = tritonclient_adapter.make_outputs(self.protocol, self.ASYNCIO, window=chunk.strides is not None)
        return inputs, outputs

    @staticmethod
    def _should_split(err: BaseException, chunk: planning.Chunk) -> bool:
        """The server refused a window-mode request for holding too many windows (our estimate
        was low): it is split in two and each half sent, instead of failing the call."""
        return (chunk.strides is not None and len(chunk.rows) > 1 and isinstance(err, InvalidInputError)
                and contract.WINDOWS_PER_REQUEST_ERROR in str(err))

    def _infer_kwargs(self, remaining: float) -> Dict[str, float]:
        """gRPC carries the remaining deadline to the server; HTTP's timeouts are per client."""
        return {"client_timeout": remaining} if self.protocol == "grpc" else {}

    def _new_client(self, url: str):
        return tritonclient_adapter.make_client(self.protocol, self.ASYNCIO, url, self.tls, self.timeout)

    def _retry_pause(self, exc: BaseException, url: str, attempt: int, deadline: float, budget: float) -> float:
        """After a failed attempt: the pause before the next one, or raise the typed error.
        Retried: connection failures, UNAVAILABLE and queue-full (a rerank is a pure function,
        so repeating it is safe), and a missing model when another endpoint may have it."""
        err: RerankError = tritonclient_adapter.translate(exc)
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
