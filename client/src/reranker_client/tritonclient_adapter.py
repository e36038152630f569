"""Everything that touches tritonclient: building its gRPC/HTTP, sync/async clients (TLS
included), the request and response tensors, and turning its exceptions into our typed
errors. The rest of the package never imports tritonclient."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import socket
from dataclasses import dataclass
from types import ModuleType
from typing import (
    Any,
    Awaitable,
    Callable,
    ContextManager,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    Type,
    TypedDict,
    TypeVar,
    Union,
)

import numpy as np
import numpy.typing as npt

from . import contract, errors
from .server_limits import ModelConfig

OUTPUTS = tuple(t.name for t in contract.ENSEMBLE_OUTPUTS)
WINDOW_OUTPUTS = tuple(t.name for t in contract.WINDOW_ENSEMBLE_OUTPUTS)

# tritonclient ships no type information: these Protocols describe the part of its API that
# this package uses, so everything past this module is checked against them.
Array = npt.NDArray[Any]  # an output tensor as tritonclient decodes it (dtype per contract)
# as_numpy answers None for an output the response lacks (planning.assemble then finds the
# chunk malformed).
Outputs = Dict[str, Optional[Array]]


class InferInput(Protocol):
    def set_data_from_numpy(self, input_tensor: Array) -> ModelConfig: ...


class InferRequestedOutput(Protocol):
    name: str


class InferResult(Protocol):
    def as_numpy(self, name: str) -> Optional[Array]: ...


class InferKwargs(TypedDict, total=False):
    """Per-call keyword arguments: gRPC carries the remaining deadline (client_timeout)."""

    client_timeout: float


# What a call answers: the value itself (sync clients) or an awaitable of it (asyncio clients).
InferT_co = TypeVar("InferT_co", covariant=True)
ReadyT_co = TypeVar("ReadyT_co", covariant=True)
ConfigT_co = TypeVar("ConfigT_co", covariant=True)
ClosedT_co = TypeVar("ClosedT_co", covariant=True)


class TritonCalls(Protocol[InferT_co, ReadyT_co, ConfigT_co, ClosedT_co]):
    """The InferenceServerClient calls this package makes, the same in every tritonclient flavour
    (gRPC or HTTP, sync or asyncio) but for what they answer."""

    def infer(
        self,
        model_name: str,
        inputs: List[InferInput],
        *,
        outputs: List[InferRequestedOutput],
        headers: Mapping[str, str],
        client_timeout: float = ...,
    ) -> InferT_co: ...

    def is_model_ready(self, model_name: str, *, headers: Mapping[str, str]) -> ReadyT_co: ...

    # A dict (HTTP) or a ModelConfigResponse proto (gRPC): see server_limits_from.
    def get_model_config(
        self, model_name: str, *, headers: Mapping[str, str], client_timeout: float = ...
    ) -> ConfigT_co: ...

    def close(self) -> ClosedT_co: ...


class SyncTritonClient(TritonCalls[InferResult, bool, ModelConfig, None], Protocol):
    """tritonclient.grpc / tritonclient.http InferenceServerClient."""

    def is_server_live(self, *, headers: Mapping[str, str], client_timeout: float = ...) -> bool: ...


# tritonclient.grpc.aio / tritonclient.http.aio InferenceServerClient.
AsyncTritonClient = TritonCalls[Awaitable[InferResult], Awaitable[bool], Awaitable[ModelConfig], Awaitable[None]]


TritonClient = Union[SyncTritonClient, AsyncTritonClient]


@dataclass(frozen=True)
class TLSOptions:
    """TLS for both protocols, with the same four fields (there are no HTTP-specific keys):
    root_certificates: PEM file of the CA(s) to trust (None: the system's roots);
    certificate_chain and private_key: PEM files of the client certificate and its key, for
    mutual TLS (give both or neither). gRPC passes them to grpc.ssl_channel_credentials; HTTP
    builds an ssl.SSLContext from them (cafile=root_certificates, load_cert_chain(
    certificate_chain, private_key)). insecure_skip_verify (HTTP only) turns off certificate and
    host name checks, for tests against self-signed servers."""

    root_certificates: Optional[str] = None
    private_key: Optional[str] = None
    certificate_chain: Optional[str] = None
    insecure_skip_verify: bool = False  # HTTP only; for tests against self-signed servers


def module_for(protocol: str, asyncio: bool) -> ModuleType:
    if protocol not in ("grpc", "http"):
        raise errors.InvalidInputError(f"protocol: must be 'grpc' or 'http', got {protocol!r}")
    try:
        if protocol == "grpc":
            if asyncio:
                import tritonclient.grpc.aio as module
            else:
                import tritonclient.grpc as module
        elif asyncio:
            import tritonclient.http.aio as module
        else:
            import tritonclient.http as module
    except (ImportError, RuntimeError) as err:
        # tritonclient answers a missing transport package (geventhttpclient, aiohttp, grpcio)
        # with a RuntimeError about its own extras; ours name the package to install.
        extra = "triton-reranker-client[http]" if protocol == "http" else "tritonclient[grpc]"
        raise errors.InvalidInputError(
            f"protocol={protocol!r}: tritonclient's {protocol} support is not installed (pip install '{extra}'): {err}"
        ) from err
    found: ModuleType = module
    return found


def make_sync_client(protocol: str, url: str, tls: Optional[TLSOptions], timeout: Optional[float]) -> SyncTritonClient:
    client: SyncTritonClient = make_client(protocol, False, url, tls, timeout)
    return client


def make_async_client(
    protocol: str, url: str, tls: Optional[TLSOptions], timeout: Optional[float]
) -> AsyncTritonClient:
    client: AsyncTritonClient = make_client(protocol, True, url, tls, timeout)
    return client


def make_client(protocol: str, asyncio: bool, url: str, tls: Optional[TLSOptions], timeout: Optional[float]) -> Any:
    """A tritonclient InferenceServerClient (untyped): make_sync_client / make_async_client
    give it its Protocol."""
    try:
        return _make_client(protocol, asyncio, url, tls, timeout)
    except OSError as err:
        # A certificate or key file that cannot be read is a configuration error, not an
        # unavailable server: never retried, never marks an endpoint down.
        raise errors.InvalidInputError(f"tls: {err}") from err


def _make_client(protocol: str, asyncio: bool, url: str, tls: Optional[TLSOptions], timeout: Optional[float]) -> Any:
    module = module_for(protocol, asyncio)
    if tls is not None:
        # Read-check the files first: tritonclient's gRPC client half-built by a missing file
        # prints an ignored exception from its __del__.
        for path in (tls.root_certificates, tls.private_key, tls.certificate_chain):
            if path:
                open(path, "rb").close()
    kwargs: Dict[str, object] = {}
    if protocol == "grpc":
        if tls is not None:
            kwargs = dict(
                ssl=True,
                root_certificates=tls.root_certificates,
                private_key=tls.private_key,
                certificate_chain=tls.certificate_chain,
            )
        return module.InferenceServerClient(url, **kwargs)
    if tls is not None:
        import ssl as _ssl

        context = _ssl.create_default_context(cafile=tls.root_certificates)
        if tls.certificate_chain:
            context.load_cert_chain(tls.certificate_chain, tls.private_key)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = _ssl.CERT_NONE
        if not asyncio:
            kwargs = dict(ssl=True, ssl_context_factory=lambda: context)
        else:
            kwargs = dict(ssl=True, ssl_context=context)
    if not asyncio:
        # A client without a timeout of its own derives each call's deadline from the server
        # (ServerLimits.default_budget_s), unknown here: no socket timeout (None: blocking), since
        # deadline_guard bounds every sync HTTP call by its call's deadline anyway.
        kwargs.update(connection_timeout=timeout, network_timeout=timeout)
    else:
        # tritonclient.http.aio defaults conn_timeout to 60 s (aiohttp ClientTimeout(total=60)),
        # which would cut every call at 60 s whatever its deadline (a derived 198 s at an 8,192
        # export, or a caller's timeout=120): asyncio.wait_for bounds each call by its deadline.
        kwargs.update(conn_timeout=None)
    return module.InferenceServerClient(url, **kwargs)


def make_inputs(
    protocol: str,
    asyncio: bool,
    queries: npt.NDArray[np.object_],
    passages: npt.NDArray[np.object_],
    strides: Optional[npt.NDArray[np.int32]] = None,
    max_length: Optional[int] = None,
) -> List[InferInput]:
    """The `rerank` inputs, or with `strides` ([B, 1] int32) the `rerank_windows` inputs; with
    `max_length`, the optional input that carries it ([B, 1] int32, the same on every row)."""
    module = module_for(protocol, asyncio)
    inputs: List[InferInput] = []
    specs: Tuple[contract.Tensor, ...] = contract.ENSEMBLE_INPUTS
    arrays: Tuple[Array, ...] = (queries, passages)
    if strides is not None:
        specs, arrays = contract.WINDOW_ENSEMBLE_INPUTS, (queries, passages, strides)
    if max_length is not None:
        specs = (*specs, contract.REQUEST_MAX_LENGTH)
        arrays = (*arrays, np.full((len(queries), 1), max_length, dtype=np.int32))
    for spec, array in zip(specs, arrays):
        tensor: InferInput = module.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def make_outputs(protocol: str, asyncio: bool, window: bool = False) -> List[InferRequestedOutput]:
    module = module_for(protocol, asyncio)
    return [module.InferRequestedOutput(name) for name in (WINDOW_OUTPUTS if window else OUTPUTS)]


def read_outputs(result: InferResult, window: bool = False) -> Outputs:
    return {name: result.as_numpy(name) for name in (WINDOW_OUTPUTS if window else OUTPUTS)}


# Every client-side timeout type, on every supported Python. On 3.11+ asyncio.TimeoutError and
# socket.timeout are the builtin TimeoutError, which is an OSError: checked before OSError, or a
# timeout would read as "server unavailable", be retried and mark a healthy endpoint down. On
# 3.9/3.10 asyncio's and concurrent.futures' TimeoutError are separate classes, not OSErrors.
TIMEOUT_TYPES = (TimeoutError, asyncio.TimeoutError, socket.timeout, concurrent.futures.TimeoutError)


class HttpDeadline(TimeoutError):
    """Raised inside a sync HTTP call by `deadline_guard` when the call's deadline passes."""


def _status(err: BaseException) -> str:
    if not hasattr(err, "status"):
        return ""
    try:
        return str(err.status() or "")
    except Exception:  # noqa: BLE001 - a status we cannot read is no status
        return ""


def _has(text: str, *needles: str) -> bool:
    return any(n in text for n in needles)


# Which tritonclient/transport failure becomes which typed error. The status code decides
# wherever it says what happened: Triton, the front proxy and gRPC itself set it, and their
# messages may change with any release (a code-only error still maps right). `status` is
# tritonclient's status(): "StatusCode.X" for gRPC, the HTTP status code for HTTP. Within a code,
# a message may only refine the class (UNAVAILABLE: load shed or not; RESOURCE_EXHAUSTED: a size
# limit or load). Tested code by code, with odd messages, in tests/test_client_errors.py.
ErrorClass = Type[errors.RerankError]


# tritonserver's --grpc-restricted-protocol / --http-restricted-api refusal of a call without the
# configured header: gRPC UNAVAILABLE on tritonserver 2.51 (seen in tests/test_robustness.py::
# test_grpc_tls_and_auth_header), never worth a retry.
RESTRICTED_MESSAGES = ("protocol is restricted", "api is restricted")


def _shed_or_down(text: str) -> ErrorClass:
    if _has(text, *RESTRICTED_MESSAGES):
        return errors.PermissionDeniedError
    return errors.OverloadedError if _has(text, *contract.SHED_LOAD_MESSAGES) else errors.ServerUnavailableError


def _loading_or_absent(text: str) -> ErrorClass:
    """NOT_FOUND is also what Triton answers for a model it knows while no version of it is loaded
    (a server restarting, a model reloading): "Request for unknown model: 'rerank' has no
    available versions" (tritonserver 2.51). That one is transient, like UNAVAILABLE; a model the
    server does not have is not."""
    if re.search(r"'[^']*' has no available versions", text):
        return errors.ServerUnavailableError
    return errors.ModelNotReadyError


def _too_large_or_shed(text: str) -> ErrorClass:
    return errors.InvalidInputError if contract.TOO_LARGE_MESSAGE in text else errors.OverloadedError


BY_CODE: Dict[str, Union[ErrorClass, Callable[[str], ErrorClass]]] = {
    "StatusCode.INVALID_ARGUMENT": errors.InvalidInputError,
    "StatusCode.OUT_OF_RANGE": errors.InvalidInputError,
    "400": errors.InvalidInputError,
    "413": errors.InvalidInputError,
    "422": errors.InvalidInputError,
    "StatusCode.PERMISSION_DENIED": errors.PermissionDeniedError,
    "StatusCode.UNAUTHENTICATED": errors.PermissionDeniedError,
    "401": errors.PermissionDeniedError,
    "403": errors.PermissionDeniedError,
    "StatusCode.DEADLINE_EXCEEDED": errors.DeadlineExceededError,
    "408": errors.DeadlineExceededError,
    "StatusCode.NOT_FOUND": _loading_or_absent,
    "404": _loading_or_absent,
    "429": errors.OverloadedError,
    "StatusCode.CANCELLED": errors.ServerUnavailableError,
    "502": errors.ServerUnavailableError,
    "504": errors.ServerUnavailableError,
    # Triton's load shedding, a model without a ready version, a server starting or draining,
    # and a connection gRPC could not make all answer UNAVAILABLE: retried either way.
    "StatusCode.UNAVAILABLE": _shed_or_down,
    "503": _shed_or_down,
    # gRPC's own message-size limit and the front proxy's body cap answer RESOURCE_EXHAUSTED as a
    # gateway's rate limit does: a request that can never pass must not be retried as overload.
    "StatusCode.RESOURCE_EXHAUSTED": _too_large_or_shed,
}

# Without a code that decides (INTERNAL, UNKNOWN, HTTP 500, a transport exception): what a step
# of an ensemble or a BLS call reports reaches the client as text only (tritonserver 2.51 gives
# it INTERNAL), so the message decides: (class, test) rows, first match wins.
TRANSLATION: Tuple[Tuple[ErrorClass, Callable[[BaseException, str], bool]], ...] = (
    (errors.PermissionDeniedError, lambda err, text: _has(text, *RESTRICTED_MESSAGES)),
    (errors.OverloadedError, lambda err, text: _has(text, *contract.SHED_LOAD_MESSAGES)),
    (errors.DeadlineExceededError, lambda err, text: isinstance(err, TIMEOUT_TYPES) or "deadline exceeded" in text),
    # A model (re)loading or a server restarting: transient. "Server not ready" is what a step of
    # an ensemble (or a BLS call) answers while the server drains for shutdown.
    (
        errors.ServerUnavailableError,
        lambda err, text: _has(text, "has no available versions", *contract.STEP_DOWN_MESSAGES),
    ),
    (
        errors.ModelNotReadyError,
        lambda err, text: _has(text, "unknown model", "is not ready") or ("not found" in text and "model" in text),
    ),
    (
        errors.InvalidInputError,
        lambda err, text: (
            _has(text, "unexpected shape", "unexpected datatype") or ("batch size" in text and "exceeds" in text)
        ),
    ),
    (
        errors.ServerUnavailableError,
        lambda err, text: isinstance(err, (OSError, ConnectionError)) or _has(text, "connect", "socket", "broken pipe"),
    ),
)


def _by_code(status: str, text: str) -> Optional[ErrorClass]:
    decided = BY_CODE.get(status)
    if decided is None or isinstance(decided, type):
        return decided
    return decided(text)  # a message refines the class within the code


def translate(err: BaseException) -> errors.RerankError:
    """Map a tritonclient/transport exception to our typed errors: by its status code where that
    decides (BY_CODE), else by its message (TRANSLATION)."""
    if isinstance(err, errors.RerankError):
        return err
    message = str(err)
    text = message.lower()
    cls = _by_code(_status(err), text)
    if cls is None:
        cls = next((row for row, matches in TRANSLATION if matches(err, text)), errors.RerankError)
    return cls(message or type(err).__name__)


def deadline_guard(protocol: str, asyncio_client: bool, seconds: float) -> ContextManager[object]:
    """Bounds one blocking sync HTTP call by the call's remaining time. tritonclient's sync HTTP
    client has one network timeout fixed when it is built, so a per-call `timeout` would not
    hold there; its sockets are gevent's, so a gevent.Timeout on this thread's hub interrupts a
    blocked read. gRPC carries the deadline itself (client_timeout) and asyncio uses wait_for."""
    if protocol != "http" or asyncio_client:
        return contextlib.nullcontext()
    import gevent

    guard: ContextManager[object] = gevent.Timeout(
        max(seconds, 0.001), HttpDeadline(f"no answer within {seconds:.3f}s")
    )
    return guard
