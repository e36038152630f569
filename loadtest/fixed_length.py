"""perf_analyzer input data whose pairs all have (about) N tokens, for length sweeps.

    python -m loadtest.fixed_length --tokenizer REPO/tokenizer/1/tokenizer.json --tokens 512 --out in_512.json
    python -m loadtest.fixed_length ... --cross-encoder --out ids_512.json   # token ids for `cross_encoder` alone

The second form drives the cross-encoder model directly (no Python tokenizer in the loop), so
its numbers are the engine's own; the first is what a caller of `rerank` sees.
"""

from __future__ import annotations

import argparse
import json
import sys

from tokenizers import Tokenizer

from common import calibration_texts


def pairs_of_length(tokenizer_json: str, tokens: int, count: int = 64) -> list[tuple[str, str]]:
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_truncation()
    source = calibration_texts.long_passage(400)
    encoding = tokenizer.encode(source, add_special_tokens=False)
    queries = [q for _, q, _ in calibration_texts.TOPICS]
    out = []
    for i in range(count):
        query = queries[i % len(queries)]
        budget = max(1, tokens - len(tokenizer.encode(query, add_special_tokens=False).ids) - 4)
        start = (i * 997) % max(1, len(encoding.ids) - budget - 1)
        out.append((query, source[encoding.offsets[start][0] : encoding.offsets[start + budget - 1][1]]))
    return out


def token_inputs(tokenizer_json: str, query: str, passage: str, tokens: int) -> dict:
    """One cross_encoder request: `<s> q </s></s> p </s>` cut or padded to exactly `tokens` ids."""
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_truncation()
    cls, sep, pad = (tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>"))
    q = tokenizer.encode(query, add_special_tokens=False).ids
    p = tokenizer.encode(passage, add_special_tokens=False).ids
    ids = ([cls] + q + [sep, sep] + p)[: tokens - 1] + [sep]
    mask = [1] * len(ids) + [0] * (tokens - len(ids))
    ids += [pad] * (tokens - len(ids))
    return {"input_ids": {"content": ids, "shape": [tokens]}, "attention_mask": {"content": mask, "shape": [tokens]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--cross-encoder",
        action="store_true",
        help="write input_ids/attention_mask of exactly --tokens tokens for the cross_encoder model",
    )
    args = parser.parse_args(argv)
    pairs = pairs_of_length(args.tokenizer, args.tokens)
    if args.cross_encoder:
        data = [token_inputs(args.tokenizer, q, p, args.tokens) for q, p in pairs]
    else:
        data = [{"query": {"content": [q], "shape": [1]}, "passage": {"content": [p], "shape": [1]}} for q, p in pairs]
    with open(args.out, "w") as handle:
        json.dump({"data": data}, handle, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
