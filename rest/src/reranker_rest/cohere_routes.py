"""Cohere `/v1/rerank` and `/v2/rerank`, and Jina's `/v1/rerank` (same request; its `model`
and `usage` are in every answer). `answer` also serves Cohere/Jina-shaped bodies on `/rerank`
(vLLM, Infinity, RAGFlow, LiteLLM's hosted_vllm/ and infinity/ providers post them there)."""

from __future__ import annotations

import uuid
from typing import Callable, List, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.types import DecoratedCallable

from .body import openapi_body, parse, read_object
from .errors import ApiError
from .schemas import (
    ApiVersion,
    BilledUnits,
    CohereRerankRequest,
    CohereRerankResponse,
    CohereResult,
    Meta,
    Usage,
    search_units,
)
from .security import require_key

router = APIRouter(dependencies=[Depends(require_key)], tags=["Cohere / Jina"])


def _cohere_route(path: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """Every route here takes and answers Cohere's shapes; the body is read by hand (`_read`),
    so its schema is given to OpenAPI explicitly."""
    return router.post(
        path,
        response_model=CohereRerankResponse,
        response_model_exclude_none=True,
        openapi_extra=openapi_body(CohereRerankRequest),
    )


async def _read(request: Request) -> CohereRerankRequest:
    return parse(CohereRerankRequest, await read_object(request))


@_cohere_route("/v1/rerank")
async def rerank_v1(request: Request) -> CohereRerankResponse:
    return await answer(await _read(request), request, "1")


@_cohere_route("/v2/rerank")
async def rerank_v2(request: Request) -> CohereRerankResponse:
    return await answer(await _read(request), request, "2")


@_cohere_route("/infinity/rerank")
async def rerank_infinity(request: Request) -> CohereRerankResponse:
    """Infinity's answer: a returned `document` is the text itself, not `{"text": ...}`.
    LiteLLM's infinity/ provider posts the very body its hosted_vllm/ provider posts (same
    path, same fields, same headers) but reads `document` as a string, where hosted_vllm/
    reads `document.text`: no answer on /rerank satisfies both, so Infinity's dialect has its
    own path (api_base = http://HOST:PORT/infinity)."""
    body = await _read(request)
    return await answer(body, request, "1", return_documents=False, documents_as_text=True)


async def answer(
    body: CohereRerankRequest,
    request: Request,
    version: str,
    return_documents: bool = False,
    documents_as_text: bool = False,
) -> CohereRerankResponse:
    """`return_documents` is the default when the body does not say: false for Cohere's routes
    (Cohere's default; a Jina caller on /v1/rerank cannot be told from a Cohere v1 caller, the
    body is the same), true on /rerank (vLLM and Jina return documents)."""
    settings = request.app.state.settings
    backend = request.app.state.backend
    check_model(body.model, settings)
    max_length = await _request_max_length(backend, body)
    top_n = body.top_n or None  # vLLM: 0 = all
    # Every document is scored whatever top_n says: usage counts them all, as Jina's does.
    texts = body.texts()
    ranked = await backend.rerank(body.query, texts, None, "documents", body.long_documents, max_length)
    request.app.state.metrics.documents.labels(request.url.path).inc(len(ranked))
    shown = ranked[:top_n] if top_n is not None else ranked
    with_documents = return_documents if body.return_documents is None else body.return_documents
    results: List[CohereResult] = []
    for r in shown:
        document = None
        if with_documents:
            original = body.documents[r.index]
            document = dict(original) if isinstance(original, dict) else {"text": original}
            if documents_as_text:
                document = texts[r.index]
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
            f"{cut} of the returned documents were cut to the max_length of "
            f"{max_length or await backend.max_length()} tokens per query+document pair (see `truncated`)"
        ]
    return CohereRerankResponse(
        id=str(uuid.uuid4()),
        results=results,
        meta=Meta(
            api_version=ApiVersion(version=version),
            billed_units=BilledUnits(search_units=search_units(len(body.documents))),
            warnings=warnings,
        ),
        model=settings.served_model,
        usage=Usage(total_tokens=sum(r.tokens for r in ranked)),
    )


def check_model(model, settings) -> None:
    """The documented `model` policy (settings.model_aliases): any name when no aliases are
    configured, else only the served names."""
    if model is None or not settings.model_aliases or model in settings.model_names:
        return
    raise ApiError(
        404,
        f"model: {model!r} is not served here; served: {', '.join(settings.model_names)} (GET /v1/models)",
        "NotFound",
    )


async def _request_max_length(backend, body: CohereRerankRequest) -> Optional[int]:
    """The request's own tokens per query+document pair, from Cohere's `max_tokens_per_doc` or
    vLLM's `truncate_prompt_tokens` (-1: none), the smaller when both are sent; None: the
    server's max_length. Applied by the server's tokenizer with FlagReranker's rules at that
    length (docs/REST.md says how this differs from Cohere's per-document count)."""
    asked = [
        (field, value)
        for field, value in (
            ("max_tokens_per_doc", body.max_tokens_per_doc),
            ("truncate_prompt_tokens", body.truncate_prompt_tokens),
        )
        if value is not None and value != -1
    ]
    lengths = [await backend.request_max_length(field, value) for field, value in asked]
    return min((n for n in lengths if n is not None), default=None)
