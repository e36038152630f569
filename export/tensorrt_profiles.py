"""The shape rules, defined once: length classes, and the TensorRT profile of each.

The cross-encoder is served as one Triton model per length class (settings.LENGTH_CLASS_BOUNDS):
class i takes rows padded to lengths in [min_length, max_length] and batches of at most
max_batch pairs, with max_batch * max_length <= settings.MAX_BATCH_TOKENS. Why models and not
one model with several profiles: Triton's dynamic batcher merges requests of one shape up to a
model's max_batch_size whatever their length, so only a per-model max_batch_size bounds the
batches that can form. The `length_router` model sends each row to its class; the class models
are the only place a batch forms. For TensorRT every class model loads the same plan and lists
its own profile (`instance_group { profile: ["i"] }`), so every profile is used, each by the
shapes it was built for. The configs, the plan build, the router's parameters and what the
ensemble publishes to the client are all derived from `length_classes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from export.settings import (
    CROSS_ENCODER_INSTANCES,
    LENGTH_CLASS_BOUNDS,
    MAX_BATCH_TOKENS,
    PAIR_ATTENTION_FLOPS,
    PAIR_LINEAR_FLOPS,
    QUEUE_TIMEOUT_US,
    ROUTER_INSTANCES,
    SMALLEST_BUCKET,
    TYPICAL_PAIR_TOKENS,
    ServingLimits,
)
from reranker_client.contract import CROSS_ENCODER_INPUTS, cross_encoder_model


@dataclass(frozen=True)
class LengthClass:
    index: int  # also the index of its TensorRT profile in the plan
    model: str  # the Triton model that serves it
    min_length: int  # padded row lengths it takes: [min_length, max_length]
    max_length: int
    max_batch: int  # pairs per execution; max_batch * max_length <= MAX_BATCH_TOKENS

    @property
    def max_tokens(self) -> int:
        return self.max_batch * self.max_length


def length_classes(limits: ServingLimits) -> list[LengthClass]:
    bounds = [b for b in LENGTH_CLASS_BOUNDS if b < limits.max_length] + [limits.max_length]
    classes, low = [], SMALLEST_BUCKET
    for index, bound in enumerate(bounds):
        batch = max(1, min(limits.max_batch_size, MAX_BATCH_TOKENS // bound))
        classes.append(LengthClass(index, cross_encoder_model(index, bound), low, bound, batch))
        low = bound + 1
    return classes


def batch_flops(length_class: LengthClass) -> float:
    """FLOPs of one full batch of the class (its rows at its longest length)."""
    n = length_class.max_length
    return length_class.max_batch * (PAIR_LINEAR_FLOPS * n + PAIR_ATTENTION_FLOPS * n * n)


def worst_drain(length_class: LengthClass, request_rows: int) -> float:
    """FLOPs a class model's instances run, in rounds, before the last part of ROUTER_INSTANCES
    requests of `request_rows` rows each (all in this class) leaves the queue: the router sends
    every part at once, CROSS_ENCODER_INSTANCES batches run at a time."""
    parts = ROUTER_INSTANCES * math.ceil(request_rows / length_class.max_batch)
    return math.ceil(parts / CROSS_ENCODER_INSTANCES) * batch_flops(length_class)


def queue_timeout_us(classes: list[LengthClass], length_class: LengthClass, request_rows: int) -> int:
    """The class model's queue timeout: QUEUE_TIMEOUT_US for the first class (as every queue had
    before), scaled for a longer class by how much longer its worst drain is (settings.py says
    why)."""
    ratio = worst_drain(length_class, request_rows) / worst_drain(classes[0], request_rows)
    return max(QUEUE_TIMEOUT_US, math.ceil(QUEUE_TIMEOUT_US * ratio / 1_000_000) * 1_000_000)


def class_for_length(classes: list[LengthClass], length: int) -> LengthClass:
    """The class whose range holds a row padded to `length` tokens."""
    for length_class in classes:
        if length <= length_class.max_length:
            return length_class
    raise ValueError(f"{length} tokens exceeds the longest class ({classes[-1].max_length})")


def published_classes(classes: list[LengthClass]) -> str:
    """'512:64,2048:16,8192:4': (longest padded length, most pairs per batch) per class, as the
    ensemble publishes them (contract.Param.LENGTH_CLASSES) and the router reads them."""
    return ",".join(f"{c.max_length}:{c.max_batch}" for c in classes)


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


def profile_for(length_class: LengthClass) -> Profile:
    """Exactly the class's shapes: a batch the class model can receive is inside its profile."""
    batch, top = length_class.max_batch, length_class.max_length
    opt_length = min(TYPICAL_PAIR_TOKENS, top) if length_class.index == 0 else top
    return Profile(
        length_class.model,
        (1, length_class.min_length),
        (batch, max(opt_length, length_class.min_length)),
        (batch, top),
    )


def profiles_for(limits: ServingLimits) -> list[Profile]:
    return [profile_for(c) for c in length_classes(limits)]


def check_consistency(limits: ServingLimits, profiles: list[Profile]) -> list[str]:
    """Problems that would make Triton reject the plan or some batches; empty when sound."""
    problems = []
    if not profiles:
        return ["no optimisation profile"]
    classes = length_classes(limits)
    if len(profiles) != len(classes):
        problems.append(f"{len(profiles)} profiles for {len(classes)} length classes")
    for length_class, profile in zip(classes, profiles):
        if profile.max_shape[0] < length_class.max_batch:
            problems.append(
                f"class {length_class.model} batches {length_class.max_batch} pairs but profile "
                f"{profile.name} holds {profile.max_shape[0]}"
            )
        if not profile.min_shape[1] <= length_class.min_length or profile.max_shape[1] < length_class.max_length:
            problems.append(
                f"profile {profile.name} does not cover lengths {length_class.min_length}..{length_class.max_length}"
            )
        if length_class.max_tokens > MAX_BATCH_TOKENS and length_class.max_batch > 1:
            problems.append(
                f"class {length_class.model} can batch {length_class.max_tokens} tokens, over "
                f"MAX_BATCH_TOKENS={MAX_BATCH_TOKENS}"
            )
    covered = max(p.max_shape[1] for p in profiles)
    if covered < limits.max_length:
        problems.append(f"profiles cover {covered} tokens but max_length is {limits.max_length}")
    if min(p.min_shape[1] for p in profiles) > limits.buckets[0]:
        problems.append(f"smallest bucket {limits.buckets[0]} is below every profile's minimum length")
    for p in profiles:
        if not all(lo <= opt <= hi for lo, opt, hi in zip(p.min_shape, p.opt_shape, p.max_shape)):
            problems.append(f"profile {p.name}: min <= opt <= max violated")
    uncovered = [b for b in limits.buckets if not any(p.min_shape[1] <= b <= p.max_shape[1] for p in profiles)]
    if uncovered:
        problems.append(f"buckets {uncovered} fall in no profile")
    return problems


def max_batch_for_length(limits: ServingLimits, profiles: list[Profile], length: int) -> int:
    """How many pairs of `length` tokens one execution may hold: its class's batch."""
    del profiles  # the classes decide; kept for the callers' signature
    return class_for_length(length_classes(limits), length).max_batch


if __name__ == "__main__":  # python -m export.tensorrt_profiles --max-length 1024 --model-for 1024
    import argparse

    parser = argparse.ArgumentParser(description="the length classes of a max_length, or the model of one length")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--model-for", type=int, help="print the class model that serves rows of this many tokens")
    args = parser.parse_args()
    table = length_classes(ServingLimits(max_length=args.max_length))
    if args.model_for is not None:
        print(class_for_length(table, args.model_for).model)
    else:
        for row in table:
            print(f"{row.model}\t{row.min_length}..{row.max_length}\t{row.max_batch}")
