"""Builds the parity certificate (`certificate.json`) that every exported repository carries.

Held-out pairs (common/certificate_texts.py, never used to choose fp16 ranges) in 20+
languages and scripts, a length ladder from 16 tokens to past max_length, a query long enough
to be cut, and one query over 100 passages. Each pair is scored ALONE by fp32 PyTorch (no
padding: the cleanest reference), and again batched and padded as a server would, which
measures PyTorch's own rounding noise; the fp32 bound is calibrated on that noise.

The comparison itself lives in the client package (reranker_client.certificate), so the
export gates, the TensorRT plan builders and the live verifier all judge the same way.
"""

from __future__ import annotations

import numpy as np

from common import certificate_texts
from export.settings import gate_batch
from reranker_client.certificate import FILENAME, FORMAT, Thresholds, score_rows  # noqa: F401 - FILENAME re-exported

# fp32: an implementation may differ from PyTorch by up to this many times PyTorch's own
# batching noise (the same math, other summation orders); below that it is rounding, above it
# is a different computation. 1e-4 stays the bound wherever the noise allows it.
FP32_FLOOR_FACTOR = 10.0
FP32_MIN_BOUND = 1e-4
FP16 = Thresholds(max_abs_logit=0.1, max_abs_score=1e-2, tie_logit=0.1, min_kendall_tau=0.95)
# int8 (dynamic int8 MatMuls, docs/CPU.md "The int8 bounds"): a lossy CPU profile, bounded by what a
# reranker's caller sees. Scores move by at most 0.05 (sigmoid: 5% of the score scale; a caller's
# relevance cut-off at 0.5 is crossed only by pairs PyTorch scored within ~0.2 of it); the top-10 of
# 100 passages may swap only passages PyTorch scored within 0.5 logit of each other (a near tie on
# a model whose logits span ~20); at most 5% of the 4,950 passage pairs of the 100-passage list
# change order (tau >= 0.9). Batch composition moves a row by up to the logit bound (activations
# are quantized per batch tensor): the export's padding check holds it to the same 0.5.
INT8 = Thresholds(max_abs_logit=0.5, max_abs_score=5e-2, tie_logit=0.5, min_kendall_tau=0.9)
FP32_MIN_KENDALL_TAU = 0.99
LADDER_FRACTIONS = (0.5, 1.0)  # of max_length, besides the fixed lengths below
LADDER_TOKENS = (16, 64, 128, 256)


def fp32_thresholds(noise_floor: float) -> Thresholds:
    bound = max(FP32_MIN_BOUND, FP32_FLOOR_FACTOR * noise_floor)
    return Thresholds(max_abs_logit=bound, max_abs_score=bound, tie_logit=bound, min_kendall_tau=FP32_MIN_KENDALL_TAU)


def _text_with_tokens(tokenizer, text: str, tokens: int) -> str:
    """The prefix of `text` that holds `tokens` tokens (text must be long enough)."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    if len(encoding.offsets) <= tokens:
        return text
    return text[: encoding.offsets[tokens - 1][1]]


def _long_text(tokenizer, tokens: int, offset: int) -> str:
    paragraphs = 4
    while True:
        text = certificate_texts.long_passage(paragraphs, offset)
        if len(tokenizer.encode(text, add_special_tokens=False).ids) > tokens:
            return text
        paragraphs *= 2


def held_out_pairs(pair_tokenizer) -> list[dict]:
    """Every certificate pair as {id, language, query, passage}: languages, lengths, truncation."""
    tokenizer = pair_tokenizer.tokenizer
    max_length = pair_tokenizer.max_length
    pairs = []
    for language, query, passages in certificate_texts.TOPICS:
        for k, passage in enumerate(passages):
            pairs.append({"id": f"{language}-{k}", "language": language, "query": query, "passage": passage})
    # Length ladder: pair lengths from 16 tokens to max_length, then past it (truncated).
    ladder = sorted({t for t in LADDER_TOKENS if t <= max_length} | {int(max_length * f) for f in LADDER_FRACTIONS})
    for step, target in enumerate(ladder + [max_length + max_length // 4]):
        language, query, _ = certificate_texts.TOPICS[(3 * step) % len(certificate_texts.TOPICS)]
        # At most a quarter of the pair is query, so even the 16-token pair has a passage.
        query = _text_with_tokens(tokenizer, query, max(1, target // 4))
        query_tokens = len(tokenizer.encode(query, add_special_tokens=False).ids)
        passage_tokens = max(1, target - query_tokens - 4)
        passage = _text_with_tokens(tokenizer, _long_text(tokenizer, passage_tokens, step), passage_tokens)
        pairs.append({"id": f"length-{target}", "language": "mixed-long", "query": query, "passage": passage})
    # A query longer than its 3/4 share of max_length: FlagReranker cuts the query too.
    long_query = _long_text(tokenizer, max_length, offset=11)
    pairs.append(
        {
            "id": "long-query",
            "language": "mixed-long",
            "query": long_query,
            "passage": certificate_texts.TOPICS[0][2][0],
        }
    )
    return pairs


def _tokenize(pair_tokenizer, query: str, passage: str, index: int) -> tuple[list[int], bool]:
    q, p = pair_tokenizer.tokenizer.encode_batch([query, passage], add_special_tokens=False)
    return pair_tokenizer.join(index, q.ids, p.ids)


def score_alone(run, ids: list[int]) -> float:
    row = np.asarray([ids], dtype=np.int64)
    return float(run(row, np.ones_like(row))[0])


def build(pair_tokenizer, reference_run, *, model: dict, served: dict, progress=print) -> dict:
    """The certificate: texts, token ids and counts, fp32 PyTorch logits, thresholds."""
    pairs = held_out_pairs(pair_tokenizer)
    query, passages = certificate_texts.ranking_list()
    texts = [(p["query"], p["passage"]) for p in pairs] + [(query, passage) for passage in passages]
    tokenized = [_tokenize(pair_tokenizer, q, p, i) for i, (q, p) in enumerate(texts)]
    progress(f"[export] certificate: scoring {len(texts)} held-out pairs alone with fp32 PyTorch")
    alone = np.array([score_alone(reference_run, ids) for ids, _ in tokenized])
    batched = score_rows(
        reference_run, [ids for ids, _ in tokenized], pair_tokenizer.buckets, pair_tokenizer.pad_id, gate_batch
    )
    noise_floor = float(np.max(np.abs(alone - batched)))
    fp32 = fp32_thresholds(noise_floor)
    for entry, (ids, truncated), logit in zip(pairs, tokenized, alone):
        entry.update(tokens=len(ids), truncated=bool(truncated), logit=float(logit), input_ids=ids)
    n = len(pairs)
    return {
        "format": FORMAT,
        "model": model,
        "served": served,
        "max_length": pair_tokenizer.max_length,
        "buckets": list(pair_tokenizer.buckets),
        "pad_id": pair_tokenizer.pad_id,
        "query_max_length": pair_tokenizer.query_max_length,
        "reference": "fp32 PyTorch, each pair alone (no padding)",
        "noise_floor": {
            "torch_fp32_alone_vs_batched_max_abs_logit": noise_floor,
            "fp32_bound": fp32.max_abs_logit,
            "rule": f"fp32 bound = max({FP32_MIN_BOUND}, {FP32_FLOOR_FACTOR} x noise floor)",
        },
        "thresholds": {"fp32": vars(fp32), "fp16": vars(FP16), "int8": vars(INT8)},
        "languages": sorted({p["language"] for p in pairs}),
        "pairs": pairs,
        "ranking": {
            "language": certificate_texts.RANKING_QUERY_LANGUAGE,
            "query": query,
            "passages": passages,
            "logits": [float(x) for x in alone[n:]],
            "tokens": [len(ids) for ids, _ in tokenized[n:]],
            "input_ids": [ids for ids, _ in tokenized[n:]],
        },
    }
