"""Every setting of the service, read from REST_* environment variables, each with its default.

The service does not import the exporter's settings: what it needs from the served model
(max_batch_size, max_length, the per-text byte limit) it reads from Triton through the
client's `server_limits()`, so the model's limits stay defined once, in export/settings.py.
What is defined here are the HTTP front door's own limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

# Documents per request. Cohere documents 1,000 as its recommended maximum; every request is
# chunked by the client into max_batch_size-pair Triton requests (16 for 1,000 at 64), so this
# bounds how long one caller can hold the cross-encoder. Beyond it: 400 naming `documents`.
DEFAULT_MAX_DOCUMENTS = 1000

# Request bodies larger than this get 413 before they are read. 8 MiB: 4x TEI's 2 MB default
# payload limit; room for DEFAULT_MAX_DOCUMENTS documents of ~8 KB each (far beyond the
# 512-token pair limit, so nothing useful is refused) or 32 texts at the server's per-text
# limit of 256 KiB. Triton 2.51 has no message-size cap of its own (see NOTES), so this
# service is where a body is bounded.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

# The overall deadline of one HTTP request, spent across its Triton chunks and retries
# (the client's `timeout`); when it passes the answer is 504. Unset by default: the client then
# derives it from the server (reranker_client ServerLimits.default_budget_s: 30 s at a 512
# export, longer where a request can reach a longer length class, whose queue timeout the server
# sizes by its cost), so a long-document request through REST gets the time the Python client
# would; REST_TIMEOUT_S sets a fixed one.
DEFAULT_TIMEOUT_S: Optional[float] = None
# Retries of a failed Triton call (UNAVAILABLE, queue full) inside the deadline, with backoff
# and failover to the next endpoint. Overload that outlasts them is answered 429.
DEFAULT_RETRIES = 2
# Triton requests one HTTP request may have in flight at once (the client's max_concurrency).
DEFAULT_MAX_CONCURRENCY = 4
# Retry-After (seconds) on 429 and 503: about the time Triton needs to drain its queue
# (QUEUE_TIMEOUT_US = 5 s is the worst case; most sheds clear far sooner).
DEFAULT_RETRY_AFTER_S = 1

DEFAULT_HOST = "127.0.0.1"  # the container and chart set 0.0.0.0
DEFAULT_PORT = 8080
DEFAULT_TRITON_URL = "localhost:8001"
DEFAULT_TRITON_MODEL = "rerank"
DEFAULT_SERVED_MODEL = "BAAI/bge-reranker-v2-m3"


@dataclass(frozen=True)
class Settings:
    triton_urls: Tuple[str, ...] = (DEFAULT_TRITON_URL,)
    triton_model: str = DEFAULT_TRITON_MODEL
    served_model: str = DEFAULT_SERVED_MODEL  # the `model` in answers (Jina's shape)
    # The `model` policy. Unset: any name is accepted (clients send whatever their user typed,
    # Cohere's defaults or LiteLLM's suffix after the provider; this server runs one model).
    # Set: only served_model and these names; another is 404 naming the served ones.
    model_aliases: Tuple[str, ...] = ()
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout_s: Optional[float] = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    # Bearer keys: a comma-separated list (e.g. a Kubernetes Secret as an env var) and/or a
    # file with one key per line (a Secret mounted as a volume; re-read when it changes).
    # Neither set: no authentication.
    api_keys: Tuple[str, ...] = ()
    api_keys_file: Optional[str] = None
    # TLS to Triton's gRPC port (PEM paths), as the client supports it.
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.triton_urls:
            raise ValueError("REST_TRITON_URL: at least one endpoint is required")
        for name in ("max_documents", "max_body_bytes", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if (self.timeout_s is not None and self.timeout_s <= 0) or self.retries < 0 or self.retry_after_s < 0:
            raise ValueError("timeout_s must be > 0; retries and retry_after_s >= 0")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("REST_TRITON_TLS_CERT and REST_TRITON_TLS_KEY go together")

    @property
    def model_names(self) -> Tuple[str, ...]:
        """The names GET /v1/models lists (served_model first)."""
        return (self.served_model,) + tuple(a for a in self.model_aliases if a != self.served_model)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **overrides) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default):
            raw = env.get(f"REST_{name}")
            return default if raw in (None, "") else type(default)(raw) if default is not None else raw

        values = dict(
            triton_urls=split_list(env.get("REST_TRITON_URL", DEFAULT_TRITON_URL)),
            triton_model=get("TRITON_MODEL", DEFAULT_TRITON_MODEL),
            served_model=get("SERVED_MODEL", DEFAULT_SERVED_MODEL),
            model_aliases=split_list(env.get("REST_MODEL_ALIASES", "")),
            host=get("HOST", DEFAULT_HOST),
            port=get("PORT", DEFAULT_PORT),
            max_documents=get("MAX_DOCUMENTS", DEFAULT_MAX_DOCUMENTS),
            max_body_bytes=get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            timeout_s=float(env["REST_TIMEOUT_S"]) if env.get("REST_TIMEOUT_S") else DEFAULT_TIMEOUT_S,
            retries=get("RETRIES", DEFAULT_RETRIES),
            max_concurrency=get("MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY),
            retry_after_s=get("RETRY_AFTER_S", DEFAULT_RETRY_AFTER_S),
            api_keys=split_list(env.get("REST_API_KEYS", "")),
            api_keys_file=get("API_KEYS_FILE", None),
            tls_ca=get("TRITON_TLS_CA", None),
            tls_cert=get("TRITON_TLS_CERT", None),
            tls_key=get("TRITON_TLS_KEY", None),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def split_list(raw: str) -> Tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())
