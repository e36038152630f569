"""Request and response bodies of the standard APIs (pydantic: validation and OpenAPI docs).

Unknown request fields are ignored, as the peers do (Cohere's `priority`, vLLM's `use_activation`...).
Our extras (`long_documents` in requests; `tokens`, `truncated`, `span`, `windows` and Cohere
`meta.warnings` in answers) are additional fields only: every standard field keeps its name, type
and meaning."""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, Field, StrictStr, model_validator

LongDocuments = Literal["truncate", "window"]
LONG_DOCUMENTS_HELP = (
    "extra: truncate (default: cut at the server's max_length, FlagReranker's behaviour) or window "
    "(score overlapping windows of a long document, keep the best; `span` says where it is)"
)

# Cohere bills one search unit per 100 documents (a request of 1-100 documents is 1 unit,
# 101-200 is 2...): LiteLLM's cost tracking reads meta.billed_units.search_units.
DOCUMENTS_PER_SEARCH_UNIT = 100


def search_units(documents: int) -> int:
    return max(1, math.ceil(documents / DOCUMENTS_PER_SEARCH_UNIT))


def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class CohereRerankRequest(BaseModel):
    """Cohere v1/v2, Jina, vLLM and Infinity: `documents` are strings or objects."""

    model: Optional[str] = Field(
        None, description="any name unless REST_MODEL_ALIASES is set (then one of GET /v1/models)"
    )
    query: StrictStr
    documents: List[Any] = Field(
        description='strings or objects: {"text": ...}, or any fields named in `rank_fields` (other keys are kept)'
    )
    rank_fields: Optional[List[StrictStr]] = Field(
        None,
        description="Cohere v1: the object fields to rank on, in order; joined as `field: value` lines "
        "(the YAML form Cohere recommends for structured documents). Default: `text`",
    )
    top_n: Optional[int] = Field(None, ge=0, description="answer only the best top_n (default, or 0 as in vLLM: all)")
    return_documents: Optional[bool] = Field(
        None,
        description="include each document in its result. Default: false on /v1/rerank and /v2/rerank "
        "(Cohere), true on /rerank (vLLM and Jina return documents)",
    )
    long_documents: LongDocuments = Field("truncate", description=LONG_DOCUMENTS_HELP)
    max_tokens_per_doc: Optional[int] = Field(
        None,
        ge=1,
        description="tokens per query+document pair for this request (the server's tokenizer cuts the "
        "pair to it with FlagReranker's rules: query to 3/4 of it, then the document); a value >= the "
        "server's max_length changes nothing; below the server's smallest (17): 400",
    )
    truncate_prompt_tokens: Optional[int] = Field(
        None,
        ge=-1,
        description="vLLM: tokens per query+document pair for this request (as max_tokens_per_doc); "
        "-1 or a value >= the server's max_length: the server's max_length",
    )

    @model_validator(mode="after")
    def _documents(self) -> CohereRerankRequest:
        fields = self.rank_fields
        for i, doc in enumerate(self.documents):
            if isinstance(doc, str):
                continue
            if not isinstance(doc, dict):
                raise ValueError(f"documents[{i}]: expected a string or an object, got {_json_type(doc)}")
            if fields:
                if not any(f in doc for f in fields):
                    raise ValueError(f"documents[{i}]: has none of the rank_fields {fields}")
            elif not isinstance(doc.get("text"), str):
                raise ValueError(
                    f"documents[{i}]: an object needs a string `text` (or name the fields to rank on in `rank_fields`)"
                )
        return self

    def texts(self) -> List[str]:
        return [self._text(d) for d in self.documents]

    def _text(self, doc: Any) -> str:
        if isinstance(doc, str):
            return doc
        if not self.rank_fields:
            return doc["text"]
        if len(self.rank_fields) == 1 and isinstance(doc.get(self.rank_fields[0]), str):
            return doc[self.rank_fields[0]]
        return "\n".join(f"{f}: {_field_text(doc[f])}" for f in self.rank_fields if f in doc)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = Field(1, description="one per 100 documents, as Cohere bills")


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits = Field(default_factory=lambda: BilledUnits(search_units=1))
    warnings: Optional[List[str]] = None


class Usage(BaseModel):
    total_tokens: int


class CohereResult(BaseModel):
    index: int
    relevance_score: float = Field(description="sigmoid of the model's logit, in [0, 1]")
    document: Optional[Union[Dict[str, Any], str]] = Field(
        None, description='the document as sent ({"text": ...} for a string); the text itself on /infinity/rerank'
    )
    tokens: int = Field(description="extra: tokens of the query+document pair the model saw")
    truncated: bool = Field(
        description="extra: the pair was cut to the request's max length (the server's unless set shorter)"
    )
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
    # Not TEI's: LiteLLM's huggingface/ provider puts Cohere's top_n into a TEI body
    # (litellm/llms/huggingface/rerank/transformation.py) and expects that many results back.
    top_n: Optional[int] = Field(None, ge=0, description="extra: return only the best top_n (0 or absent: all)")


class TeiRank(BaseModel):
    index: int
    score: float
    text: Optional[str] = None
    tokens: int = Field(description="extra: tokens of the query+text pair the model saw")
    truncated: bool = Field(
        description="extra: the pair was cut to the request's max length (the server's unless set shorter)"
    )
    span: Optional[Tuple[int, int]] = Field(
        None, description="extra, window mode: character offsets of the best window"
    )
    windows: Optional[int] = Field(None, description="extra, window mode: windows scored for this text")


TeiRerankResponse = List[TeiRank]
