from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, TypedDict


class _RerankResultFields(TypedDict):
    index: int
    score: float
    logit: float
    tokens: int
    truncated: bool


class RerankResultDict(_RerankResultFields, total=False):
    """RerankResult.to_dict(): span and windows in window mode, document when returned."""

    span: List[int]
    windows: Optional[int]
    document: str


@dataclass(frozen=True)
class RerankResult:
    index: int  # position of the document in the caller's list
    score: float  # sigmoid(logit), in [0, 1]
    logit: float  # the model's raw output (FlagReranker's normalize=False)
    tokens: int  # tokens of the query+document pair that the model saw
    truncated: bool  # query or document was cut to the call's max_length (the server's unless set)
    document: Optional[str] = None
    # long_documents="window": (start, end) character offsets (Python str indices) of the best
    # window in the document, document[start:end] being its text, and how many windows were
    # scored. None in truncate mode.
    span: Optional[Tuple[int, int]] = None
    windows: Optional[int] = None

    def to_dict(self) -> RerankResultDict:
        out: RerankResultDict = {
            "index": self.index,
            "score": self.score,
            "logit": self.logit,
            "tokens": self.tokens,
            "truncated": self.truncated,
        }
        if self.span is not None:
            out["span"] = list(self.span)
            out["windows"] = self.windows
        if self.document is not None:
            out["document"] = self.document
        return out
