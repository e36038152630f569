"""Request and response bodies of the standard APIs (pydantic: validation and OpenAPI docs).

Unknown request fields are ignored, as the peers do (Cohere's `rank_fields`, `priority`...).
Our extras (`long_documents` in requests; `tokens`, `truncated`, `span`, `windows` and Cohere
`meta.warnings` in answers) are additional fields only: every standard field keeps its name, type
and meaning."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import BaseModel, Field, StrictStr, field_validator

LongDocuments = Literal["truncate", "window"]
LONG_DOCUMENTS_HELP = (
    "extra: truncate (default: cut at the server's max_length, FlagReranker's behaviour) or window "
    "(score overlapping windows of a long document, keep the best; `span` says where it is)"
)


class CohereRerankRequest(BaseModel):
    """Cohere v1/v2 and Jina: `documents` are strings or objects with a string `text`."""

    model: Optional[str] = Field(None, description="accepted and ignored: this server runs one model")
    query: StrictStr
    documents: List[Any] = Field(description='strings or {"text": ...} objects (other keys are kept)')
    top_n: Optional[int] = Field(None, ge=1, description="answer only the best top_n (default: all)")
    return_documents: bool = Field(False, description="include each document in its result (Cohere's default: false)")
    long_documents: LongDocuments = Field("truncate", description=LONG_DOCUMENTS_HELP)
    max_tokens_per_doc: Optional[int] = Field(
        None,
        ge=1,
        description="accepted when >= the server's max_length (documents are cut to the pair "
        "limit anyway); a smaller value is refused with 400: it cannot be honoured",
    )

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: List[Any]) -> List[Any]:
        for i, doc in enumerate(value):
            if isinstance(doc, str):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                continue
            got = "an object without a string `text`" if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"documents[{i}]: expected a string or an object with a string `text`, got {got}")
        return value

    def texts(self) -> List[str]:
        return [d if isinstance(d, str) else d["text"] for d in self.documents]


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits = BilledUnits()
    warnings: Optional[List[str]] = None


class Usage(BaseModel):
    total_tokens: int


class CohereResult(BaseModel):
    index: int
    relevance_score: float = Field(description="sigmoid of the model's logit, in [0, 1]")
    document: Optional[Dict[str, Any]] = None
    tokens: int = Field(description="extra: tokens of the query+document pair the model saw")
    truncated: bool = Field(description="extra: the pair was cut to the server's max_length")
    span: Optional[Tuple[int, int]] = Field(
        None, description="extra, window mode: character offsets of the best window"
    )
    windows: Optional[int] = Field(None, description="extra, window mode: windows scored for this document")


class CohereRerankResponse(BaseModel):
    id: str
    results: List[CohereResult]
    meta: Meta
    model: str = Field(description="Jina's field: the served model")
    usage: Usage = Field(description="Jina's field: tokens the model saw for this request")


class TeiRerankRequest(BaseModel):
    """Hugging Face text-embeddings-inference `/rerank`."""

    query: StrictStr
    texts: List[StrictStr]
    raw_scores: bool = Field(False, description="score = the raw logit instead of its sigmoid")
    return_text: bool = False
    truncate: Optional[bool] = Field(
        None,
        description="false: refuse (400) a pair longer than the server's max_length; true or absent: "
        "cut it (as TEI started with --auto-truncate)",
    )
    truncation_direction: Literal["Right", "right", "Left", "left"] = "Right"
    long_documents: LongDocuments = Field("truncate", description=LONG_DOCUMENTS_HELP)


class TeiRank(BaseModel):
    index: int
    score: float
    text: Optional[str] = None
    tokens: int = Field(description="extra: tokens of the query+text pair the model saw")
    truncated: bool = Field(description="extra: the pair was cut to the server's max_length")
    span: Optional[Tuple[int, int]] = Field(
        None, description="extra, window mode: character offsets of the best window"
    )
    windows: Optional[int] = Field(None, description="extra, window mode: windows scored for this text")


TeiRerankResponse = List[TeiRank]
