"""Exact token counts for request packing, from the model's own tokenizer.json (optional:
needs `pip install "triton-reranker-client[tokenizer]"`). Only counting lives here: how a
pair's tokens follow from its texts' (the query's share of max_length, the special tokens) is
read from the server (server_limits.ServerLimits.pair_tokens), never repeated in the client."""

from __future__ import annotations

from typing import Callable, Dict

CACHE_ENTRIES = 4096  # one query against many documents is counted once


def token_counter(tokenizer_json: str) -> Callable[[str], int]:
    """text -> tokens, without special tokens, as the server's tokenizer counts them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    cache: Dict[str, int] = {}

    def count(text: str) -> int:
        if text not in cache:
            if len(cache) > CACHE_ENTRIES:
                cache.clear()
            cache[text] = len(tokenizer.encode(text, add_special_tokens=False).ids)
        return cache[text]

    return count
