"""What the three framework adapters share, so they cannot drift apart: the client options they
expose, how an API key becomes a header, which texts are "empty", how results map back to the
caller's list, and the sync/async client pair built from one ClientConfig (ClientOwner)."""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypedDict,
)

from ..async_client import AsyncRerankClient
from ..base import ClientConfig
from ..errors import InvalidInputError
from ..results import RerankResult
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions

# Where an adapter finds its API key when none is given (a gateway in front of Triton that
# checks `authorization: Bearer <key>`). Triton itself checks no key.
API_KEY_ENV = "TRITON_RERANK_API_KEY"
API_KEY_HEADER = "authorization"

# How the server treats a document longer than max_length: "truncate" (FlagReranker's scoring)
# or "window" (score overlapping windows, keep the best). Passed to the client's rerank() only
# when it is not the default.
LongDocuments = Literal["truncate", "window"]
LONG_DOCUMENTS: Tuple[LongDocuments, ...] = ("truncate", "window")
DEFAULT_LONG_DOCUMENTS: LongDocuments = "truncate"


class RerankKwargs(TypedDict, total=False):
    long_documents: str
    strict: bool
    max_length: int


def missing_extra(extra: str, err: ImportError) -> ImportError:
    """An adapter imported without its framework: an ImportError that says which pip extra
    installs it (a bare ModuleNotFoundError names only the missing module)."""
    return ImportError(
        f"reranker_client.integrations.{extra} needs {err.name or 'its framework'}: "
        f'pip install "triton-reranker-client[{extra}]"'
    )


# (caller's position, result or None for an empty text), best first: what the adapters map back.
Ranked = List[Tuple[int, Optional[RerankResult]]]

# An empty, whitespace-only or missing text (a bad PDF parse, an empty chunk) is not sent: the
# client refuses empty text, and a blank passage says nothing about the query. It gets the
# lowest score (0.0, the bottom of the sigmoid range; -inf where a logit is the score) and goes
# after every scored document instead of failing the whole call. This differs on purpose from the
# frameworks' built-in rerankers, which score an empty text like any other (client/README.md).
EMPTY_SCORE = 0.0
EMPTY_LOGIT = float("-inf")

# The ClientConfig fields every adapter has as options of its own, under the same names (all but
# `resolver`, a hook for tests).
CONFIG_OPTIONS = tuple(f.name for f in dataclasses.fields(ClientConfig) if f.name != "resolver")
# The options that describe a connection; a ready client replaces all of them.
CONNECTION_OPTIONS = (*CONFIG_OPTIONS, "api_key")

# Result fields every adapter adds to a document's metadata (LangChain's metadata, LlamaIndex's
# node metadata, Haystack's meta), under these keys; span and windows in window mode only.
META_LOGIT = "rerank_logit"
META_TRUNCATED = "rerank_truncated"
META_SPAN = "rerank_span"
META_WINDOWS = "rerank_windows"
META_KEYS = (META_LOGIT, META_TRUNCATED, META_SPAN, META_WINDOWS)


def result_meta(result: Optional[RerankResult]) -> Dict[str, Any]:
    """The rerank fields of one document's metadata. An empty text (result None): no logit
    (None: metadata is often stored as JSON, which has no -inf), not truncated."""
    if result is None:
        return {META_LOGIT: None, META_TRUNCATED: False}
    meta: Dict[str, Any] = {META_LOGIT: result.logit, META_TRUNCATED: result.truncated}
    if result.span is not None:
        meta[META_SPAN] = list(result.span)
        meta[META_WINDOWS] = result.windows
    return meta


def check_long_documents(value: str) -> str:
    if value not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents: must be one of {LONG_DOCUMENTS}, got {value!r}")
    return value


def rerank_kwargs(long_documents: str, strict: bool = False, max_length: Optional[int] = None) -> RerankKwargs:
    """Only what differs from the client's defaults is passed on. max_length (tokens per pair,
    None: the server's) is checked by the client against the range the server publishes, so a bad
    value is refused there, naming `max_length`, with no second copy of the rule here."""
    kwargs: RerankKwargs = {}
    if long_documents != DEFAULT_LONG_DOCUMENTS:
        kwargs["long_documents"] = long_documents
    if strict:
        kwargs["strict"] = True
    if max_length is not None:
        kwargs["max_length"] = max_length
    return kwargs


def check_client_or_options(given: Mapping[str, Any]) -> None:
    """A ready client and connection options together would leave one of them silently unused."""
    if given.get("client") is not None or given.get("async_client") is not None:
        clash = sorted(k for k in CONNECTION_OPTIONS if k in given and given[k] is not None)
        if clash:
            raise ValueError(f"pass either a ready client or connection options, not both (got {clash})")
    if given.get("client") is not None and not isinstance(given["client"], RerankClient):
        raise TypeError(f"client: expected a RerankClient, got {type(given['client']).__name__}")
    if given.get("async_client") is not None and not isinstance(given["async_client"], AsyncRerankClient):
        raise TypeError(f"async_client: expected an AsyncRerankClient, got {type(given['async_client']).__name__}")


def tls_options(value: Any) -> Optional[TLSOptions]:
    if value is None or isinstance(value, TLSOptions):
        return value
    if isinstance(value, Mapping):
        return TLSOptions(**value)  # TLSOptions rejects unknown keys
    raise TypeError(f"tls: expected TLSOptions or a dict of its fields, got {type(value).__name__}")


def client_config(options: Mapping[str, Any], api_key: Optional[str]) -> ClientConfig:
    """A ClientConfig from an adapter's CONFIG_OPTIONS; an API key becomes a bearer header."""
    headers = dict(options.get("headers") or {})
    if api_key:
        headers[API_KEY_HEADER] = f"Bearer {api_key}"
    return ClientConfig(**{**options, "headers": headers})


def split_empty(texts: Sequence[Optional[str]]) -> Tuple[List[int], List[str], List[int]]:
    """(positions of real texts, those texts, positions of empty ones)."""
    keep: List[int] = []
    kept: List[str] = []
    empty: List[int] = []
    for i, text in enumerate(texts):
        if isinstance(text, str) and text.strip():
            keep.append(i)
            kept.append(text)
        else:
            empty.append(i)
    return keep, kept, empty


def ranked(results: Sequence[RerankResult], keep: List[int], empty: List[int], top_n: Optional[int]) -> Ranked:
    """(caller's position, result or None for an empty text): scored best first, then the empty
    ones in input order, cut to top_n."""
    out: Ranked = [(keep[r.index], r) for r in results]
    out += [(i, None) for i in empty]
    return out if top_n is None else out[:top_n]


def in_caller_terms(err: InvalidInputError, keep: List[int]) -> InvalidInputError:
    """The client names a document by its index in the list it was sent: the non-empty texts.
    The adapter's caller knows its own list (empty documents included): name that position."""
    if err.index is None or not 0 <= err.index < len(keep):
        return err
    position = keep[err.index]
    message = str(err).replace(f"documents[{err.index}]", f"documents[{position}]", 1)
    return InvalidInputError(message, index=position)


@contextmanager
def errors_in_caller_terms(keep: List[int]) -> Iterator[None]:
    """Re-raise a refused input from the block `in_caller_terms` (one place for the sync and the
    async path)."""
    try:
        yield
    except InvalidInputError as err:
        raise in_caller_terms(err, keep) from err


def check_top(top_n: Optional[int], name: str) -> Optional[int]:
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
        raise ValueError(f"{name}: must be an int >= 0 or None, got {top_n!r}")
    return top_n


# Guards the first _get_clients() of every adapter: two threads using a fresh adapter at once
# must build one Clients (and so one client), not one each.
_CREATE_LOCK = threading.Lock()


@dataclass
class Clients:
    """The sync and async clients of one adapter, built lazily (once, whatever the number of
    threads asking at the same moment) from one ClientConfig, or the ready client(s) the caller
    passed (never closed here: the caller owns them). One AsyncRerankClient serves every event
    loop (it keeps connections per loop and closes each loop's at that loop's shutdown)."""

    config: Optional[ClientConfig] = None
    given_sync: Optional[RerankClient] = None
    given_async: Optional[AsyncRerankClient] = None
    _sync: Optional[RerankClient] = None
    _async: Optional[AsyncRerankClient] = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _config(self) -> ClientConfig:
        if self.config is not None:
            return self.config
        given = self.given_sync or self.given_async
        assert given is not None
        return given.config

    def sync(self) -> RerankClient:
        if self.given_sync is not None:
            return self.given_sync
        with self._lock:
            if self._sync is None:
                self._sync = RerankClient.from_config(self._config())
            return self._sync

    def async_(self) -> AsyncRerankClient:
        if self.given_async is not None:
            return self.given_async
        with self._lock:
            if self._async is None:
                self._async = AsyncRerankClient.from_config(self._config())
            return self._async

    def _take(self) -> Tuple[Optional[RerankClient], Optional[AsyncRerankClient]]:
        with self._lock:
            taken = self._sync, self._async
            self._sync = self._async = None
        return taken

    def close(self) -> None:
        """Close both clients built here, from synchronous code: the async one's connections are
        closed on their own event loop (at once if it runs, at its shutdown otherwise)."""
        sync, async_ = self._take()
        if sync is not None:
            sync.close()
        if async_ is not None:
            async_._close_soon()

    async def aclose(self) -> None:
        sync, async_ = self._take()
        if sync is not None:
            sync.close()
        if async_ is not None:
            await async_.close()


class ClientOwner:
    """An adapter's clients: the ready ones it was given, or ones built on first use from its
    CONFIG_OPTIONS (attributes of the same names), which it closes: close() / aclose(), or use
    the adapter as a context manager (`with` / `async with`). After closing, the next use
    builds new clients. The adapter says how its API key is read."""

    if TYPE_CHECKING:
        client: Optional[RerankClient]
        async_client: Optional[AsyncRerankClient]
        _clients: Optional[Clients]

    def _api_key(self) -> Optional[str]:
        raise NotImplementedError

    def _get_clients(self) -> Clients:
        clients = self._clients
        if clients is not None:
            return clients
        with _CREATE_LOCK:
            if self._clients is None:
                config = None
                if self.client is None and self.async_client is None:
                    config = client_config({name: getattr(self, name) for name in CONFIG_OPTIONS}, self._api_key())
                self._clients = Clients(config, self.client, self.async_client)
            return self._clients

    def close(self) -> None:
        """Close the clients this adapter built (a client you passed stays yours), the async one
        included."""
        if self._clients is not None:
            self._clients.close()

    async def _close_async(self) -> None:
        if self._clients is not None:
            await self._clients.aclose()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self._close_async()


def rerank_sync(
    clients: Clients,
    query: str,
    texts: Sequence[Optional[str]],
    top_n: Optional[int],
    long_documents: str,
    strict: bool = False,
    max_length: Optional[int] = None,
) -> Ranked:
    keep, kept, empty = split_empty(texts)
    with errors_in_caller_terms(keep):
        results = (
            clients.sync().rerank(query, kept, top_k=top_n, **rerank_kwargs(long_documents, strict, max_length))
            if kept
            else []
        )
    return ranked(results, keep, empty, top_n)


async def rerank_async(
    clients: Clients,
    query: str,
    texts: Sequence[Optional[str]],
    top_n: Optional[int],
    long_documents: str,
    strict: bool = False,
    max_length: Optional[int] = None,
) -> Ranked:
    keep, kept, empty = split_empty(texts)
    with errors_in_caller_terms(keep):
        results = (
            await clients.async_().rerank(query, kept, top_k=top_n, **rerank_kwargs(long_documents, strict, max_length))
            if kept
            else []
        )
    return ranked(results, keep, empty, top_n)
