"""Hugging Face text-embeddings-inference `POST /rerank`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from .errors import ApiError
from .schemas import TeiRank, TeiRerankRequest, TeiRerankResponse
from .security import require_key

router = APIRouter(dependencies=[Depends(require_key)], tags=["TEI"])


@router.post("/rerank", response_model=TeiRerankResponse, response_model_exclude_none=True)
async def rerank(body: TeiRerankRequest, request: Request) -> TeiRerankResponse:
    backend = request.app.state.backend
    if body.truncation_direction.lower() == "left":
        raise ApiError(400, "truncation_direction: only Right is supported (the server keeps the start of each text)")
    ranked = await backend.rerank(body.query, body.texts, None, "texts", body.long_documents)
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
