"""Cohere `/v1/rerank` and `/v2/rerank`, and Jina's `/v1/rerank` (same request; its `model`
and `usage` are in every answer)."""

from __future__ import annotations

import uuid
from typing import List

from fastapi import APIRouter, Depends, Request

from .errors import ApiError
from .schemas import ApiVersion, CohereRerankRequest, CohereRerankResponse, CohereResult, Meta, Usage
from .security import require_key

router = APIRouter(dependencies=[Depends(require_key)], tags=["Cohere / Jina"])


@router.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
async def rerank_v1(body: CohereRerankRequest, request: Request) -> CohereRerankResponse:
    return await _rerank(body, request, "1")


@router.post("/v2/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
async def rerank_v2(body: CohereRerankRequest, request: Request) -> CohereRerankResponse:
    return await _rerank(body, request, "2")


async def _rerank(body: CohereRerankRequest, request: Request, version: str) -> CohereRerankResponse:
    backend = request.app.state.backend
    if body.max_tokens_per_doc is not None:
        await _check_max_tokens(backend, body.max_tokens_per_doc)
    ranked = await backend.rerank(body.query, body.texts(), body.top_n, "documents", body.long_documents)
    request.app.state.metrics.documents.labels(request.url.path).inc(len(ranked))
    shown = ranked[: body.top_n] if body.top_n is not None else ranked
    results: List[CohereResult] = []
    for r in shown:
        document = None
        if body.return_documents:
            original = body.documents[r.index]
            document = dict(original) if isinstance(original, dict) else {"text": original}
        results.append(
            CohereResult(
                index=r.index,
                relevance_score=r.score,
                document=document,
                tokens=r.tokens,
                truncated=r.truncated,
                span=r.span,
                windows=r.windows,
            )
        )
    warnings = None
    cut = sum(r.truncated for r in shown)
    if cut:
        warnings = [
            f"{cut} of the returned documents were cut to the server's max_length of "
            f"{await backend.max_length()} tokens per query+document pair (see `truncated`)"
        ]
    return CohereRerankResponse(
        id=str(uuid.uuid4()),
        results=results,
        meta=Meta(api_version=ApiVersion(version=version), warnings=warnings),
        model=request.app.state.settings.served_model,
        usage=Usage(total_tokens=sum(r.tokens for r in ranked)),
    )


async def _check_max_tokens(backend, value: int) -> None:
    """Documents are cut only as part of the pair (query + document <= max_length), so a
    per-document limit at or above max_length holds already; a smaller one cannot be applied
    by the server and is refused rather than silently ignored."""
    max_length = await backend.max_length()
    if max_length is None or value < max_length:
        raise ApiError(
            400,
            f"max_tokens_per_doc: {value} cannot be honoured: the server cuts each "
            f"query+document pair to its max_length ({max_length} tokens); send a value "
            f">= {max_length} or omit the field",
        )
