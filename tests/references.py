"""Reference scores from the implementations users compare against."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from export.settings import DEFAULT_MAX_LENGTH


@lru_cache(maxsize=4)
def flag_reranker(model_dir: str):
    from FlagEmbedding import FlagReranker

    return FlagReranker(model_dir, use_fp16=False, devices="cpu")


def flag_scores(model_dir: Path, pairs, max_length: int = DEFAULT_MAX_LENGTH, normalize: bool = True) -> np.ndarray:
    scores = flag_reranker(str(model_dir)).compute_score(
        [list(p) for p in pairs], max_length=max_length, normalize=normalize, batch_size=32
    )
    return np.asarray(scores if isinstance(scores, list) else [scores], dtype=np.float64)


def flag_token_ids(model_dir: Path, pairs, max_length: int = DEFAULT_MAX_LENGTH) -> list[list[int]]:
    """FlagReranker's own tokenization of each pair (its compute_score code path)."""
    from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat

    tokenizer = flag_reranker(str(model_dir)).tokenizer
    out = []
    for query, passage in pairs:
        q = tokenizer(query, add_special_tokens=False, max_length=max_length * 3 // 4, truncation=True)["input_ids"]
        p = tokenizer(passage, add_special_tokens=False, max_length=max_length, truncation=True)["input_ids"]
        item = prepare_for_model_compat(tokenizer, q, p, truncation="only_second", max_length=max_length, padding=False)
        out.append(list(item["input_ids"]))
    return out


@lru_cache(maxsize=4)
def torch_model(model_dir: str):
    from transformers import XLMRobertaForSequenceClassification

    return XLMRobertaForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()


def torch_logits(model_dir: Path, token_ids: list[list[int]]) -> np.ndarray:
    """Plain PyTorch, one unpadded pair at a time."""
    import torch

    model = torch_model(str(model_dir))
    with torch.no_grad():
        return np.array([float(model(input_ids=torch.tensor([ids])).logits[0, 0]) for ids in token_ids])
