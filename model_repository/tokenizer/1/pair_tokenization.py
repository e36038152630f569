"""FlagReranker's pair tokenization, on the `tokenizers` library, padded to length buckets.

Plain functions with no Triton import, so unit tests, the export's parity gate and the
benchmarks run exactly the code the server runs.

Semantics (FlagEmbedding's FlagReranker, bge-reranker-v2-m3's reference implementation):
query and passage are tokenized separately without special tokens; the query is cut to
`query_max_length` tokens (3/4 of max_length: export/settings.py ServingLimits decides it and
the config carries it), the passage to `max_length`; the pair is joined as
`<s> q </s></s> p </s>` and the passage is cut ('only_second') so the pair fits max_length.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

SPECIAL_TOKENS_PER_PAIR = 4  # <s> q </s></s> p </s>


class InvalidInput(ValueError):
    """A request item that cannot be scored; the message names the field and the limit."""


@dataclass(frozen=True)
class PairBatch:
    input_ids: np.ndarray  # int64 [B, L], L = the smallest bucket that fits the longest pair
    attention_mask: np.ndarray  # int64 [B, L]
    tokens: np.ndarray  # int32 [B, 1]: tokens of each pair, special tokens included
    truncated: np.ndarray  # bool [B, 1]: query or passage lost tokens to max_length


class PairTokenizer:
    def __init__(self, tokenizer_json: str, max_length: int, query_max_length: int,
                 buckets: list[int], max_text_bytes: int) -> None:
        if not buckets or buckets[-1] != max_length:
            raise ValueError(f"the largest bucket must equal max_length={max_length}: {buckets}")
        self.tokenizer = Tokenizer.from_file(tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.buckets = list(buckets)
        self.max_text_bytes = max_text_bytes
        self.cls_id = self._token_id("<s>")
        self.sep_id = self._token_id("</s>")
        self.pad_id = self._token_id("<pad>")

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer has no {token!r} token: not an XLM-RoBERTa tokenizer")
        return token_id

    def decode_text(self, field: str, index: int, raw: object) -> str:
        """Validate one wire item (bytes) and return it as text, or raise InvalidInput."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if not isinstance(raw, (bytes, bytearray)):
            raise InvalidInput(f"{field}[{index}]: expected a UTF-8 string, got {type(raw).__name__}")
        if len(raw) > self.max_text_bytes:
            raise InvalidInput(
                f"{field}[{index}]: {len(raw)} bytes exceeds the limit of {self.max_text_bytes} "
                f"bytes per text")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInput(f"{field}[{index}]: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        if "\x00" in text:
            raise InvalidInput(f"{field}[{index}]: contains a NUL character")
        if not text.strip():
            raise InvalidInput(f"{field}[{index}]: is empty or whitespace only")
        return text

    def join(self, index: int, q: list[int], p: list[int]) -> tuple[list[int], bool]:
        """`<s> q </s></s> p </s>` within max_length, and whether anything was cut."""
        truncated = len(q) > self.query_max_length or len(p) > self.max_length
        q = q[: self.query_max_length]
        p = p[: self.max_length]
        overflow = len(q) + len(p) + SPECIAL_TOKENS_PER_PAIR - self.max_length
        if overflow > 0:  # 'only_second': the passage gives up the tokens
            p = p[: len(p) - overflow]
            truncated = True
        if not q or not p:
            raise InvalidInput(f"{'query' if not q else 'passage'}[{index}]: produces no tokens")
        return [self.cls_id, *q, self.sep_id, self.sep_id, *p, self.sep_id], truncated

    def bucket_for(self, length: int) -> int:
        """The smallest configured bucket that holds `length` tokens."""
        position = bisect.bisect_left(self.buckets, length)
        if position == len(self.buckets):
            raise InvalidInput(f"{length} tokens exceeds max_length={self.max_length}")
        return self.buckets[position]

    def pad(self, pairs: list[tuple[list[int], bool]]) -> PairBatch:
        """Pad every pair of one request to the request's bucket."""
        lengths = [len(ids) for ids, _ in pairs]
        width = self.bucket_for(max(lengths))
        input_ids = np.full((len(pairs), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(pairs), width), dtype=np.int64)
        for row, (ids, _) in enumerate(pairs):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return PairBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            tokens=np.asarray(lengths, dtype=np.int32).reshape(-1, 1),
            truncated=np.asarray([t for _, t in pairs], dtype=bool).reshape(-1, 1),
        )

    def _decode_request(self, raw_queries: list[object], raw_passages: list[object]
                        ) -> tuple[list[str], list[str]]:
        if len(raw_queries) != len(raw_passages):
            raise InvalidInput(f"query has {len(raw_queries)} items but passage has "
                               f"{len(raw_passages)}: they must match")
        if not raw_queries:
            raise InvalidInput("query: the request holds no pairs")
        queries = [self.decode_text("query", i, q) for i, q in enumerate(raw_queries)]
        passages = [self.decode_text("passage", i, p) for i, p in enumerate(raw_passages)]
        return queries, passages

    def tokenize_requests(self, requests: list[tuple[list[object], list[object]]]
                          ) -> list[PairBatch | InvalidInput]:
        """Tokenize many requests in one `encode_batch` call; a bad request fails alone."""
        results: list[PairBatch | InvalidInput | None] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request, first text, pairs)
        for r, (raw_queries, raw_passages) in enumerate(requests):
            try:
                queries, passages = self._decode_request(raw_queries, raw_passages)
            except InvalidInput as err:
                results[r] = err
                continue
            spans.append((r, len(texts), len(queries)))
            texts += queries + passages
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        for r, first, n in spans:
            try:
                results[r] = self.pad([
                    self.join(i, encodings[first + i].ids, encodings[first + n + i].ids)
                    for i in range(n)])
            except InvalidInput as err:
                results[r] = err
        return results  # type: ignore[return-value]

    def tokenize_request(self, raw_queries: list[object], raw_passages: list[object]) -> PairBatch:
        """Validate, tokenize and pad one request; raises InvalidInput."""
        result = self.tokenize_requests([(raw_queries, raw_passages)])[0]
        if isinstance(result, InvalidInput):
            raise result
        return result
