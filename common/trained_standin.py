"""A stand-in that is trained, not drawn: the int8 profile's positive evidence (docs/CPU.md).

The random stand-ins (common/standin_model.py) make every pair look alike and then scale the
classifier until near-identical representations spread to a logit std of 3; any perturbation of
the encoder is scaled up with them, so int8 is refused on them at every rung. That refusal is the
gate's negative evidence and stays. A trained model is different: its logit is read from features
that separate relevant from irrelevant pairs, so a small perturbation of the encoder moves it by a
small amount. This module trains such a model, small and quickly, on a synthetic relevance task:

    target logit = 10 x (share of the query's character trigrams found in the passage) - 5

The queries are word spans cut from the calibration passages (common/calibration_texts.py - never
the certificate's texts, which stay held out for the gate), some with words swapped for words of
other passages, and the calibration queries themselves; passages are 1 to 4 calibration passages
joined (as the certificate's ranking list is built). The model must compare the two segments
across the separator - what a cross-encoder's attention does - to fit it. The tokenizer is the
stand-in's (sentencepiece Unigram trained on the calibration text, XLM-R format).

The logit scale of a real reranker (issue 31's review): trained for minutes, the model learns the
task's ordering but only a fraction of its range - on a 100-passage list its logits spanned ~1 (400
steps) or ~3-4 (1,000 steps), where the real bge-reranker-v2-m3 spans roughly -10..+10. On such a
compressed scale an absolute bound (the int8 gate's 0.5 logit, 0.05 score) never bites: every
error is small beside it, good quantizations and bad ones pass alike. So, after training, the
classifier's last layer is rescaled deterministically (`spread_head`): its weight and bias are
multiplied by one factor and its bias shifted so the calibration 100-passage list
(common/calibration_texts.hundred_passages - not the certificate's list, which stays held out)
spans exactly LIST_SPAN logits, centred on 0. A linear map of the logit: the ordering, and every
error's size relative to the spread, are the trained model's own; only the absolute scale is the
real model's, which is what the certificate's absolute bounds are written for.

Deterministic: seeded data and weights, a fixed thread count; the loss curve, the head's factor and
the sha256 of the weights are written beside them (training.json; SHA256 pins the result on this
stack - tests/test_int8_gate.py checks it). About two minutes on 2 cores; the Makefile builds it once
(`make standin-trained`, runs/trained-model).

    python -m common.trained_standin OUT_DIR [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common.calibration_texts import TOPICS
from common.standin_model import Shape, model_config, train_tokenizer

# Small enough to train in minutes on 2 cores, deep enough that errors of one layer pass through
# others (int8 escalation rungs keep whole layers fp32). Init 0.02 (BERT/XLM-R's own), as a trained
# model starts.
SHAPE = Shape(layers=4, hidden=128, heads=4, intermediate=512, vocab=None, init_range=0.02)
THREADS = 1  # fixed: float sums depend on the thread split (and one thread is the faster on a shared 2-core VM)


# The span of the calibration 100-passage list after spread_head, in logits: the real
# bge-reranker-v2-m3 spans roughly -10..+10 over a 100-passage candidate list (the int8 bound's
# "a near tie on a model whose logits span ~20", export/certificate.py), so 20, centred on 0
# (the held-out certificate list then spans ~24 on this model: -9.7..14.4).
LIST_SPAN = 20.0
LIST_CENTRE = 0.0
# sha256 of model.safetensors as build() writes it with RECIPE and seed 0 on the pinned stack
# (torch 2.x CPU, one thread); a change of recipe, texts or library shows here first.
SHA256 = "06e4211a6937f6a4279c2aab18e567ef0f4f51fb9f3a55f91bdca55608076f85"


@dataclass(frozen=True)
class Recipe:
    # 1,000 steps (2 min here): at 400 the fit was weak (held-out Pearson 0.40) and the list's
    # logits spanned ~0.9, so spread_head would have had to scale mostly noise by ~25.
    steps: int = 1000
    batch: int = 16
    max_length: int = 64  # the training pairs: a query of up to 10 words, 1-2 short passages
    max_joined: int = 2  # passages joined into one training passage: 1..max_joined
    in_passage: float = 0.6  # share of queries cut from the passage itself (the rest: elsewhere)
    # Higher rates (1e-3 and up, tried) collapse the model: the [CLS] state stops depending on the
    # input and every pair gets the mean target (held-out logit std 0.000).
    learning_rate: float = 3e-4
    layers: int = SHAPE.layers
    hidden: int = SHAPE.hidden
    # At 0.02 the [CLS] state barely depends on the input at the start (logit std ~1e-4) and the
    # few steps here never make it; 0.1 starts with input-dependent features to learn from.
    init_range: float = 0.1


RECIPE = Recipe()
_WORD = re.compile(r"\S+")


def _trigrams(text: str) -> set[str]:
    text = " ".join(text.lower().split())
    return {text[i : i + 3] for i in range(len(text) - 2)}


def target(query: str, passage: str) -> float:
    """The relevance the model learns: the share of the query's character trigrams (lower-cased,
    whitespace collapsed; works alike for spaced and unspaced scripts) found in the passage,
    mapped to a logit in [-5, 5]."""
    grams = _trigrams(query)
    share = len(grams & _trigrams(passage)) / max(len(grams), 1)
    return 10.0 * share - 5.0


def training_pairs(rng: random.Random, n: int, recipe: Recipe = RECIPE) -> list[tuple[str, str, float]]:
    passages = [p for _, _, ps in TOPICS for p in ps]
    queries = [q for _, q, _ in TOPICS]
    vocabulary = sorted({w for p in passages for w in _WORD.findall(p)})
    out = []
    for _ in range(n):
        joined = [rng.choice(passages) for _ in range(rng.randint(1, recipe.max_joined))]
        passage = " ".join(joined)
        kind = rng.random()
        if kind < 0.1:
            query = rng.choice(queries)
        else:
            # A span of a passage (inside this one or not), a random share of its words swapped for
            # words of other passages: targets spread over the whole range.
            source = rng.choice(joined) if kind < 0.1 + recipe.in_passage else rng.choice(passages)
            words = _WORD.findall(source)
            length = rng.randint(min(2, len(words)), min(10, len(words)))  # CJK: one "word"
            start = rng.randint(0, len(words) - length)
            span = words[start : start + length]
            swap = rng.random()
            query = " ".join(rng.choice(vocabulary) if rng.random() < swap else w for w in span)
        out.append((query, passage, target(query, passage)))
    return out


def _encode(tokenizer, queries, passages, recipe: Recipe):
    """A padded batch of pairs as training and the held-out fit feed the model."""
    return tokenizer(
        list(queries), list(passages), padding=True, truncation=True, max_length=recipe.max_length, return_tensors="pt"
    )


def build(out_dir: Path, recipe: Recipe = RECIPE, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir, use_safetensors=True)
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    shape = replace(
        SHAPE,
        layers=recipe.layers,
        hidden=recipe.hidden,
        intermediate=4 * recipe.hidden,
        init_range=recipe.init_range,
    )
    config = model_config(shape, len(tokenizer))
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0  # deterministic, and few steps
    model = XLMRobertaForSequenceClassification(config)
    model.train()
    rng = random.Random(seed)
    data = training_pairs(rng, recipe.steps * recipe.batch, recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.steps, pct_start=0.1
    )
    losses: list[float] = []
    started = time.monotonic()
    for step in range(recipe.steps):
        chunk = data[step * recipe.batch : (step + 1) * recipe.batch]
        queries, passages, targets = zip(*chunk)
        ids = _encode(tokenizer, queries, passages, recipe)
        logits = model(**ids).logits.squeeze(-1)
        loss = torch.nn.functional.mse_loss(logits, torch.tensor(targets, dtype=torch.float32))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == recipe.steps - 1:
            print(f"[trained-standin] step {step}/{recipe.steps} loss {losses[-1]:.3f}", flush=True)
    model.eval()
    spread = spread_head(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    held_out = held_out_fit(model, tokenizer, recipe, seed)
    (out_dir / "training.json").write_text(
        json.dumps(
            {
                "task": "target logit = 10 x share of query character trigrams in the passage - 5",
                "texts": "common/calibration_texts.py (the certificate's texts stay held out)",
                "shape": vars(shape),
                "recipe": asdict(recipe),
                "seed": seed,
                "threads": THREADS,
                "seconds": round(time.monotonic() - started, 1),
                "loss_first_50_mean": sum(losses[:50]) / min(50, len(losses)),
                "loss_last_50_mean": sum(losses[-50:]) / min(50, len(losses)),
                "held_out": held_out,
                "spread_head": spread,
                "sha256": weights_sha256(out_dir),
            },
            indent=2,
        )
        + "\n"
    )
    return out_dir


def weights_sha256(model_dir: Path) -> str:
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()


def list_logits(model, tokenizer) -> list[float]:
    """The model's logits over the calibration 100-passage list (scored as the certificate scores:
    up to 512 tokens, in batches of 16)."""
    import torch

    from common.calibration_texts import hundred_passages

    query, passages = hundred_passages()
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(passages), 16):
            chunk = passages[i : i + 16]
            ids = tokenizer(
                [query] * len(chunk), chunk, padding=True, truncation=True, max_length=512, return_tensors="pt"
            )
            out.extend(model(**ids).logits.squeeze(-1).tolist())
    return out


def spread_head(model, tokenizer, span: float = LIST_SPAN, centre: float = LIST_CENTRE) -> dict:
    """Rescale the classifier's last layer so the calibration list spans `span` logits centred on
    `centre` (see the module docstring); returns what was done, for training.json."""
    import torch

    before = list_logits(model, tokenizer)
    low, high = min(before), max(before)
    if not high - low > 1e-6:
        raise ValueError(
            f"the trained model gives every calibration passage the same logit ({low:.4g}): nothing to spread"
        )
    factor = span / (high - low)
    shift = centre - factor * (low + high) / 2
    head = model.classifier.out_proj
    with torch.no_grad():
        head.weight.mul_(factor)
        head.bias.mul_(factor).add_(shift)
    after = list_logits(model, tokenizer)
    return {
        "list": "common/calibration_texts.hundred_passages",
        "before": [round(low, 4), round(high, 4)],
        "factor": round(factor, 6),
        "shift": round(shift, 6),
        "after": [round(min(after), 4), round(max(after), 4)],
    }


def held_out_fit(model, tokenizer, recipe: Recipe, seed: int, n: int = 256) -> dict:
    """How well the model learned the task, on pairs it never saw (another seed's draw): the
    Pearson correlation of its logits with the target, and the mean logit of the relevant
    (target > 0) and irrelevant (target <= 0) pairs."""
    import numpy as np
    import torch

    pairs = training_pairs(random.Random(seed + 1_000_003), n, recipe)
    logits = []
    with torch.no_grad():
        for i in range(0, n, 32):
            queries, passages, _ = zip(*pairs[i : i + 32])
            ids = _encode(tokenizer, queries, passages, recipe)
            logits.append(model(**ids).logits.squeeze(-1).numpy())
    y = np.concatenate(logits)
    t = np.array([p[2] for p in pairs])
    return {
        "pairs": n,
        "pearson": round(float(np.corrcoef(y, t)[0, 1]), 3),
        "mean_logit_relevant": round(float(y[t > 0].mean()), 3),
        "mean_logit_irrelevant": round(float(y[t <= 0].mean()), 3),
        "logit_std": round(float(y.std()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="{}", help=argparse.SUPPRESS)  # JSON overrides (exploration)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path = build(args.out_dir, replace(RECIPE, **json.loads(args.recipe)), args.seed)
    print(f"trained stand-in written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
