"""Which endpoint a request goes to and when to try again: round-robin over URLs or over
every address DNS gives for a name (re-resolved), a short rest for an endpoint that failed,
and exponential backoff with jitter."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .errors import InvalidInputError, ServerUnavailableError

logger = logging.getLogger("reranker_client")

RETRYABLE = (ServerUnavailableError,)  # OverloadedError is one; a rerank is a pure function

# `dns:///host:port`: every address the name resolves to is an endpoint, re-resolved this often.
# A gRPC connection to a Kubernetes ClusterIP Service sticks to one pod, so pods the autoscaler
# adds would get no traffic; the chart's headless Service answers DNS with every ready pod
# instead. Shorter than the chart's preStop pause (10 s), so a terminating pod leaves the list
# before it stops accepting.
DNS_SCHEME = "dns:///"
DNS_REFRESH_S = 5.0

Resolver = Callable[[str, int], List[str]]


# Schemes a user may paste from a browser or another SDK. tritonclient wants a bare host:port (its
# HTTP client raises "url should not include the scheme" from a half-built object whose __del__
# then prints an ignored exception; gRPC fails to resolve). Plain ones are dropped; TLS ones need
# tls=TLSOptions(...), which is where certificates are given.
PLAIN_SCHEMES = ("http://", "grpc://")
TLS_SCHEMES = ("https://", "grpcs://")


def _has_port(url: str) -> bool:
    hostport = url.split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    return bool(host and sep and port.isdigit())


def _with_port(url: str) -> str:
    """A URL without a port would go to gRPC's default, 443 (review of issue 28): refused,
    naming the ports a Triton deployment uses, rather than guessed between them."""
    if not _has_port(url):
        raise InvalidInputError(
            f"url: {url!r} has no port: write host:port (Triton's gRPC port is 8001 and its HTTP "
            f"port 8000 by default; the front proxy's gRPC port is 8081)"
        )
    return url


def bare_url(url: str, tls: bool) -> str:
    """`url` as tritonclient takes it: host:port (an HTTP path prefix is kept), a scheme
    dropped, or InvalidInputError saying what to write instead."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(f"url: expected 'host:port', got {url!r}")
    if url.startswith(DNS_SCHEME):
        return url
    if "://" not in url:
        return _with_port(url)
    scheme = url[: url.index("://") + 3]
    rest = url[len(scheme) :].rstrip("/")
    if scheme in TLS_SCHEMES and not tls:
        raise InvalidInputError(
            f"url: {url!r} asks for TLS: pass url={rest!r} with tls=TLSOptions(...) (TLSOptions() for the system roots)"
        )
    if scheme not in PLAIN_SCHEMES + TLS_SCHEMES or not rest:
        raise InvalidInputError(f"url: expected 'host:port' (or dns:///host:port), got {url!r}")
    return _with_port(rest)


def resolve_addresses(host: str, port: int) -> List[str]:
    """Every address `host` resolves to, as sorted unique IPs (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})  # sockaddr[0]: the address, a str for IPv4/IPv6


def split_dns_url(url: str) -> Optional[Tuple[str, int]]:
    """`dns:///host:port` -> (host, port); any other URL -> None."""
    if not url.startswith(DNS_SCHEME):
        return None
    host, _, port = url[len(DNS_SCHEME) :].rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"url: expected dns:///host:port, got {url!r}")
    return host.strip("[]"), int(port)


@dataclass
class EndpointPool:
    """Round-robin over URLs; an endpoint that fails with a retryable error rests a moment.

    With `discover=(host, port)` the URLs are every address DNS gives for host, resolved again
    every `refresh_s` seconds (on the next pick after that); a failed or empty answer keeps the
    last known list, so a DNS hiccup never leaves the client without endpoints."""

    urls: List[str]
    cooldown_s: float = 2.0
    discover: Optional[Tuple[str, int]] = None
    refresh_s: float = DNS_REFRESH_S
    resolver: Resolver = resolve_addresses
    _next: int = 0
    _down_until: Dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _resolved_at: float = float("-inf")

    def __post_init__(self) -> None:
        if self.discover is not None:
            self.refresh(force=True)
            if not self.urls:
                raise ServerUnavailableError(f"{self.discover[0]}: DNS returned no address")

    def refresh(self, force: bool = False) -> None:
        if self.discover is None or (not force and time.monotonic() - self._resolved_at < self.refresh_s):
            return
        host, port = self.discover
        self._resolved_at = time.monotonic()
        try:
            addresses = self.resolver(host, port)
        except OSError as err:
            logger.warning("dns:///%s:%d: resolution failed (%s); keeping %s", host, port, err, self.urls)
            return  # keep the last known endpoints
        if addresses:
            urls = [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
            if urls != self.urls:
                logger.info("dns:///%s:%d: endpoints %s", host, port, urls)
            with self._lock:
                self.urls = urls
                self._down_until = {u: t for u, t in self._down_until.items() if u in self.urls}

    def pick(self, avoid: Optional[str] = None) -> str:
        self.refresh()
        with self._lock:
            now = time.monotonic()
            n = len(self.urls)
            for step in range(n):
                url = self.urls[(self._next + step) % n]
                if url != avoid and self._down_until.get(url, 0.0) <= now:
                    self._next = (self._next + step + 1) % n
                    return url
            # Everything is resting (or there is one endpoint): try the one that rests least.
            return min(self.urls, key=lambda u: self._down_until.get(u, 0.0))

    def mark_down(self, url: str) -> bool:
        """Rest `url` for cooldown_s; True when it was up until now (so a storm of failures on
        one endpoint is logged once per rest, not once per request)."""
        with self._lock:
            now = time.monotonic()
            was_up = self._down_until.get(url, 0.0) <= now
            self._down_until[url] = now + self.cooldown_s
            return was_up


# Retry pauses (ClientConfig.backoff_base / backoff_max): attempt n waits between half and all
# of min(backoff_max, backoff_base * 2**n). "Equal jitter": the random half spreads callers that
# failed together, the fixed half guarantees a real pause (full jitter, uniform from 0, retried
# an overloaded server almost at once about half the time, and the retries were shed again).
DEFAULT_BACKOFF_BASE_S = 0.05
DEFAULT_BACKOFF_MAX_S = 2.0


def backoff_seconds(attempt: int, base: float = DEFAULT_BACKOFF_BASE_S, cap: float = DEFAULT_BACKOFF_MAX_S) -> float:
    """Exponential backoff with equal jitter: in [d/2, d], d = min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
