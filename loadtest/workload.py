"""A realistic multilingual rerank workload with a documented length mix.

RAG passages are mostly short chunks. Token lengths (passage alone, this model's tokenizer):
    60%  40-150 tokens     typical retrieval chunks
    30%  150-300 tokens    long chunks
     7%  300-max_length    whole sections
     3%  > max_length      over-long documents, truncated by the server (flagged)
Queries are real questions in 15 languages/scripts; passages are built from real
multilingual paragraphs (common/calibration_texts.py) cut to the drawn token length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenizers import Tokenizer

from common import calibration_texts

LENGTH_MIX = [(0.60, 40, 150), (0.30, 150, 300), (0.07, 300, None), (0.03, None, None)]


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str
    passage_tokens: int


def _draw_length(rng: random.Random, max_length: int) -> int:
    r, acc = rng.random(), 0.0
    for share, low, high in LENGTH_MIX:
        acc += share
        if r <= acc:
            low = low if low is not None else max_length + 1
            high = high if high is not None else (max_length if low <= max_length else 2 * max_length)
            return rng.randint(low, max(low, high))
    return max_length


def make_pairs(tokenizer_json: str, count: int, max_length: int, seed: int = 0) -> list[Pair]:
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_truncation()
    rng = random.Random(seed)
    queries = [q for _, q, _ in calibration_texts.TOPICS]
    source = calibration_texts.long_passage(400)  # ~60k characters of mixed-language text
    encoding = tokenizer.encode(source, add_special_tokens=False)
    pairs = []
    for _ in range(count):
        tokens = min(_draw_length(rng, max_length), len(encoding.ids) - 1)
        start = rng.randint(0, len(encoding.ids) - tokens - 1)
        first, last = encoding.offsets[start][0], encoding.offsets[start + tokens - 1][1]
        passage = source[first:last].strip()
        pairs.append(Pair(rng.choice(queries), passage, len(tokenizer.encode(passage, add_special_tokens=False).ids)))
    return pairs


def hundred_passage_requests(
    tokenizer_json: str, requests: int, max_length: int, seed: int = 0
) -> list[tuple[str, list[str]]]:
    """`requests` rerank calls of one query x 100 passages each (the RAG shape)."""
    pairs = make_pairs(tokenizer_json, 100 * requests, max_length, seed)
    return [(pairs[i * 100].query, [p.passage for p in pairs[i * 100 : (i + 1) * 100]]) for i in range(requests)]
