"""The serving pair tokenizer (model_repository/tokenizer/1/pair_tokenization.py) built with the
limits a repository serves, as the tokenizer model builds it inside Triton."""

from __future__ import annotations

from pathlib import Path

from common.serving_code import pair_tokenization_module
from export.settings import MAX_WINDOWS_PER_PASSAGE, MAX_WINDOWS_PER_REQUEST, ServingLimits


def load_pair_tokenizer(tokenizer_dir: Path, limits: ServingLimits):
    return pair_tokenizer_from_json(tokenizer_dir / "tokenizer.json", limits)


def pair_tokenizer_from_json(tokenizer_json: Path | str, limits: ServingLimits):
    return pair_tokenization_module().PairTokenizer(
        str(tokenizer_json),
        limits.max_length,
        limits.query_max_length,
        limits.buckets,
        limits.max_text_bytes,
        MAX_WINDOWS_PER_PASSAGE,
        MAX_WINDOWS_PER_REQUEST,
    )
