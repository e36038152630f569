"""What differs between tritonclient's gRPC/HTTP and sync/async clients, in one place:
building clients, the request tensors, and turning its exceptions into our typed errors."""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from .errors import (DeadlineExceededError, InvalidInputError, ModelNotReadyError, OverloadedError,
                     PermissionDeniedError, RerankError, ServerUnavailableError)

OUTPUTS = ("score", "logit", "tokens", "truncated")


@dataclass(frozen=True)
class TLSOptions:
    """gRPC: root_certificates/private_key/certificate_chain are PEM file paths.
    HTTP: ca_certs/certfile/keyfile as for Python's ssl module."""
    root_certificates: Optional[str] = None
    private_key: Optional[str] = None
    certificate_chain: Optional[str] = None
    insecure_skip_verify: bool = False  # HTTP only; for tests against self-signed servers


def module_for(protocol: str, asyncio: bool):
    if protocol == "grpc":
        if asyncio:
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.grpc as module
    elif protocol == "http":
        if asyncio:
            import tritonclient.http.aio as module
        else:
            import tritonclient.http as module
    else:
        raise InvalidInputError(f"protocol: must be 'grpc' or 'http', got {protocol!r}")
    return module


def make_client(protocol: str, asyncio: bool, url: str, tls: Optional[TLSOptions], timeout: float):
    module = module_for(protocol, asyncio)
    if protocol == "grpc":
        kwargs = {}
        if tls is not None:
            kwargs = dict(ssl=True, root_certificates=tls.root_certificates, private_key=tls.private_key,
                          certificate_chain=tls.certificate_chain)
        return module.InferenceServerClient(url, **kwargs)
    kwargs = {}
    if tls is not None:
        import ssl as _ssl
        context = _ssl.create_default_context(cafile=tls.root_certificates)
        if tls.certificate_chain:
            context.load_cert_chain(tls.certificate_chain, tls.private_key)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = _ssl.CERT_NONE
        kwargs = dict(ssl=True, ssl_context_factory=lambda: context) if not asyncio else dict(ssl=True, ssl_context=context)
    if not asyncio:
        kwargs.update(connection_timeout=timeout, network_timeout=timeout)
    return module.InferenceServerClient(url, **kwargs)


def make_inputs(protocol: str, asyncio: bool, queries: np.ndarray, passages: np.ndarray) -> list:
    module = module_for(protocol, asyncio)
    inputs = []
    for name, array in (("query", queries), ("passage", passages)):
        tensor = module.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def make_outputs(protocol: str, asyncio: bool) -> list:
    module = module_for(protocol, asyncio)
    return [module.InferRequestedOutput(name) for name in OUTPUTS]


def read_outputs(result) -> Dict[str, np.ndarray]:
    return {name: result.as_numpy(name) for name in OUTPUTS}


@dataclass(frozen=True)
class ServerLimits:
    max_batch_size: int
    max_length: Optional[int] = None
    buckets: Optional[List[int]] = None  # padded lengths the server uses
    max_text_bytes: Optional[int] = None


def server_limits_from(response) -> ServerLimits:
    """From get_model_config's answer: a dict (HTTP) or a ModelConfigResponse proto (gRPC)."""
    if isinstance(response, dict):
        config = response.get("config", response)
        batch = int(config.get("max_batch_size", 0))
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    else:
        batch = int(response.config.max_batch_size)
        params = {k: v.string_value for k, v in response.config.parameters.items()}
    if batch < 1:
        raise ModelNotReadyError("the model does not batch (max_batch_size 0): not the rerank ensemble")

    def number(key):
        return int(params[key]) if params.get(key, "").isdigit() else None
    buckets = [int(b) for b in params["length_buckets"].split(",")] if params.get("length_buckets") else None
    return ServerLimits(batch, number("max_length"), buckets, number("max_text_bytes"))


def translate(err: BaseException) -> RerankError:
    """Map a tritonclient/transport exception to our typed errors."""
    if isinstance(err, RerankError):
        return err
    message = str(err)
    status = ""
    if hasattr(err, "status"):
        try:
            status = str(err.status() or "")
        except Exception:  # noqa: BLE001
            status = ""
    lowered = message.lower()
    if "protocol is restricted" in lowered or "api is restricted" in lowered or "PERMISSION_DENIED" in status \
            or "UNAUTHENTICATED" in status or status in ("401", "403"):
        return PermissionDeniedError(message)
    if "exceeds maximum queue size" in lowered or "request timeout expired" in lowered:
        return OverloadedError(message)
    if "has no available versions" in lowered or "stub process" in lowered or "not healthy" in lowered \
            or "server is shutting down" in lowered or "CANCELLED" in status:
        return ServerUnavailableError(message)  # a model (re)loading or a server restarting: transient
    if "unknown model" in lowered or "is not ready" in lowered or "not found" in lowered and "model" in lowered:
        return ModelNotReadyError(message)
    if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in lowered:
        return DeadlineExceededError(message)
    if "INVALID_ARG" in status or status == "400" or "unexpected shape" in lowered or "unexpected datatype" in lowered \
            or "batch size" in lowered and "exceeds" in lowered:
        return InvalidInputError(message)
    if "UNAVAILABLE" in status or status in ("502", "503", "504") or isinstance(err, (OSError, ConnectionError)) \
            or "connect" in lowered or "socket" in lowered or "broken pipe" in lowered:
        return ServerUnavailableError(message or type(err).__name__)
    return RerankError(message or type(err).__name__)


RETRYABLE = (ServerUnavailableError,)  # OverloadedError is one; a rerank is a pure function

# `dns:///host:port`: every address the name resolves to is an endpoint, re-resolved this often.
# A gRPC connection to a Kubernetes ClusterIP Service sticks to one pod, so pods the autoscaler
# adds would get no traffic; the chart's headless Service answers DNS with every ready pod
# instead. Shorter than the chart's preStop pause (10 s), so a terminating pod leaves the list
# before it stops accepting.
DNS_SCHEME = "dns:///"
DNS_REFRESH_S = 5.0

Resolver = Callable[[str, int], List[str]]


def resolve_addresses(host: str, port: int) -> List[str]:
    """Every address `host` resolves to, as sorted unique IPs (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def split_dns_url(url: str) -> Optional[tuple]:
    """`dns:///host:port` -> (host, port); any other URL -> None."""
    if not url.startswith(DNS_SCHEME):
        return None
    host, _, port = url[len(DNS_SCHEME):].rpartition(":")
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
    discover: Optional[tuple] = None
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
        except OSError:
            return  # keep the last known endpoints
        if addresses:
            with self._lock:
                self.urls = [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
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

    def mark_down(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = time.monotonic() + self.cooldown_s


def backoff_seconds(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))
