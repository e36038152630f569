"""What is served: TEI's `GET /info` (Dify's TEI provider reads `model_type` and accepts the
server only when its key is `reranker`) and an OpenAI-style `GET /v1/models` list."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from . import __version__
from .security import require_key

router = APIRouter(dependencies=[Depends(require_key)], tags=["discovery"])


@router.get("/info")
async def info(request: Request) -> dict:
    """The fields of TEI's `Info` (text-embeddings-inference router/src/lib.rs), with this
    server's values; the limits are read from the served ensemble."""
    settings = request.app.state.settings
    limits = await request.app.state.backend.limits()
    return {
        "model_id": settings.served_model,
        "model_sha": None,
        "model_dtype": "unknown",  # the export's precision is Triton's business, not published
        "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
        "max_concurrent_requests": None,
        "max_input_length": limits.max_length,
        "max_batch_tokens": limits.max_batch_tokens,
        "max_batch_requests": limits.max_batch_size,
        "max_client_batch_size": settings.max_documents,
        "auto_truncate": True,
        "tokenization_workers": None,
        "version": f"reranker-rest {__version__}",
        "sha": None,
        "docker_label": None,
    }


@router.get("/v1/models")
async def models(request: Request) -> dict:
    settings = request.app.state.settings
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "reranker-rest", "root": settings.served_model}
            for name in settings.model_names
        ],
    }
