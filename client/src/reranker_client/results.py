from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RerankResult:
    index: int  # position of the document in the caller's list
    score: float  # sigmoid(logit), in [0, 1]
    logit: float  # the model's raw output (FlagReranker's normalize=False)
    tokens: int  # tokens of the query+document pair that the model saw
    truncated: bool  # query or document was cut to the server's max_length
    document: Optional[str] = None

    def to_dict(self) -> dict:
        out = {"index": self.index, "score": self.score, "logit": self.logit,
               "tokens": self.tokens, "truncated": self.truncated}
        if self.document is not None:
            out["document"] = self.document
        return out
