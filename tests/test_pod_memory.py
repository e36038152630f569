"""Issue 25 item 5, the pod's side: the memory request and limit of every values file cover the host
need of the repository that values file serves (`served`: backend, precision, max_length), with the
headroom export/plan_memory.py defines once. The chart is rendered by the real helm (the `rendered`
fixture); the need comes from the generated configs (instances, Python stubs) and the values file's
own /dev/shm size."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from export import plan_memory
from tests.test_deploy import _bytes, _one

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "deploy" / "helm" / "values"
CHART_VALUES = ROOT / "deploy" / "helm" / "bge-reranker" / "values.yaml"
VARIANTS = ["default", *sorted(p.stem for p in VALUES.glob("*.yaml"))]


def served(variant: str) -> dict:
    """The chart's `served` with the values file's keys over it (helm merges maps key by key)."""
    out = dict(yaml.safe_load(CHART_VALUES.read_text())["served"])
    if variant != "default":
        out.update((yaml.safe_load((VALUES / f"{variant}.yaml").read_text()) or {}).get("served", {}))
    return out


def _triton_memory(objects) -> tuple[int, int, int]:
    """(request, limit, /dev/shm size) of the rendered Triton container."""
    pod = _one(objects, "Deployment", "rr-bge-reranker")["spec"]["template"]["spec"]
    [triton] = [c for c in pod["containers"] if c["name"] == "triton"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    resources = triton["resources"]
    return (
        _bytes(resources["requests"]["memory"]),
        _bytes(resources["limits"]["memory"]),
        _bytes(shm["emptyDir"]["sizeLimit"]),
    )


def need(variant: str, shm_bytes: int) -> plan_memory.PodMemory:
    s = served(variant)
    return plan_memory.served_pod_memory(s["backend"], int(s["maxLength"]), s["precision"], shm_bytes=shm_bytes)


@pytest.mark.parametrize("variant", VARIANTS)
def test_memory_covers_the_served_host_need_with_headroom(rendered, variant):
    """limit >= peak need x (1 + headroom) and request >= steady need x (1 + headroom), at the
    max_length (and backend, precision) the values file says it serves."""
    request, limit, shm = _triton_memory(rendered[variant])
    pod = need(variant, shm)
    factor = 1 + plan_memory.HOST_MEMORY_HEADROOM
    s = served(variant)
    what = f"{variant} ({s['backend']} {s['precision']} max_length {s['maxLength']})"
    assert limit >= pod.host.peak_bytes * factor, (
        f"{what}: limit {limit / 2**30:.1f} GiB < peak {pod.host.peak_bytes / 2**30:.2f} GiB + headroom: "
        f"set {pod.limit}"
    )
    assert request >= pod.host.steady_bytes * factor, (
        f"{what}: request {request / 2**30:.1f} GiB < steady {pod.host.steady_bytes / 2**30:.2f} GiB + headroom: "
        f"set {pod.request}"
    )


def test_the_chart_default_is_the_derived_figure(rendered):
    """The defaults are the derived numbers themselves, not a guess that happens to be above them."""
    request, limit, shm = _triton_memory(rendered["default"])
    pod = need("default", shm)
    assert (request, limit) == (pod.request_bytes, pod.limit_bytes)


def test_8192_is_served_by_its_own_values_file_and_the_default_does_not_cover_it(rendered):
    """At 8,192 the host need exceeds the default's limit: a repository exported at 8,192 needs
    long-context.yaml (the check above would fail for the default at that max_length)."""
    assert int(served("long-context")["maxLength"]) == 8192
    _, limit, shm = _triton_memory(rendered["default"])
    at_8192 = plan_memory.served_pod_memory("onnxruntime", 8192, shm_bytes=shm)
    assert limit < at_8192.host.peak_bytes * (1 + plan_memory.HOST_MEMORY_HEADROOM)


def test_docs_state_the_derived_numbers():
    """docs/GPU.md's host memory table is this module's output."""
    docs = (ROOT / "docs" / "GPU.md").read_text()
    for backend, precision in (("onnxruntime", "fp16"), ("tensorrt", "fp16")):
        for max_length in (512, 8192):
            pod = plan_memory.served_pod_memory(backend, max_length, precision)
            row = (
                f"| {backend} | {max_length} | {pod.host.steady_bytes / 2**30:.1f} GiB | "
                f"{pod.host.peak_bytes / 2**30:.1f} GiB | {pod.request} | {pod.limit} |"
            )
            assert row in docs, row
