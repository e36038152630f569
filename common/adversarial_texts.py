"""Texts built to defeat the tokenizer's bounded reading (model_repository/tokenizer/1/
text_cuts.py), for its tests and for benchmarks/trust_boundary.py."""

from __future__ import annotations

import random
from typing import Any


def glued_word(cuts: Any, rng: random.Random, length: int) -> str:
    """A word with no space and no forced boundary: a random walk over the vocabulary's
    two-character pieces (every adjacent pair is a piece, so every position lies inside one),
    the shape base64, hex and glued identifiers take in XLM-R's 250k-piece vocabulary. Random,
    not periodic, so Viterbi's paths to nearby ends agree on their start. `cuts`: a TextCuts."""
    follow: dict[str, list[str]] = {}
    for piece in cuts.pieces:
        if len(piece) == 2 and piece[0] != piece[1] and all(cuts._plain(c) and c.isascii() for c in piece):
            follow.setdefault(piece[0], []).append(piece[1])
    alive = set(follow)
    while True:  # keep letters that can always go on to two different letters
        keep = {a for a in alive if len([b for b in follow[a] if b in alive]) >= 2}
        if keep == alive:
            break
        alive = keep
    if not alive:
        raise ValueError("the vocabulary has no two-character pieces to glue a word from")
    letter = min(alive)
    out = [letter]
    for _ in range(length - 1):
        letter = rng.choice(sorted(b for b in follow[letter] if b in alive))
        out.append(letter)
    return "".join(out)


def doubled_character(cuts: Any) -> str:
    """A character whose double is a piece: in a run of it every position lies inside a piece,
    and Viterbi's choice of where the odd one goes depends on the run's length (ties)."""
    return min(p[0] for p in cuts.pieces if len(p) == 2 and p[0] == p[1] and cuts._plain(p[0]))
