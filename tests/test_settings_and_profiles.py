"""The single source of limits, and the TensorRT profile/config consistency rules."""

from __future__ import annotations

import pytest

from export.settings import MAX_BATCH_TOKENS, MAX_SUPPORTED_LENGTH, ServingLimits, length_buckets
from export.tensorrt_profiles import Profile, check_consistency, max_batch_for_length, profiles_for


@pytest.mark.parametrize("max_length", [16, 100, 512, 1024, 4096, 8192])
def test_buckets_cover_every_length_with_bounded_padding(max_length):
    buckets = length_buckets(max_length)
    assert buckets[0] == 16 and buckets[-1] == max_length
    assert buckets == sorted(set(buckets))
    for length in range(17, max_length + 1):
        bucket = next(b for b in buckets if b >= length)
        assert (bucket - length) / bucket <= 0.125 or bucket - length < 16


@pytest.mark.parametrize("bad", [8, MAX_SUPPORTED_LENGTH + 1])
def test_out_of_range_max_length_rejected(bad):
    with pytest.raises(ValueError, match="max_length"):
        length_buckets(bad)


def test_query_max_length_is_three_quarters():
    assert ServingLimits(max_length=512).query_max_length == 384
    assert ServingLimits(max_length=8192).query_max_length == 6144


@pytest.mark.parametrize("max_length", [64, 512, 1024, 2048, 8192])
def test_profiles_consistent_with_limits(max_length):
    limits = ServingLimits(max_length=max_length)
    profiles = profiles_for(limits)
    assert check_consistency(limits, profiles) == []
    assert len(profiles) == {64: 1, 512: 1, 1024: 2, 2048: 2, 8192: 3}[max_length]
    assert profiles[0].max_shape[0] == limits.max_batch_size
    assert max_batch_for_length(limits, profiles, 16) == limits.max_batch_size
    # The longest class holds MAX_BATCH_TOKENS // max_length pairs: 4 at 8,192.
    assert max_batch_for_length(limits, profiles, max_length) == min(64, MAX_BATCH_TOKENS // max_length)


def test_inconsistent_profiles_are_reported():
    limits = ServingLimits(max_length=2048, max_batch_size=64)
    too_small = [Profile("short", (1, 16), (8, 256), (8, 1024))]
    problems = check_consistency(limits, too_small)
    assert any("batches 64 pairs but profile short holds 8" in p for p in problems)
    assert any("cover 1024 tokens but max_length is 2048" in p for p in problems)
    assert any("fall in no profile" in p for p in problems)
    inverted = [Profile("short", (1, 16), (64, 4096), (64, 2048))]
    assert any("min <= opt <= max" in p for p in check_consistency(limits, inverted))
