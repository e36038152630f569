"""Windows -> one result per passage: the best window's score and where it is (no Triton import)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reduced:
    best: np.ndarray  # int [B]: the row of each passage's best window
    windows: np.ndarray  # int32 [B, 1]: windows scored per passage


def reduce_windows(owner: np.ndarray, logit: np.ndarray) -> Reduced:
    """The best window of each passage: the highest logit (sigmoid is monotonic, so also the
    highest score); on a tie, the first window. owner[w] is the passage row of window w; every
    passage 0..B-1 has at least one window (the tokenizer gives each passage one or more)."""
    owner = owner.reshape(-1).astype(np.int64)
    logit = logit.reshape(-1)
    if owner.size == 0 or owner.min() < 0:
        raise ValueError("owner: expected one or more windows with owner >= 0")
    # Work is bounded by the request's size, never by a value in it: every passage has a window,
    # so a passage index is below the number of windows. Checked before bincount, whose output
    # is sized by the largest value (owner [0, 2**25] would allocate 2**25 counters).
    if int(owner.max()) >= owner.size:
        raise ValueError(
            f"owner: {int(owner.max())} is not a passage index of this request "
            f"(it has {owner.size} windows, so owner must be below {owner.size})"
        )
    passages = int(owner.max()) + 1
    counts = np.bincount(owner, minlength=passages)
    if (counts == 0).any():
        raise ValueError(f"owner: passages {np.flatnonzero(counts == 0).tolist()[:10]} have no window")
    # Sort by (owner, -logit, row): the first row of each owner's run is its best window.
    order = np.lexsort((np.arange(owner.size), -logit, owner))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return Reduced(best=order[starts], windows=counts.astype(np.int32).reshape(-1, 1))
