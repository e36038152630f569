"""Everything that touches tritonclient: building its gRPC/HTTP, sync/async clients (TLS
included), the request and response tensors, and turning its exceptions into our typed
errors. The rest of the package never imports tritonclient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from . import contract
from .errors import (DeadlineExceededError, InvalidInputError, ModelNotReadyError, OverloadedError,
                     PermissionDeniedError, RerankError, ServerUnavailableError)

OUTPUTS = tuple(t.name for t in contract.ENSEMBLE_OUTPUTS)
WINDOW_OUTPUTS = tuple(t.name for t in contract.WINDOW_ENSEMBLE_OUTPUTS)


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


def make_inputs(protocol: str, asyncio: bool, queries: np.ndarray, passages: np.ndarray,
                strides: Optional[np.ndarray] = None) -> list:
    """The `rerank` inputs, or with `strides` ([B, 1] int32) the `rerank_windows` inputs."""
    module = module_for(protocol, asyncio)
    inputs = []
    specs, arrays = contract.ENSEMBLE_INPUTS, (queries, passages)
    if strides is not None:
        specs, arrays = contract.WINDOW_ENSEMBLE_INPUTS, (queries, passages, strides)
    for spec, array in zip(specs, arrays):
        tensor = module.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def make_outputs(protocol: str, asyncio: bool, window: bool = False) -> list:
    module = module_for(protocol, asyncio)
    return [module.InferRequestedOutput(name) for name in (WINDOW_OUTPUTS if window else OUTPUTS)]


def read_outputs(result, window: bool = False) -> Dict[str, np.ndarray]:
    return {name: result.as_numpy(name) for name in (WINDOW_OUTPUTS if window else OUTPUTS)}


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
