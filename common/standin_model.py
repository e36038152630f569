"""Builds stand-in models in the real bge-reranker-v2-m3 format, offline.

The Hub is out of reach here, so tests, the offline demo and the benchmarks use an
`XLMRobertaForSequenceClassification` with random weights and an XLM-R tokenizer made the
way XLM-R's own tokenizer.json was made: a sentencepiece Unigram model converted by
transformers (`XLMRobertaTokenizerFast(vocab_file=...)`).

    python -m common.standin_model OUT_DIR [--shape tiny|bench|real]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.calibration_texts import corpus_lines, long_passage, pairs


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int | None  # None: the tokenizer's vocabulary size
    # Random weights at the usual 0.02 make every pair look alike (logit std ~1e-4); larger ones
    # give inputs real influence, so a broken mask or truncation shows up in the scores.
    init_range: float


SHAPES = {
    "tiny": Shape(layers=2, hidden=64, heads=4, intermediate=128, vocab=None, init_range=0.3),
    # Enough compute for honest benchmark numbers on two CPU cores.
    "bench": Shape(layers=6, hidden=1024, heads=16, intermediate=4096, vocab=None, init_range=0.06),
    # The real bge-reranker-v2-m3 geometry (568M parameters, 2.27 GB in fp32).
    "real": Shape(layers=24, hidden=1024, heads=16, intermediate=4096, vocab=250002, init_range=0.05),
}


def train_tokenizer(out_dir: Path, vocab_size: int = 1500) -> None:
    """Train a sentencepiece Unigram model on multilingual text and convert it to XLM-R format."""
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        lines = corpus_lines() + [long_passage(6, offset=i) for i in range(20)]
        text.write_text("\n".join(lines * 3), encoding="utf-8")
        prefix = Path(tmp) / "spm"
        spm.SentencePieceTrainer.train(
            input=str(text),
            model_prefix=str(prefix),
            model_type="unigram",
            vocab_size=vocab_size,
            character_coverage=1.0,
            byte_fallback=False,
            hard_vocab_limit=False,
            minloglevel=2,
            # The special pieces XLM-R's fairseq conversion expects at ids 0..2.
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
        )
        tokenizer = XLMRobertaTokenizerFast(vocab_file=str(prefix) + ".model")
        tokenizer.model_max_length = 8192
        tokenizer.save_pretrained(out_dir)


def model_config(shape: Shape, tokenizer_vocab: int | None = None) -> Any:
    """The XLMRobertaConfig of `shape` (bge-reranker-v2-m3's layout); `tokenizer_vocab` is the
    vocabulary size where the shape leaves it to the tokenizer."""
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=shape.vocab or tokenizer_vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        num_labels=1,
        initializer_range=shape.init_range,
        architectures=["XLMRobertaForSequenceClassification"],
    )


def build(out_dir: Path, shape_name: str = "tiny", seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir, use_safetensors=True)
    config = model_config(SHAPES[shape_name], len(tokenizer))
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(config).eval()
    # Spread the logits (std ~3, mean ~0.5 on real pairs): near 0 sigmoid hides every error.
    with torch.no_grad():
        queries, passages = zip(*pairs())
        ids = tokenizer(
            list(queries), list(passages), padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        logits = model(**ids).logits.squeeze(-1)
        scale = 3.0 / max(float(logits.std()), 1e-6)
        bias = float(model.classifier.out_proj.bias)
        model.classifier.out_proj.weight.mul_(scale)
        model.classifier.out_proj.bias.fill_(0.5 - (float(logits.mean()) - bias) * scale)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path = build(args.out_dir, args.shape, args.seed)
    print(f"stand-in model ({args.shape}) written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
