"""Exact pair lengths for request packing, from the model's own tokenizer.json (optional:
needs `pip install "triton-reranker-client[tokenizer]"`)."""

from __future__ import annotations

from typing import Callable


def token_length_function(tokenizer_json: str, max_length: int = 512) -> Callable[[str, str], int]:
    """(query, document) -> tokens the server will use for the pair (FlagReranker's rules)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    query_max = max_length * 3 // 4
    cache: dict = {}

    def count(text: str) -> int:
        if text not in cache:  # one query against many documents: count it once
            if len(cache) > 4096:
                cache.clear()
            cache[text] = len(tokenizer.encode(text, add_special_tokens=False).ids)
        return cache[text]

    def pair_length(query: str, document: str) -> int:
        return min(min(count(query), query_max) + count(document) + 4, max_length)

    return pair_length
