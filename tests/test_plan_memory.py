"""Issue 25 item 4: the plan design's device memory, estimated from the geometry (dry run; the
measured figures come from TensorRT at build, tests/test_tensorrt_build.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export import plan_memory
from export.settings import CROSS_ENCODER_INSTANCES, GPU_MEMORY_BUDGET_BYTES, MAX_SUPPORTED_LENGTH, ServingLimits
from export.tensorrt_build import PlanBuild
from export.tensorrt_profiles import length_classes

ROOT = Path(__file__).resolve().parent.parent


def test_default_design_fits_a_24gb_card_at_max_length_8192():
    """One plan per class, one profile each, fused attention, default instances: the six contexts
    and six weight copies fit an L4/A10 (the budget leaves 1 GiB for CUDA and Triton)."""
    build = PlanBuild(ServingLimits(max_length=MAX_SUPPORTED_LENGTH))
    classes = build.tries()[0].estimate()
    assert [c.model for c in classes] == [c.model for c in length_classes(build.limits)]
    assert all(c.instances == CROSS_ENCODER_INSTANCES for c in classes)
    assert plan_memory.over_budget(classes) == ""
    assert sum(c.total_bytes for c in classes) <= GPU_MEMORY_BUDGET_BYTES < 23_028 << 20


def test_formula_by_hand_for_the_longest_class():
    """4 rows x 8,192 tokens, bge-reranker-v2-m3: weights 568M x 2 B; activations 32,768 tokens x
    (4,096 + 6 x 1,024) x 4 B; 1 GiB scratch; unfused attention adds 2 x 4 x 16 x 8,192^2 x s."""
    longest = length_classes(ServingLimits(max_length=8192))[-1]
    g = plan_memory.REAL_GEOMETRY
    fused = plan_memory.estimate_class(longest, g, instances=2, workspace_bytes=1 << 30)
    assert fused.weights_bytes == 1_136_000_000
    assert fused.context_bytes == 32_768 * (4096 + 6144) * 4 + (1 << 30)
    assert fused.total_bytes == 2 * (1_136_000_000 + 32_768 * 10_240 * 4 + (1 << 30))
    unfused = plan_memory.estimate_class(longest, g, fused_attention=False, softmax_fp32=True, instances=2)
    assert unfused.context_bytes - fused.context_bytes == 2 * 4 * 16 * 8192**2 * 4  # ~17 GB of fp32 scores x2


def test_softmax_pinned_escalation_is_estimated_unfused_and_does_not_fit_at_8192():
    """Why level 0 leaves Softmax to TensorRT: a pinned fp32 Softmax, if it stops the attention
    fusion, materialises [B, 16, S, S] scores; at 8,192 tokens that design cannot fit 24 GB."""
    build = PlanBuild(ServingLimits(max_length=8192), escalation=(("s",), ("m",)))
    tries = build.tries()
    assert [t.attention_fused for t in tries] == [True, False, False]
    assert plan_memory.over_budget(tries[0].estimate()) == ""
    assert "exceeds the budget" in plan_memory.over_budget(tries[1].estimate())
    # At max_length 512 the unfused escalation still fits.
    assert plan_memory.over_budget(PlanBuild(ServingLimits(), escalation=(("s",),)).tries()[1].estimate()) == ""


def test_each_class_context_is_sized_for_its_own_class_when_attention_is_not_fused():
    """With one profile per plan a context holds its own class's score tensor; with one plan of
    every profile (TensorRT's default allocation: the largest profile) each would hold the longest
    class's. Fused, every class holds 32,768 tokens and the two designs cost the same."""
    classes = length_classes(ServingLimits(max_length=8192))
    unfused = [plan_memory.estimate_class(c, plan_memory.REAL_GEOMETRY, fused_attention=False) for c in classes]
    assert unfused[0].context_bytes < unfused[1].context_bytes < unfused[2].context_bytes
    one_plan = len(classes) * CROSS_ENCODER_INSTANCES * (unfused[0].weights_bytes + unfused[2].context_bytes)
    assert sum(c.total_bytes for c in unfused) < one_plan
    fused = [plan_memory.estimate_class(c, plan_memory.REAL_GEOMETRY) for c in classes]
    assert len({c.context_bytes for c in fused}) == 1


def test_cli_prints_the_table_per_class():
    out = subprocess.run(
        [sys.executable, "-m", "export.plan_memory", "--max-length", "8192"], capture_output=True, text=True, check=True
    ).stdout
    assert "cross_encoder_8192 | 4 x 8192 | 2 |" in out and "fits the 24 GB budget" in out


def _values_limit(name: str) -> int:
    import yaml

    from tests.test_deploy import _bytes

    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values" / f"{name}.yaml").read_text())
    return _bytes(values["resources"]["limits"]["memory"])


@pytest.mark.parametrize("max_length", [512, 8192])
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_host_need_counts_every_instances_copy_and_the_derived_memory_covers_it(backend, max_length):
    """The pod's host memory at its peak (each instance's copy of the graph, one engine build's
    transient, the stubs, the memory-backed /dev/shm); the request and limit derived from it carry
    the headroom (the values files' own figures: tests/test_pod_memory.py)."""
    pod = plan_memory.served_pod_memory(backend, max_length)
    factor = 1 + plan_memory.HOST_MEMORY_HEADROOM
    assert pod.limit_bytes >= pod.host.peak_bytes * factor and pod.request_bytes >= pod.host.steady_bytes * factor
    assert pod.limit_bytes % 2**30 == 0 and pod.limit_bytes - pod.host.peak_bytes * factor < 2**30
    if backend == "onnxruntime":  # every instance holds its own copy of the served graph
        classes = len(length_classes(ServingLimits(max_length=max_length)))
        assert pod.host.parts["onnxruntime_sessions"] == classes * CROSS_ENCODER_INSTANCES * 568_000_000 * 2


def test_the_build_pass_is_what_keeps_the_onnxruntime_path_inside_the_limit_at_8192():
    """Without build-once, the six instances at 8,192 would build at once (six builders' transient
    on the host): over the limit of the values file that serves 8,192. With it, one at a time: inside."""
    limit = _values_limit("long-context")
    host = plan_memory.served_pod_memory("onnxruntime", 8192).host
    one_builder = host.peak_bytes - host.steady_bytes
    assert host.peak_bytes <= limit < host.steady_bytes + 6 * one_builder


def test_the_per_class_table_in_docs_gpu_md_is_the_estimate():
    """docs/GPU.md states the per-class memory at max_length 8,192: the numbers are this module's."""
    docs = (ROOT / "docs" / "GPU.md").read_text()
    classes = PlanBuild(ServingLimits(max_length=8192)).estimate()
    for c in classes:
        row = (
            f"| {c.model} | {c.max_batch} x {c.max_length} | {c.weights_bytes / 2**30:.2f} GiB | "
            f"{c.context_bytes / 2**30:.2f} GiB (est.) | {c.total_bytes / 2**30:.2f} GiB |"
        )
        assert row in docs, row
    total = sum(c.total_bytes for c in classes) / 2**30
    assert f"{total:.2f} GiB of the {GPU_MEMORY_BUDGET_BYTES / 2**30:.2f} GiB budget" in docs
