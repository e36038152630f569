"""TensorRT optimisation profiles, derived from the serving limits, and their consistency rules.

Two profiles: "short" covers every request the batcher can form up to 1024 tokens; "long"
covers the few long requests up to max_length with a small batch (attention memory grows
with length squared). Triton picks the profile whose range fits each batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from reranker_client.contract import CROSS_ENCODER_INPUTS

from export.settings import (LONG_PROFILE_MAX_BATCH, SHORT_PROFILE_MAX_LENGTH, SMALLEST_BUCKET, TYPICAL_PAIR_TOKENS,
                             ServingLimits)


@dataclass(frozen=True)
class Profile:
    name: str
    min_shape: tuple[int, int]  # (batch, sequence)
    opt_shape: tuple[int, int]
    max_shape: tuple[int, int]

    def shapes(self, which: str) -> str:
        """trtexec / ONNX Runtime syntax: 'input_ids:1x16,attention_mask:1x16'."""
        batch, seq = getattr(self, f"{which}_shape")
        return ",".join(f"{t.name}:{batch}x{seq}" for t in CROSS_ENCODER_INPUTS)


def profiles_for(limits: ServingLimits) -> list[Profile]:
    short_max = min(SHORT_PROFILE_MAX_LENGTH, limits.max_length)
    profiles = [Profile(
        "short", (1, SMALLEST_BUCKET),
        (limits.max_batch_size, min(TYPICAL_PAIR_TOKENS, short_max)),
        (limits.max_batch_size, short_max))]
    if limits.max_length > short_max:
        long_batch = min(LONG_PROFILE_MAX_BATCH, limits.max_batch_size)
        profiles.append(Profile(
            "long", (1, short_max + 1), (long_batch, limits.max_length), (long_batch, limits.max_length)))
    return profiles


def check_consistency(limits: ServingLimits, profiles: list[Profile]) -> list[str]:
    """Problems that would make Triton reject the plan or some requests; empty when sound."""
    problems = []
    if not profiles:
        return ["no optimisation profile"]
    if profiles[0].max_shape[0] < limits.max_batch_size:
        problems.append(f"config max_batch_size {limits.max_batch_size} exceeds the first profile's "
                        f"max batch {profiles[0].max_shape[0]}")
    covered = max(p.max_shape[1] for p in profiles)
    if covered < limits.max_length:
        problems.append(f"profiles cover {covered} tokens but max_length is {limits.max_length}")
    if min(p.min_shape[1] for p in profiles) > limits.buckets[0]:
        problems.append(f"smallest bucket {limits.buckets[0]} is below every profile's minimum length")
    for p in profiles:
        if not all(lo <= opt <= hi for lo, opt, hi in zip(p.min_shape, p.opt_shape, p.max_shape)):
            problems.append(f"profile {p.name}: min <= opt <= max violated")
    uncovered = [b for b in limits.buckets
                 if not any(p.min_shape[1] <= b <= p.max_shape[1] for p in profiles)]
    if uncovered:
        problems.append(f"buckets {uncovered} fall in no profile")
    return problems


def max_batch_for_length(limits: ServingLimits, profiles: list[Profile], length: int) -> int:
    """How many pairs of `length` tokens one request may hold under these profiles."""
    fitting = [p.max_shape[0] for p in profiles if p.min_shape[1] <= length <= p.max_shape[1]]
    return min(max(fitting, default=0), limits.max_batch_size)
