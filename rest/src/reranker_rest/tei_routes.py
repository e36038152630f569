"""`POST /rerank` in both dialects: Hugging Face text-embeddings-inference (`texts`, answered
as TEI's list) and Cohere/Jina (`documents`, answered as Cohere/Jina), which vLLM, Infinity,
RAGFlow and LiteLLM's hosted_vllm/ and infinity/ providers post to this path."""

from __future__ import annotations

from typing import Union

from fastapi import APIRouter, Depends, Request

from . import cohere_routes
from .body import openapi_body, parse, read_object
from .errors import ApiError
from .schemas import CohereRerankRequest, CohereRerankResponse, TeiRank, TeiRerankRequest, TeiRerankResponse
from .security import require_key

router = APIRouter(dependencies=[Depends(require_key)], tags=["TEI", "Cohere / Jina"])


@router.post(
    "/rerank",
    response_model=Union[TeiRerankResponse, CohereRerankResponse],
    response_model_exclude_none=True,
    openapi_extra=openapi_body(TeiRerankRequest, CohereRerankRequest),
)
async def rerank(request: Request) -> Union[TeiRerankResponse, CohereRerankResponse]:
    data = await read_object(request)
    if "texts" in data:
        request.state.dialect = "tei"
        return await tei_answer(parse(TeiRerankRequest, data), request)
    if "documents" in data:
        request.state.dialect = "cohere"
        return await cohere_routes.answer(parse(CohereRerankRequest, data), request, "1", return_documents=True)
    raise ApiError(
        422,
        "request body: needs `texts` (TEI: answered as a list of {index, score}) or `documents` "
        "(Cohere/Jina/vLLM: answered as {results: [{index, relevance_score}]})",
    )


async def tei_answer(body: TeiRerankRequest, request: Request) -> TeiRerankResponse:
    backend = request.app.state.backend
    if body.truncation_direction.lower() == "left":
        raise ApiError(400, "truncation_direction: only Right is supported (the server keeps the start of each text)")
    ranked = await backend.rerank(body.query, body.texts, body.top_n or None, "texts", body.long_documents)
    request.app.state.metrics.documents.labels(request.url.path).inc(len(ranked))
    if body.truncate is False:
        cut = sorted(r.index for r in ranked if r.truncated)
        if cut:
            raise ApiError(
                400,
                f"texts[{cut[0]}]: the query+text pair is longer than the server's max_length "
                f"of {await backend.max_length()} tokens ({len(cut)} text(s) affected); "
                f"send truncate=true to cut it",
            )
    # TEI answers best first too.
    return [
        TeiRank(
            index=r.index,
            score=r.logit if body.raw_scores else r.score,
            text=body.texts[r.index] if body.return_text else None,
            tokens=r.tokens,
            truncated=r.truncated,
            span=r.span,
            windows=r.windows,
        )
        for r in ranked
    ]
