"""Deployment artifacts, validated offline by the real tools (deploy/validate.py in
.venv-deploy), then checked object by object."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("rendered")
    proc = subprocess.run([str(DEPLOY_PYTHON), "deploy/validate.py", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return {p.stem: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(out.glob("*.yaml"))}


def _one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_every_variant_rendered(rendered):
    assert set(rendered) >= {"default", "pvc", "object-storage", "init-container", "monitoring", "fixed-replicas"}


@pytest.mark.parametrize("variant", ["default", "pvc", "object-storage", "init-container", "monitoring", "fixed-replicas"])
def test_pod_spec(rendered, variant):
    deployment = _one(rendered[variant], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [triton] = pod["containers"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = triton["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # engine build + warm-up
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm" and mounts["/trt-cache"] == "trt-cache"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert triton["securityContext"]["allowPrivilegeEscalation"] is False
    args = triton["args"]
    assert "--strict-readiness=true" in args
    if variant == "object-storage":
        assert "--model-repository=s3://my-bucket/bge-reranker/model_repository" in args
        assert "/models" not in mounts
    else:
        assert "--model-repository=/models" in args and mounts["/models"] == "model-repository"
    if variant == "init-container":
        assert pod["initContainers"][0]["volumeMounts"][0]["name"] == "model-repository"


def test_hpa_scales_on_queue_time(rendered):
    hpa = _one(rendered["default"], "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "triton_queue_time_per_request_us"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    rules = yaml.safe_load((ROOT / "deploy/prometheus-adapter-rules.yaml").read_text())
    rule = rules["rules"]["custom"][0]
    assert rule["name"]["as"] == "triton_queue_time_per_request_us"
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and "nv_inference_request_success" in rule["metricsQuery"]
    assert "replicas" not in _one(rendered["default"], "Deployment")["spec"]  # the HPA owns it
    assert _one(rendered["fixed-replicas"], "Deployment")["spec"]["replicas"] == 1


def test_pdb_and_services_select_the_pods(rendered):
    objects = rendered["default"]
    labels = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = [o for o in objects if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"rr-bge-reranker", "rr-bge-reranker-headless"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
    headless = next(s for s in services if s["metadata"]["name"].endswith("headless"))
    assert headless["spec"]["clusterIP"] == "None"
    policy = _one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_service_monitor_behind_flag(rendered):
    assert not [o for o in rendered["default"] if o["kind"] == "ServiceMonitor"]
    monitor = _one(rendered["monitoring"], "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    image = _one(rendered["monitoring"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "@sha256:" in image


def test_compose_and_dockerfile_facts():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    triton = compose["services"]["triton"]
    assert triton["shm_size"] in ("1gb", "2gb") and triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert {"8000:8000", "8001:8001", "8002:8002"} <= set(triton["ports"])
    assert any("/trt-cache" in v for v in triton["volumes"])
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS server" in dockerfile
    assert "USER 1000:1000" in dockerfile and "HEALTHCHECK" in dockerfile and "/v2/health/ready" in dockerfile
