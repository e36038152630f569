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

# Tokenizer work is bounded by what a pair can keep, not by what a caller sends. A text is
# tokenized from a prefix cut at a "safe" point (below): first FIRST_CUT_BYTES_PER_TOKEN bytes
# for each token the text may need, then GROWTH times more while the prefix yields too few
# tokens. 8 bytes per token covers every language of the calibration set in one round (XLM-R
# averages 3-5 bytes per token); a text with few tokens per byte costs a few more rounds, at
# most GROWTH/(GROWTH-1) times a whole-text tokenization in total.
FIRST_CUT_BYTES_PER_TOKEN = 8
CUT_GROWTH = 4


def safe_cut(text: str, budget: int) -> int | None:
    """An index i >= budget (nearest one) such that the tokens of text[:i] are exactly the first
    tokens of text, or None when there is none (the whole text must be tokenized).

    Why a prefix cut there keeps every token: XLM-R's pipeline is normalise (sentencepiece's
    precompiled NFKC charsmap, collapsing runs of spaces, `` and '' to ") -> pre-tokenise on
    spaces (Metaspace: each word becomes '▁word') -> Unigram (Viterbi) inside each word. Cut just
    before an ASCII space whose left neighbour is a letter or digit: the normalisation of the
    left part cannot involve the space or anything after it (none of its rewrites spans a letter
    and a following space), the left part ends a word, and Unigram never looks across words, so
    the left part's tokens are identical to the first tokens of the whole text. Cutting inside
    a word is not safe (Viterbi over the word may segment it differently), nor after a run of
    spaces or a character that normalises to nothing. `budget` is a byte budget applied as a
    character count: a character is at least one byte, so the prefix is never shorter than
    `budget` bytes would be."""
    if budget >= len(text):
        return None
    i = text.find(" ", budget)
    while i != -1:
        if text[i - 1].isalnum():
            return i
        i = text.find(" ", i + 1)
    return None


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

    def encode_bounded(self, texts: list[str], needs: list[int]) -> list[list[int]]:
        """Token ids of each text, exact for its first needs[i] tokens (all of them when the text
        has fewer): each text is tokenized from a safe prefix (`safe_cut`) that grows until it
        yields needs[i] tokens or is the whole text. One `encode_batch` call per round."""
        ids: list[list[int] | None] = [None] * len(texts)
        budgets = [need * FIRST_CUT_BYTES_PER_TOKEN for need in needs]
        pending = list(range(len(texts)))
        while pending:
            cuts = [safe_cut(texts[i], budgets[i]) for i in pending]
            prefixes = [texts[i] if cut is None else texts[i][:cut] for i, cut in zip(pending, cuts)]
            encodings = self.tokenizer.encode_batch(prefixes, add_special_tokens=False)
            again = []
            for i, cut, encoding in zip(pending, cuts, encodings):
                if cut is None or len(encoding.ids) >= needs[i]:
                    ids[i] = encoding.ids
                else:
                    budgets[i] = cut * CUT_GROWTH
                    again.append(i)
            pending = again
        return ids  # type: ignore[return-value]

    def tokenize_requests(self, requests: list[tuple[list[object], list[object]]]
                          ) -> list[PairBatch | InvalidInput]:
        """Tokenize many requests in one batch; a bad request fails alone. Each distinct text is
        tokenized once (a rerank request repeats its query for every pair), and only as far as a
        pair can use it: query_max_length + 1 tokens of a query, max_length + 1 of a passage (the
        extra token tells whether the text was truncated)."""
        results: list[PairBatch | InvalidInput | None] = [None] * len(requests)
        slot: dict[str, int] = {}  # text -> its index in `texts`
        texts: list[str] = []
        needs: list[int] = []
        spans: list[tuple[int, list[int], list[int]]] = []  # (request, query slots, passage slots)

        def place(text: str, need: int) -> int:
            index = slot.setdefault(text, len(texts))
            if index == len(texts):
                texts.append(text)
                needs.append(need)
            else:
                needs[index] = max(needs[index], need)
            return index

        for r, (raw_queries, raw_passages) in enumerate(requests):
            try:
                queries, passages = self._decode_request(raw_queries, raw_passages)
            except InvalidInput as err:
                results[r] = err
                continue
            spans.append((r, [place(q, self.query_max_length + 1) for q in queries],
                          [place(p, self.max_length + 1) for p in passages]))
        encoded = self.encode_bounded(texts, needs) if texts else []
        for r, query_slots, passage_slots in spans:
            try:
                results[r] = self.pad([self.join(i, encoded[q], encoded[p])
                                       for i, (q, p) in enumerate(zip(query_slots, passage_slots))])
            except InvalidInput as err:
                results[r] = err
        return results  # type: ignore[return-value]

    def tokenize_request(self, raw_queries: list[object], raw_passages: list[object]) -> PairBatch:
        """Validate, tokenize and pad one request; raises InvalidInput."""
        result = self.tokenize_requests([(raw_queries, raw_passages)])[0]
        if isinstance(result, InvalidInput):
            raise result
        return result
