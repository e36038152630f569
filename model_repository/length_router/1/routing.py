"""Which length class each row goes to, in parts the class model can take (no Triton import).

The rules are the ones the export derived (export/tensorrt_profiles.py) and wrote into this
model's config: the length buckets and, per class, its longest padded length and its batch.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


class RouteError(ValueError):
    """A row no class can take; the message names the length and the limit."""


# How a class model's error is relayed. A BLS response's error reaches this model as text only
# (tritonserver 2.51 gives it INTERNAL whatever the class model said), so the code is recovered
# from the text: Triton's load-shedding answers and a dead or draining step are UNAVAILABLE
# (retry, elsewhere if need be); the class model's refusals of *values* the caller chose - ids
# outside the vocabulary, mask values other than 0/1 - are INVALID_ARG; anything else stays
# INTERNAL, including a shape or batch refusal, which the router itself guarantees never to send
# (so it would be our bug, not the caller's). The onnxruntime/TensorRT class models never refuse
# values: their graph clamps ids and reads the mask as 0/1 (docs/SECURITY.md).
def relayed_code(message: str, refusals: tuple[str, ...], transient: tuple[str, ...]) -> str:
    """'UNAVAILABLE', 'INVALID_ARG' or 'INTERNAL' for a class model's error message; `refusals`
    are the message prefixes of the class model's refusals of the caller's values, `transient`
    Triton's lower-case phrases for shed load and a dead or draining step (the wire contract's)."""
    text = message.lower()
    if any(mark in text for mark in transient):
        return "UNAVAILABLE"
    if message.startswith(refusals):
        return "INVALID_ARG"
    return "INTERNAL"


@dataclass(frozen=True)
class Part:
    length_class: int  # index into the classes (and the class models)
    width: int  # the bucket every row of the part is padded to
    rows: np.ndarray  # indices into the request's rows


def parse_classes(text: str) -> list[tuple[int, int]]:
    """'512:64,2048:16,8192:4' -> [(512, 64), (2048, 16), (8192, 4)]."""
    return [(int(bound), int(batch)) for bound, batch in (item.split(":") for item in text.split(","))]


def row_lengths(mask: np.ndarray) -> np.ndarray:
    """Columns each row needs: up to its last real token (right padding is the rule, but a row
    is never cut short whatever its mask looks like)."""
    nonzero = mask != 0
    last = mask.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 1)


@dataclass(frozen=True)
class SplitCost:
    """When splitting a class's rows into runs of different widths pays (cost in padded-token units).

    A run costs `run_tokens` (the fixed cost of one cross-encoder run - the BLS call, the
    batcher's queue delay, the backend's execute - expressed as the padded tokens the model
    computes in that time) plus, per row, its width w times (1 + w / attention_width): the
    per-token cost of an encoder layer is 24 h^2 for projections and FFN plus 4 h w for
    attention, so attention_width = 6 h. The export derives both from the measured cost model
    (export/settings.py RUN_OVERHEAD_S, DEVICE_FLOPS) and the model's geometry."""

    run_tokens: float
    attention_width: float

    def of(self, rows: int, width: int) -> float:
        return self.run_tokens + rows * width * (1 + width / self.attention_width)


NEVER_SPLIT = SplitCost(float("inf"), 1.0)


def parse_split_cost(text: str | None) -> SplitCost:
    """'run_tokens:attention_width' (the router's config parameter); absent: never split."""
    if not text:
        return NEVER_SPLIT
    run_tokens, attention_width = (float(v) for v in text.split(":"))
    return SplitCost(run_tokens, attention_width)


def _segments(widths: list[int], cost: SplitCost, batch: int) -> list[tuple[int, int]]:
    """Contiguous runs over rows sorted by width: [(first, end)], chosen to minimise the total
    cost (a dynamic programme over the distinct widths, so at most one split per bucket edge).
    Each segment is padded to its last (widest) row and cut into batches of at most `batch`."""
    edges = [0] + [i for i in range(1, len(widths)) if widths[i] != widths[i - 1]] + [len(widths)]
    best = [0.0] + [float("inf")] * (len(edges) - 1)
    came_from = [0] * len(edges)
    for j in range(1, len(edges)):
        end, width = edges[j], widths[edges[j] - 1]
        for i in range(j):
            rows = end - edges[i]
            runs = -(-rows // batch)
            total = best[i] + runs * cost.run_tokens + rows * width * (1 + width / cost.attention_width)
            if total < best[j]:
                best[j], came_from[j] = total, i
    segments, j = [], len(edges) - 1
    while j:
        segments.append((edges[came_from[j]], edges[j]))
        j = came_from[j]
    return segments[::-1]


def plan(
    lengths: np.ndarray, buckets: list[int], classes: list[tuple[int, int]], cost: SplitCost = NEVER_SPLIT
) -> list[Part]:
    """Rows grouped by the class that holds their own bucket; within a class, sorted by length,
    split into runs of different widths only where the padding saved outweighs a run's cost
    (`cost`; by default never), and cut into parts of at most the class's batch, each padded to
    the bucket of its longest row. A request whose rows all fall in one class and do not pay
    for a split stays one part of the shape the tokenizer gave it, so it merges with other
    requests of that shape as before; a request mixing classes is not padded to its longest row."""
    by_class: dict[int, list[tuple[int, int]]] = {}
    for row, length in enumerate(lengths.tolist()):
        position = bisect.bisect_left(buckets, length)
        if position == len(buckets):
            raise RouteError(f"input_ids: a row of {length} tokens exceeds max_length={buckets[-1]}")
        index = next(i for i, (bound, _) in enumerate(classes) if buckets[position] <= bound)
        by_class.setdefault(index, []).append((length, row))
    parts = []
    for index, members in sorted(by_class.items()):
        members.sort()
        batch = classes[index][1]
        widths = [buckets[bisect.bisect_left(buckets, length)] for length, _ in members]
        for first, end in _segments(widths, cost, batch):
            for start in range(first, end, batch):
                chunk = members[start : min(start + batch, end)]
                width = buckets[bisect.bisect_left(buckets, chunk[-1][0])]
                parts.append(Part(index, width, np.asarray(sorted(row for _, row in chunk))))
    return parts


def batch_parts(
    mask: np.ndarray, buckets: list[int] | None, cost: SplitCost = NEVER_SPLIT
) -> list[tuple[np.ndarray | None, int]]:
    """One class model's batch [B, L] (given by its mask) as runs: [(rows, width)], rows None for
    the whole batch as it is. The rows are split into runs of different widths only where `plan`
    says the padded tokens saved outweigh a run's `cost` (no buckets: never); a run is never wider
    than L (a width off the buckets stays as sent)."""
    width = mask.shape[1]
    if not buckets or mask.shape[0] == 1:
        return [(None, width)]
    lengths = np.minimum(row_lengths(mask), buckets[-1])
    parts = plan(lengths, buckets, [(buckets[-1], mask.shape[0])], cost)
    if len(parts) == 1:
        return [(None, width)]
    return [(part.rows, min(part.width, width)) for part in parts]


def cut(array: np.ndarray, rows: np.ndarray, width: int, fill: int) -> np.ndarray:
    """array[rows] at exactly `width` columns: cut, or padded with `fill`."""
    part = array[rows, :width]
    if part.shape[1] < width:
        part = np.pad(part, ((0, 0), (0, width - part.shape[1])), constant_values=fill)
    return np.ascontiguousarray(part)
