"""Window mode's reference, computed independently of the server's code: the documented rule
(docs/SERVING.md "Long documents") written out plainly over the transformers tokenizer's own token
offsets and word ids, and FlagReranker scoring each window's text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.references import flag_reranker, flag_scores


@dataclass(frozen=True)
class Windows:
    spans: list[tuple[int, int]]  # character offsets of each window's text in the passage
    texts: list[str]
    logits: np.ndarray  # FlagReranker (normalize=False) on (query, window text)

    @property
    def best(self) -> float:
        return float(self.logits.max())


def window_spans(
    model_dir: Path, query: str, passage: str, max_length: int, stride: int | None = None
) -> list[tuple[int, int]]:
    tokenizer = flag_reranker(str(model_dir)).tokenizer
    query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"][: max_length * 3 // 4])
    encoded = tokenizer(passage, add_special_tokens=False, return_offsets_mapping=True)
    offsets, words, n = encoded["offset_mapping"], encoded.word_ids(), len(encoded["input_ids"])
    width = max_length - query_tokens - 4  # <s> q </s></s> p </s>
    stride = stride or width // 2
    is_word_start = [i == 0 or words[i] != words[i - 1] for i in range(n)]
    token_ranges, start = [], 0
    while True:
        end = min(start + width, n)
        if end < n:  # end before the last word that begins within reach, if any
            candidates = [j for j in range(start + 1, end + 1) if is_word_start[j]]
            end = candidates[-1] if candidates else end
        token_ranges.append((start, end))
        if end == n:
            break
        target = min(start + stride, end)
        candidates = [j for j in range(start + 1, target + 1) if is_word_start[j]]
        start = candidates[-1] if candidates else target
    spans = []
    for first, last in token_ranges:
        begin, finish = offsets[first][0], offsets[last - 1][1]
        while passage[begin].isspace():  # a word's first token carries the space before it
            begin += 1
        spans.append((begin, finish))
    return spans


def reference_windows(model_dir: Path, query: str, passage: str, max_length: int, stride: int | None = None) -> Windows:
    spans = window_spans(model_dir, query, passage, max_length, stride)
    texts = [passage[a:b] for a, b in spans]
    logits = flag_scores(model_dir, [(query, t) for t in texts], max_length=max_length, normalize=False)
    return Windows(spans, texts, logits)
