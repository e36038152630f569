"""What the sync and async clients share: one constructor and configuration, the parameters and
input checks of each call, a call's deadline, chunk planning, the requests and the retry
decision. The two subclasses add only how they wait (threads or asyncio): their public methods
have the same names, and the calls take their parameters from here."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import contract, planning, tritonclient_adapter
from .endpoints import (
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    RETRYABLE,
    EndpointPool,
    Resolver,
    backoff_seconds,
    bare_url,
    resolve_addresses,
    split_dns_url,
)
from .errors import ClientClosedError, DeadlineExceededError, InvalidInputError, ModelNotReadyError, RerankError
from .server_limits import ServerLimits
from .tritonclient_adapter import InferKwargs, InferResult, Outputs, TLSOptions, TritonCalls

Pair = Tuple[bytes, bytes]
ClientT = TypeVar("ClientT", bound="ClientBase")
T = TypeVar("T")

# Standard logging: an endpoint marked down (once per rest, not per failed request) and a call
# that gives up at WARNING; each retry and failover at INFO (under overload retries are routine
# and numerous: WARNING would flood the log and cost CPU when it matters most). An application
# sees them with logging.basicConfig(); nothing is printed otherwise.
logger = logging.getLogger("reranker_client")

# Without a tokenizer, a text's tokens are estimated from its UTF-8 bytes. XLM-RoBERTa's
# SentencePiece averages about 4 bytes per token on Latin-script text and about 3 on CJK (3-byte
# characters, ~1 token each); 3 errs towards more tokens, so a long text still reaches the
# server's max_length in the estimate. The estimate only groups similar lengths together: the
# server tokenizes for real.
BYTES_PER_TOKEN_ESTIMATE = 3


def estimated_tokens(text: bytes) -> int:
    return math.ceil(len(text) / BYTES_PER_TOKEN_ESTIMATE)


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
    # Seconds for one call, retries included. None: DEFAULT_TIMEOUT_S, lengthened for a call that
    # reaches a longer length class by what the server publishes (ServerLimits.default_budget_s).
    # A number set here (or per call) is the deadline, never lengthened.
    timeout: Optional[float] = None
    retries: int = 3
    # One meaning in both clients: the most Triton requests ONE call (rerank/score) has in
    # flight at once. Concurrent calls each get their own; the sync client's threads are shared.
    max_concurrency: int = 4
    tls: Optional[TLSOptions] = None
    headers: Dict[str, str] = field(default_factory=dict)
    token_counter: Optional[Callable[[str], int]] = None
    resolver: Resolver = resolve_addresses
    # Pause before retry n (seconds): between half and all of min(backoff_max, backoff_base * 2**n)
    # (endpoints.backoff_seconds). Raise both when many callers share an overloaded server.
    backoff_base: float = DEFAULT_BACKOFF_BASE_S
    backoff_max: float = DEFAULT_BACKOFF_MAX_S


@dataclass(frozen=True)
class Job:
    """One rerank/score call once its input is checked: the pairs to score and how."""

    pairs: List[Pair]
    documents: Optional[List[str]] = None  # given back in the results (rerank's return_documents)
    timeout: Optional[float] = None  # seconds for the whole call; None: the client's timeout
    long_documents: str = "truncate"
    window_stride: Optional[int] = None
    top_k: Optional[int] = None  # rerank's: how many of the best results it returns (None: all)
    strict: bool = False  # refuse instead of degrading: a text over the byte limit, a document over the window limit
    max_length: Optional[int] = None  # the call's own tokens per pair (None: the server's max_length)


# A call's deadline when the caller sets none, for requests of the first length class (whose
# queue timeout is export/settings.py QUEUE_TIMEOUT_US): the server's 5 s queue wait, the model's
# compute and the transport, with room for retries. A call reaching a longer class gets more, by
# the server's published queue timeouts (ServerLimits.default_budget_s).
DEFAULT_TIMEOUT_S = 30.0


class ClientBase:
    ASYNCIO = False  # which tritonclient flavour the subclass drives

    def __init__(
        self,
        url: Union[str, Sequence[str]] = "localhost:8001",
        protocol: str = "grpc",
        model: str = "rerank",
        timeout: Optional[float] = None,
        retries: int = 3,
        max_concurrency: int = 4,
        tls: Optional[TLSOptions] = None,
        headers: Optional[Dict[str, str]] = None,
        token_counter: Optional[Callable[[str], int]] = None,
        resolver: Resolver = resolve_addresses,
        config: Optional[ClientConfig] = None,
        backoff_base: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max: float = DEFAULT_BACKOFF_MAX_S,
    ) -> None:
        """Keyword arguments, or one ClientConfig (shared by sync and async clients)."""
        if config is None:
            config = ClientConfig(
                url,
                protocol,
                model,
                timeout,
                retries,
                max_concurrency,
                tls,
                dict(headers or {}),
                token_counter,
                resolver,
                backoff_base,
                backoff_max,
            )
        if config.max_concurrency < 1:
            raise InvalidInputError(f"max_concurrency: must be >= 1, got {config.max_concurrency}")
        if config.retries < 0 or (config.timeout is not None and config.timeout <= 0):
            raise InvalidInputError(f"retries must be >= 0 and timeout > 0, got {config.retries}, {config.timeout}")
        if not (0 < config.backoff_base <= config.backoff_max):
            raise InvalidInputError(
                f"backoff_base, backoff_max: need 0 < backoff_base <= backoff_max, got "
                f"{config.backoff_base}, {config.backoff_max}"
            )
        self.config = config
        self._closed = False
        given = [config.url] if isinstance(config.url, str) else list(config.url)
        urls = [bare_url(u, config.tls is not None) for u in given]
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
    def from_config(cls: Type[ClientT], config: ClientConfig) -> ClientT:
        return cls(config=config)

    # The parameters and docstrings of rerank(), score() and score_details(), declared once here
    # for both clients (signatures.same_parameters): each checks the call's input, before any
    # I/O, and returns its Job.
    def _rerank_job(
        self,
        query: str,
        documents: Sequence[str],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        timeout: Optional[float] = None,
        long_documents: str = "truncate",
        window_stride: Optional[int] = None,
        strict: bool = False,
        max_length: Optional[int] = None,
    ) -> Job:
        """Results sorted by score (best first); `index` is the document's input position.

        long_documents="truncate" (default): FlagReranker's scoring, the document cut to fit
        max_length. "window": a long document is scored by overlapping windows of whole words
        (`window_stride` passage tokens apart; default half a window) and gets its best window's
        score; `span` gives that window's character offsets in the document. A document needing
        more than the server's max_windows_per_passage windows is scored on its first ones and
        comes back `truncated` (`windows` = the limit).

        A text over the server's byte limit (server_limits().max_text_bytes) is cut to its head
        on a UTF-8 boundary before sending and reported `truncated` (the server reads only the
        head). strict=True raises InvalidInputError for either instead of degrading.

        max_length: this call's own tokens per query+document pair, from the server's
        min_request_max_length up to its max_length (None: the server's max_length), applied by
        the server's tokenizer with FlagReranker's rules (`compute_score(max_length=N)`: the query
        cut to N * 3 // 4 tokens, the pair to N); in window mode, each window's pair length."""
        planning.check_mode(long_documents, window_stride)
        planning.check_max_length(max_length)
        pairs = planning.validate_query_documents(query, documents)
        if top_k is not None:
            planning.top([], top_k)  # validates top_k
        kept = list(documents) if return_documents else None
        return Job(pairs, kept, timeout, long_documents, window_stride, top_k, bool(strict), max_length)

    def _score_job(
        self,
        pairs: Sequence[Tuple[str, str]],
        timeout: Optional[float] = None,
        strict: bool = False,
        max_length: Optional[int] = None,
    ) -> Job:
        """sigmoid scores in input order (a text over the byte limit: see rerank's `strict`;
        max_length: rerank's)."""
        return self._score_details_job(pairs, timeout, strict=strict, max_length=max_length)

    def _score_details_job(
        self,
        pairs: Sequence[Tuple[str, str]],
        timeout: Optional[float] = None,
        long_documents: str = "truncate",
        window_stride: Optional[int] = None,
        strict: bool = False,
        max_length: Optional[int] = None,
    ) -> Job:
        """Full results (score, logit, tokens, truncated, span) in input order (a text over the
        byte limit: see rerank's `strict`; max_length: rerank's)."""
        planning.check_mode(long_documents, window_stride)
        planning.check_max_length(max_length)
        return Job(
            planning.validate_pairs(pairs),
            None,
            timeout,
            long_documents,
            window_stride,
            strict=bool(strict),
            max_length=max_length,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"this {type(self).__name__} was closed; create a new one")

    def _start(self, timeout: Optional[float]) -> Tuple[float, float]:
        """(deadline, budget) of a call that starts now: `timeout` seconds, the client's, or
        DEFAULT_TIMEOUT_S (lengthened by `_lengthened` once the server's limits are known)."""
        self._check_open()
        budget = timeout if timeout is not None else self.timeout if self.timeout is not None else DEFAULT_TIMEOUT_S
        return time.monotonic() + budget, budget

    def _lengthened(self, job: Job, limits: ServerLimits, deadline: float, budget: float) -> Tuple[float, float]:
        """The call's (deadline, budget) once the server's limits are read: unchanged when the
        caller set a timeout (per call or on the client); otherwise the default budget for the
        longest length class the call can reach (ServerLimits.default_budget_s)."""
        if job.timeout is not None or self.timeout is not None:
            return deadline, budget
        derived = limits.default_budget_s(budget, job.max_length)
        return deadline + (derived - budget), derived

    def _chunks(
        self,
        pairs: List[Pair],
        limits: ServerLimits,
        long_documents: str = "truncate",
        window_stride: Optional[int] = None,
        strict: bool = False,
    ) -> List[planning.Chunk]:
        """Packs by the server's published rules (query share, special tokens, max_length,
        buckets, length classes): with the caller's tokenizer when given, else with byte-estimated
        token counts. Only an older server that publishes no rules gets plain byte lengths."""
        planning.check_sizes(pairs, limits.max_text_bytes)
        if long_documents == "window":
            return self._window_chunks(pairs, limits, window_stride, strict)
        length: Optional[Callable[[bytes, bytes], int]] = None
        if self._count is not None:
            count = self._count

            def counted(q: bytes, p: bytes) -> int:
                return limits.pair_tokens(count(q.decode("utf-8")), count(p.decode("utf-8")))

            length = counted
        elif limits.publishes_pair_rules:
            # Capping at max_length matters: every text longer than max_length costs the server
            # the same, so long documents pack together instead of each widening its own request.
            def estimated(q: bytes, p: bytes) -> int:
                return limits.pair_tokens(estimated_tokens(q), estimated_tokens(p))

            length = estimated
        return planning.plan_chunks(pairs, limits.max_batch_size, length, limits.buckets, limits.class_batch)

    def _window_chunks(
        self, pairs: List[Pair], limits: ServerLimits, stride: Optional[int], strict: bool = False
    ) -> List[planning.Chunk]:
        """Requests of at most max_windows_per_request windows by estimate (token_counter, else
        UTF-8 bytes: an XLM-R token is at least one byte, so bytes over-count). A passage costs
        at most max_windows_per_passage windows: the server scores no more of it."""
        max_windows, max_length = limits.max_windows_per_request, limits.max_length
        query_max_length, special_tokens = limits.query_max_length, limits.special_tokens_per_pair
        if max_windows is None or max_length is None or query_max_length is None or special_tokens is None:
            raise ModelNotReadyError(
                "the server does not publish window limits: it predates window mode (re-export it)"
            )
        count: Callable[[str], int] = self._count or (lambda text: len(text.encode("utf-8")) + 1)
        windows = [
            planning.estimate_windows(
                count(q.decode("utf-8")), count(p.decode("utf-8")), max_length, query_max_length, special_tokens, stride
            )
            for q, p in pairs
        ]
        per_passage = limits.max_windows_per_passage
        if per_passage:
            windows = [min(w, per_passage) for w in windows]
        strict_windows = per_passage if strict else None
        return planning.plan_window_chunks(pairs, windows, limits.max_batch_size, max_windows, stride, strict_windows)

    def _plan(self, job: Job, limits: ServerLimits) -> Tuple[List[planning.Chunk], FrozenSet[int]]:
        """The job's requests, and the rows whose text was cut to the server's byte limit. A call
        with its own max_length is planned by the pairs the server will cut at that length (so it
        packs into the smaller buckets they fill) and sends it with every request."""
        pairs, cut = planning.fit_sizes(job.pairs, limits.max_text_bytes, job.strict)
        own = limits.for_request(job.max_length)
        chunks = self._chunks(pairs, own, job.long_documents, job.window_stride, job.strict)
        if job.max_length is not None:
            chunks = [replace(chunk, max_length=job.max_length) for chunk in chunks]
        return chunks, cut

    def _model_for(self, chunk: planning.Chunk) -> str:
        return self.model if chunk.strides is None else contract.WINDOW_ENSEMBLE

    # The two requests a client sends, to a sync tritonclient or an asyncio one: each returns
    # what that client's call returns (the answer, or an awaitable of it).
    def _get_config(self, client: TritonCalls[Any, Any, T, Any], remaining: float) -> T:
        return client.get_model_config(self.model, headers=self.headers, **self._infer_kwargs(remaining))

    def _send(self, client: TritonCalls[T, Any, Any, Any], chunk: planning.Chunk, remaining: float) -> T:
        window = chunk.strides is not None
        return client.infer(
            self._model_for(chunk),
            tritonclient_adapter.make_inputs(
                self.protocol, self.ASYNCIO, chunk.queries, chunk.passages, chunk.strides, chunk.max_length
            ),
            outputs=tritonclient_adapter.make_outputs(self.protocol, self.ASYNCIO, window=window),
            headers=self.headers,
            **self._infer_kwargs(remaining),
        )

    @staticmethod
    def _outputs(chunk: planning.Chunk, answer: InferResult) -> Outputs:
        outputs = tritonclient_adapter.read_outputs(answer, window=chunk.strides is not None)
        planning.refuse_capped(chunk, outputs)
        return outputs

    @staticmethod
    def _should_split(err: BaseException, chunk: planning.Chunk) -> bool:
        """The server refused a window-mode request for holding too many windows (our estimate
        was low): it is split in two and each half sent, instead of failing the call."""
        return (
            chunk.strides is not None
            and len(chunk.rows) > 1
            and isinstance(err, InvalidInputError)
            and contract.WINDOWS_PER_REQUEST_ERROR in str(err)
        )

    def _infer_kwargs(self, remaining: float) -> InferKwargs:
        """gRPC carries the remaining deadline to the server; HTTP is bounded client-side
        (asyncio.wait_for, or tritonclient_adapter.deadline_guard on sync HTTP)."""
        return {"client_timeout": remaining} if self.protocol == "grpc" else {}

    def _retry_pause(self, exc: BaseException, url: str, attempt: int, deadline: float, budget: float) -> float:
        """After a failed attempt: the pause before the next one, or raise the typed error.
        Retried: connection failures, UNAVAILABLE and queue-full (a rerank is a pure function,
        so repeating it is safe), and a missing model when another endpoint may have it."""
        err: RerankError = tritonclient_adapter.translate(exc)
        if err is not exc:
            err = _naming_endpoint(err, exc, url)
            err.__cause__ = exc  # keep tritonclient's error (and its traceback) for debugging
        retryable = isinstance(err, RETRYABLE) or (isinstance(err, ModelNotReadyError) and len(self.pool.urls) > 1)
        if not retryable:
            raise err
        # The endpoint failed with a transport/availability error: let it rest, whether or not
        # this call tries again. A timeout never gets here (DeadlineExceededError is not retryable).
        if self.pool.mark_down(url):
            logger.warning(
                "endpoint %s marked down for %.1fs: %s: %s", url, self.pool.cooldown_s, type(err).__name__, err
            )
        if attempt >= self.retries:
            logger.warning("giving up after %d tries (retries=%d): %s", attempt + 1, self.retries, err)
            raise err
        pause = backoff_seconds(attempt, self.config.backoff_base, self.config.backoff_max)
        if time.monotonic() + pause >= deadline:
            raise DeadlineExceededError(f"deadline of {budget}s passed after {attempt + 1} tries: {err}") from err
        logger.info("retry %d/%d in %.3fs after %s on %s", attempt + 1, self.retries, pause, type(err).__name__, url)
        return pause

    def _picked(self, url: str, previous: Optional[str]) -> str:
        if previous is not None and url != previous:
            logger.info("failing over from %s to %s", previous, url)
        return url

    def _remaining(self, deadline: float, budget: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"deadline of {budget}s passed")
        return remaining


def _naming_endpoint(err: RerankError, exc: BaseException, url: str) -> RerankError:
    """A transport error says which endpoint failed ("cannot connect to 10.0.0.7:8001:
    Connection refused", "no answer from 10.0.0.7:8001 ..."): with several endpoints, or DNS
    discovery, a bare "[Errno 111] Connection refused" or "TimeoutError" names none."""
    message = str(err)
    if isinstance(err, InvalidInputError) or url in message:
        return err  # the request's own fault, the same on every endpoint
    if isinstance(exc, tritonclient_adapter.TIMEOUT_TYPES):
        message = f"no answer from {url} within the call's deadline"
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"cannot connect to {url}: {exc.strerror}"
    else:
        message = f"{url}: {message}"
    return type(err)(message)
