"""Exact token counts for request packing, from the model's own tokenizer.json (optional:
needs `pip install "triton-reranker-client[tokenizer]"`). Only counting lives here: how a
pair's tokens follow from its texts' (the query's share of max_length, the special tokens) is
read from the server (server_limits.ServerLimits.pair_tokens), never repeated in the client."""

from __future__ import annotations

from typing import Dict

CACHE_ENTRIES = 4096  # one query against many documents is counted once


class TokenCounter:
    """text -> tokens, without special tokens, as the server's tokenizer counts them. An object
    (not a closure) that knows its tokenizer.json, so a framework can save and rebuild it
    (Haystack's to_dict/from_dict write `tokenizer_json`)."""

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.tokenizer_json = str(tokenizer_json)
        self._tokenizer = Tokenizer.from_file(self.tokenizer_json)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._cache: Dict[str, int] = {}

    def __call__(self, text: str) -> int:
        cache = self._cache
        count = cache.get(text)
        if count is None:  # a local, not cache[text]: another thread may clear the cache meanwhile
            if len(cache) > CACHE_ENTRIES:
                cache.clear()
            count = cache[text] = len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return count

    def __repr__(self) -> str:
        return f"TokenCounter({self.tokenizer_json!r})"


def token_counter(tokenizer_json: str) -> TokenCounter:
    """text -> tokens, without special tokens, as the server's tokenizer counts them."""
    return TokenCounter(tokenizer_json)
