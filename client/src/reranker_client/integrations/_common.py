"""What the three framework adapters share, so they cannot drift apart: the client options they
expose, how an API key becomes a header, which texts are "empty", how results map back to the
caller's list, and the sync/async client pair built from one ClientConfig (ClientOwner)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Literal, Mapping, Optional, Sequence, Tuple, TypedDict

from ..async_client import AsyncRerankClient
from ..base import ClientConfig
from ..results import RerankResult
from ..sync_client import RerankClient
from ..tritonclient_adapter import TLSOptions

# Where an adapter finds its API key when none is given (a gateway in front of Triton that
# checks `authorization: Bearer <key>`). Triton itself checks no key.
API_KEY_ENV = "TRITON_RERANK_API_KEY"
API_KEY_HEADER = "authorization"

# How the server treats a document longer than max_length. "truncate" is what it does today;
# "window" (score windows, keep the best) is being added to the client's rerank(); it is passed
# on only when asked for, so the default works with a client that does not have the keyword.
LongDocuments = Literal["truncate", "window"]
LONG_DOCUMENTS: Tuple[LongDocuments, ...] = ("truncate", "window")
DEFAULT_LONG_DOCUMENTS: LongDocuments = "truncate"


class RerankKwargs(TypedDict, total=False):
    long_documents: str


# (caller's position, result or None for an empty text), best first: what the adapters map back.
Ranked = List[Tuple[int, Optional[RerankResult]]]

# An empty, whitespace-only or missing text (a bad PDF parse, an empty chunk) cannot be scored
# by the model; like the frameworks' built-in rerankers, it gets the lowest score (the bottom of
# the sigmoid range) and goes after every scored document instead of failing the whole call.
EMPTY_SCORE = 0.0

# The ClientConfig fields every adapter has as options of its own, under the same names (all but
# `resolver`, a hook for tests).
CONFIG_OPTIONS = tuple(f.name for f in dataclasses.fields(ClientConfig) if f.name != "resolver")
# The options that describe a connection; a ready client replaces all of them.
CONNECTION_OPTIONS = (*CONFIG_OPTIONS, "api_key")


def check_long_documents(value: str) -> str:
    if value not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents: must be one of {LONG_DOCUMENTS}, got {value!r}")
    return value


def rerank_kwargs(long_documents: str) -> RerankKwargs:
    return {} if long_documents == DEFAULT_LONG_DOCUMENTS else {"long_documents": long_documents}


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


def check_top(top_n: Optional[int], name: str) -> Optional[int]:
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
        raise ValueError(f"{name}: must be an int >= 0 or None, got {top_n!r}")
    return top_n


@dataclass
class Clients:
    """The sync and async clients of one adapter, built lazily from one ClientConfig, or the
    ready client(s) the caller passed (never closed here: the caller owns them). An async client
    built here belongs to the event loop it was built on (gRPC's asyncio channels do): a call
    from another loop (a second asyncio.run) gets a new one."""

    config: Optional[ClientConfig] = None
    given_sync: Optional[RerankClient] = None
    given_async: Optional[AsyncRerankClient] = None
    _sync: Optional[RerankClient] = None
    _async: Optional[AsyncRerankClient] = None
    _async_loop: Optional[asyncio.AbstractEventLoop] = None

    def _config(self) -> ClientConfig:
        if self.config is not None:
            return self.config
        given = self.given_sync or self.given_async
        assert given is not None
        return given.config

    def sync(self) -> RerankClient:
        if self.given_sync is not None:
            return self.given_sync
        if self._sync is None:
            self._sync = RerankClient.from_config(self._config())
        return self._sync

    def async_(self) -> AsyncRerankClient:
        if self.given_async is not None:
            return self.given_async
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async, self._async_loop = AsyncRerankClient.from_config(self._config()), loop
        return self._async

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            client, self._async = self._async, None
            if self._async_loop is asyncio.get_running_loop():
                await client.close()


class ClientOwner:
    """An adapter's clients: the ready ones it was given, or ones built on first use from its
    CONFIG_OPTIONS (attributes of the same names), which it closes. The adapter says how its API
    key is read."""

    if TYPE_CHECKING:
        client: Optional[RerankClient]
        async_client: Optional[AsyncRerankClient]
        _clients: Optional[Clients]

    def _api_key(self) -> Optional[str]:
        raise NotImplementedError

    def _get_clients(self) -> Clients:
        if self._clients is None:
            config = None
            if self.client is None and self.async_client is None:
                config = client_config({name: getattr(self, name) for name in CONFIG_OPTIONS}, self._api_key())
            self._clients = Clients(config, self.client, self.async_client)
        return self._clients

    def close(self) -> None:
        """Close the clients this adapter built (a client you passed stays yours)."""
        if self._clients is not None:
            self._clients.close()

    async def _close_async(self) -> None:
        if self._clients is not None:
            await self._clients.aclose()


def rerank_sync(
    clients: Clients, query: str, texts: Sequence[Optional[str]], top_n: Optional[int], long_documents: str
) -> Ranked:
    keep, kept, empty = split_empty(texts)
    results = clients.sync().rerank(query, kept, top_k=top_n, **rerank_kwargs(long_documents)) if kept else []
    return ranked(results, keep, empty, top_n)


async def rerank_async(
    clients: Clients, query: str, texts: Sequence[Optional[str]], top_n: Optional[int], long_documents: str
) -> Ranked:
    keep, kept, empty = split_empty(texts)
    results = await clients.async_().rerank(query, kept, top_k=top_n, **rerank_kwargs(long_documents)) if kept else []
    return ranked(results, keep, empty, top_n)
