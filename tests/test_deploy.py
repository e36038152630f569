"""Deployment artifacts, validated offline by the real tools (deploy/validate.py in
.venv-deploy), then checked object by object."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from export import settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"


# `rendered` (every values file rendered and validated by deploy/validate.py, once per session):
# tests/conftest.py, shared with tests/test_deploy_network.py.


def _one(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, kind
    return found[0]


TRITON_POLICY = "rr-bge-reranker"  # the Triton pods' NetworkPolicy (beside REST's and the test pod's)


def test_every_variant_rendered(rendered):
    assert set(rendered) >= set(VARIANTS)


VARIANTS = [
    "default",
    "pvc",
    "object-storage",
    "init-container",
    "monitoring",
    "fixed-replicas",
    "shared-cache",
    "tensorrt-plan",
    "direct",  # the opt-out without the front proxy (issue 26): Triton's own ports exposed
]


def _triton_container(pod: dict, variant: str) -> dict:
    """Triton's container; beside it the front proxy's, in every render but direct.yaml."""
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == (["triton"] if variant == "direct" else ["triton", "proxy"]), variant
    return containers["triton"]


def _seconds(probe: dict) -> int:
    return probe["periodSeconds"] * probe["failureThreshold"]


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_spec(rendered, variant):
    deployment = _one(rendered[variant], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    triton = _triton_container(pod, variant)
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # The GPU request schedules the pod; a GFD-only label would leave it Pending without GFD.
    assert "nvidia.com/gpu.present" not in pod.get("nodeSelector", {})
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    # The self-certification verdict (docker/self_certify.py) where the pod reads its repository.
    certify = {"certify": 8003} if "--self-certify=fail" in triton["args"] else {}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002, **certify}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm" and mounts["/trt-cache"] == "trt-cache"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert triton["securityContext"]["allowPrivilegeEscalation"] is False
    # args, not command: the NGC entrypoint (CUDA forward compatibility) stays in front.
    assert "command" not in triton
    args = triton["args"]
    assert args[:2] == ["python3", "/opt/reranker/serve.py"]
    served = args[args.index("--") + 1 :]
    assert served[0] == "tritonserver" and "--strict-readiness=true" in served and "--exit-on-error=true" in served
    assert [a for a in served if a.startswith(("--exit-timeout-secs", "--backend-config"))] == settings.server_flags()
    if variant in ("object-storage", "shared-cache"):
        assert any(a.startswith("--model-repository=s3://") or a.startswith("--model-repository=gs://") for a in served)
        assert "/models" not in mounts
        # Triton copies a remote repository into /tmp first: room for the 2.27 GB fp32 graph.
        assert _bytes(volumes["tmp"]["emptyDir"]["sizeLimit"]) >= 4 * 2**30
    else:
        assert "--model-repository=/models" in served and mounts["/models"] == "model-repository"
    if variant == "init-container":
        assert pod["initContainers"][0]["volumeMounts"][0]["name"] == "model-repository"
    requests, limits = triton["resources"]["requests"], triton["resources"]["limits"]
    assert _bytes(requests["ephemeral-storage"]) >= (
        _bytes(volumes["tmp"]["emptyDir"]["sizeLimit"]) + _bytes(volumes["trt-cache"]["emptyDir"]["sizeLimit"])
    )
    on_disk = [
        v["emptyDir"]["sizeLimit"] for v in volumes.values() if "emptyDir" in v and not v["emptyDir"].get("medium")
    ]
    assert _bytes(limits["ephemeral-storage"]) >= sum(map(_bytes, on_disk))  # never evicted for filling its own volumes
    # Python backend regions: every Python stub's default region (the GPU deployment's Python
    # models: tokenizer, length_router, window_reduce instances) fits /dev/shm twice over.
    from export.triton_config import RepositorySpec, all_configs

    stubs = sum(
        g.count for c in all_configs(RepositorySpec()).values() if c.backend == "python" for g in c.instance_group
    )
    assert stubs >= 5
    assert _bytes(volumes["dshm"]["emptyDir"]["sizeLimit"]) >= 2 * stubs * settings.PYTHON_SHM_DEFAULT_BYTES


SHM_MAX_LENGTHS = (settings.DEFAULT_MAX_LENGTH, 1024, 2048, 4096, settings.MAX_SUPPORTED_LENGTH)


def _door_request_bytes(objects: list[dict], tokenizer) -> tuple[str, int]:
    """The most bytes one request can carry to Triton in this render, from the door in front of
    it: the proxy's client_max_body_size (its rendered nginx.conf), else, where the NetworkPolicy
    admits only the REST API's pods, what the REST service's client sends (texts cut at the
    published byte limit), else tritonserver's own gRPC limit."""
    from export.shm_budget import client_request_bytes

    proxy = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-proxy")]
    if proxy:
        [cap] = re.findall(r"client_max_body_size (\d+);", proxy[0]["data"]["nginx.conf"])
        return "proxy", int(cap)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == TRITON_POLICY]
    if policies:
        sources = policies[0]["spec"]["ingress"][0]["from"]  # who reaches the inference ports
        components = {
            s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") for s in sources
        }
        if components <= {"rest", "helm-test"}:
            return "rest", client_request_bytes(tokenizer)
    return "triton", settings.TRITON_GRPC_MAX_MESSAGE_BYTES


def _shm_cases(objects):
    """(backend, max_length, door, request cap, shm need per Python model, the pod's /dev/shm) for
    one render, at every GPU backend and max_length. The proxy's gRPC and Triton's own port let a
    caller name any model (direct calls counted); REST exclusivity leaves only the ensembles."""
    from export.shm_budget import shm_need
    from export.triton_config import RepositorySpec, all_configs, routed_batch_size, tokenizer_config

    deployment = _one(objects, "Deployment", "rr-bge-reranker")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    shm = _bytes(volumes["dshm"]["emptyDir"]["sizeLimit"])
    for backend in ("onnxruntime", "tensorrt"):
        for max_length in SHM_MAX_LENGTHS:
            limits = settings.ServingLimits(max_length=max_length)
            spec = RepositorySpec(limits=limits, backend=backend)
            door, cap = _door_request_bytes(objects, tokenizer_config(spec))
            need = shm_need(all_configs(spec), max_length, routed_batch_size(limits), cap, door != "rest")
            yield backend, max_length, door, cap, need, shm


def test_the_charts_shm_holds_every_python_region_at_its_ceiling(rendered):
    """Issue 26 item 5: each Python stub's region at its ceiling (export/shm_budget.py: a region
    ends below max(default, 2 x execute bytes + growth); a tokenizer execute is one request, of at
    most what the door admits) fits the chart's /dev/shm, for every rendered values file, every
    max_length and both GPU backends, wherever a door bounds the request: the proxy (every model
    addressable by name: the length router, too, takes one request per execute) and REST
    exclusivity. Where Triton's own gRPC port is the door (2 GiB messages: the proxy off and no
    REST exclusivity) it cannot fit, and docs/SECURITY.md says so; this test keeps that list
    honest. The chart's default (the proxy on, issue 26) fits; only the documented opt-out
    deploy/helm/values/direct.yaml does not."""
    doors, unbounded = {}, set()
    for variant, objects in rendered.items():
        for backend, max_length, door, cap, need, shm in _shm_cases(objects):
            doors[variant] = (door, cap)
            assert set(need) >= {"tokenizer", "length_router", "window_reduce"}
            if sum(need.values()) > shm:
                unbounded.add(variant)
                assert door == "triton", (variant, backend, max_length, door, cap, need, shm)
            else:
                print(f"{variant} {backend} {max_length}: {sum(need.values()) >> 20} MiB of {shm >> 20} MiB")
    assert {v for v, (door, _) in doors.items() if door == "triton"} == unbounded
    assert doors["default"][0] == "proxy", doors
    assert "direct" in unbounded, unbounded
    security = (ROOT / "docs" / "SECURITY.md").read_text()
    assert "proxy.enabled=false" in security and "no ceiling" in security and "direct.yaml" in security
    assert "length_router" in security and "576 MiB" in security


def test_the_default_charts_shm_holds_every_region_at_its_ceiling(rendered):
    """The chart's default (the front proxy) bounds every Python stub's region, with every model
    addressable by name through the proxy's gRPC: the tokenizer and the length router take one
    request per execute (a queue that never merges), so a -1 dim as wide as the proxy's cap is one
    message per execute (before: 256 requests of 33 MB per router execute, ~34 GB)."""
    for backend, max_length, door, _cap, need, shm in _shm_cases(rendered["default"]):
        assert door == "proxy", door  # the proxy's gRPC lets a caller name every model: direct calls counted
        assert sum(need.values()) <= shm, (backend, max_length, need)


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_and_timing(rendered, variant):
    deployment = _one(rendered[variant], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    triton = _triton_container(pod, variant)
    startup = triton["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert _seconds(startup) >= 1800  # first TensorRT build on a T4/L4/A10 + warm-up
    for name in ("readinessProbe", "livenessProbe"):
        probe = triton[name]
        # One pair through the ensemble: Triton's health endpoints stay 200 with a dead stub.
        assert probe["exec"]["command"][:2] == ["python3", "/opt/reranker/probe.py"]
        assert "httpGet" not in probe
        assert settings.PROBE_TIMEOUT_S < probe["timeoutSeconds"] <= 10
    assert startup["timeoutSeconds"] <= 10
    # A first build is not a failed rollout; a rollout never needs a spare GPU by default.
    assert deployment["spec"]["progressDeadlineSeconds"] > _seconds(startup)
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    if variant != "tensorrt-plan":
        assert rolling == {"maxSurge": 0, "maxUnavailable": 1}
    # Graceful shutdown: preStop pause, then Triton's drain, both inside the grace period.
    assert triton["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(settings.PRESTOP_SLEEP_S)]
    assert pod["terminationGracePeriodSeconds"] == settings.TERMINATION_GRACE_S
    assert f"--exit-timeout-secs={settings.EXIT_TIMEOUT_S}" in triton["args"]
    # Spread across nodes and zones.
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in pod["topologySpreadConstraints"])
    hpa = [o for o in rendered[variant] if o["kind"] == "HorizontalPodAutoscaler"]
    if hpa:
        assert hpa[0]["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= _seconds(startup)


@pytest.mark.parametrize("variant", VARIANTS)
def test_engine_cache_cannot_pend_or_be_shared_unsafely(rendered, variant):
    objects = rendered[variant]
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Triton writes engines only to a per-pod emptyDir.
    assert "emptyDir" in volumes["trt-cache"]
    for claim in (o for o in objects if o["kind"] == "PersistentVolumeClaim"):
        if "ReadWriteMany" in claim["spec"]["accessModes"]:
            assert claim["spec"].get("storageClassName"), f"{variant}: RWX claim without a storage class"
    args = pod["containers"][0]["args"]
    if variant in ("shared-cache", "object-storage"):
        assert "--shared=/trt-cache-shared" in args
        assert "persistentVolumeClaim" in volumes["trt-cache-shared"]
    else:
        assert "trt-cache-shared" not in volumes and not any(a.startswith("--shared") for a in args)
    if variant == "default":
        assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]


def test_shared_cache_without_class_or_claim_does_not_render(tmp_path):
    script = (
        "import sys; sys.path.insert(0, 'deploy'); import validate\nvalidate.render({'trtCache': {'type': 'shared'}})"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "storageClassName" in proc.stderr


def test_scheduling_for_a_prebuilt_plan(rendered):
    pod = _one(rendered["tensorrt-plan"], "Deployment")["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}]
    default = _one(rendered["default"], "Deployment")["spec"]["template"]["spec"]
    assert "runtimeClassName" not in default and "affinity" not in default


def test_network_policy_namespaces_are_values(rendered):
    for variant, prometheus in (("default", "monitoring"), ("shared-cache", "gmp-system")):
        policy = _one(rendered[variant], "NetworkPolicy", TRITON_POLICY)
        inference, metrics = policy["spec"]["ingress"]
        # Triton's metrics, and the self-certification verdict (every source, uri included).
        assert {p["port"] for p in metrics["ports"]} == {8002, 8003}
        # Only Prometheus's namespace scrapes (tests/test_deploy_network.py: nothing else).
        assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus}}}]
        assert {"podSelector": {}} in inference["from"]
    inference = _one(rendered["shared-cache"], "NetworkPolicy", TRITON_POLICY)["spec"]["ingress"][0]
    [selector] = [p["namespaceSelector"] for p in inference["from"] if "namespaceSelector" in p]
    assert selector["matchExpressions"][0]["values"] == ["search-api", "rag"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_test_pod_runs_the_verifier(rendered, variant):
    [pod] = [o for o in rendered[variant] if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    [container] = pod["spec"]["containers"]
    deployment = _one(rendered[variant], "Deployment")
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    if variant == "shared-cache":  # uri source, no certificate ConfigMap: a clear skip
        assert "SKIPPED" in " ".join(container["command"])
        return
    assert container["command"] == [
        "python3",
        "-m",
        "reranker_client.verify",
        "--url=rr-bge-reranker:8001",
        "--fixture=/models/certificate.json",
        "--report=/tmp/verify.json",
    ]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount["readOnly"] is True
    volume = {v["name"]: v for v in pod["spec"]["volumes"]}[mount["name"]]
    expected = {"object-storage": "configMap", "init-container": "emptyDir"}.get(variant, "persistentVolumeClaim")
    assert expected in volume


def test_model_repository_placeholder():
    # Object-store syncs drop empty folders; the ensemble's version folder must hold a file.
    from export.repository import ENSEMBLE_PLACEHOLDER

    assert (ROOT / "model_repository" / "rerank" / "1" / ENSEMBLE_PLACEHOLDER).is_file()


def test_hpa_scales_on_queue_time(rendered):
    # Off by default: without Prometheus Adapter serving the metric it never scales.
    assert not [o for o in rendered["default"] if o["kind"] == "HorizontalPodAutoscaler"]
    hpa = _one(rendered["monitoring"], "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "triton_queue_time_per_request_us"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    rules = yaml.safe_load((ROOT / "deploy/prometheus-adapter-rules.yaml").read_text())
    rule = rules["rules"]["custom"][0]
    assert rule["name"]["as"] == "triton_queue_time_per_request_us"
    assert (
        "nv_inference_queue_duration_us" in rule["metricsQuery"]
        and "nv_inference_request_success" in rule["metricsQuery"]
    )
    # rate() needs two samples per window: with 30 s scrapes the window must be >= 4 scrapes.
    windows = re.findall(r"\[(\d+)([sm])\]", rule["metricsQuery"])
    assert windows and all(int(n) * (60 if unit == "m" else 1) >= 4 * 30 for n, unit in windows)
    assert "replicas" not in _one(rendered["monitoring"], "Deployment")["spec"]  # the HPA owns it
    assert _one(rendered["default"], "Deployment")["spec"]["replicas"] == 2
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
    policy = _one(objects, "NetworkPolicy", TRITON_POLICY)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_service_monitor_behind_flag(rendered):
    assert not [o for o in rendered["default"] if o["kind"] == "ServiceMonitor"]
    monitor = _one(rendered["monitoring"], "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    image = _one(rendered["monitoring"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "@sha256:" in image


VERIFY = [
    "python3",
    "-m",
    "reranker_client.verify",
    "--url",
    f"triton:{settings.PROXY_GRPC_PORT}",
    "--fixture",
    "/models/certificate.json",
    "--report",
    "/tmp/verify.json",
]


def test_compose_and_dockerfile_facts():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    triton = compose["services"]["triton"]
    assert triton["shm_size"] in ("1gb", "2gb") and triton["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] == ["gpu"]
    # Only the proxy's ports and metrics are published, on the host's loopback; Triton's own
    # HTTP/gRPC bind 127.0.0.1 inside the namespace the proxy shares.
    assert set(triton["ports"]) == {
        f"127.0.0.1:{settings.PROXY_HTTP_PORT}:{settings.PROXY_HTTP_PORT}",
        f"127.0.0.1:{settings.PROXY_GRPC_PORT}:{settings.PROXY_GRPC_PORT}",
        "127.0.0.1:8002:8002",
        "127.0.0.1:8003:8003",  # the self-certification verdict (docker/self_certify.py)
    }
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1"} <= set(triton["command"])
    proxy = compose["services"]["proxy"]
    # The only door opens once the probe and the self-certification verdict pass.
    assert proxy["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert "--verdict=/tmp/reranker-selfcert.json" in triton["healthcheck"]["test"]
    assert proxy["network_mode"] == "service:triton"
    assert "../deploy/helm/bge-reranker/files/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert any("/trt-cache" in v for v in triton["volumes"])
    assert "entrypoint" not in triton  # the NGC entrypoint stays
    command = triton["command"]
    assert command[:2] == ["python3", "/opt/reranker/serve.py"]
    assert [a for a in command if a.startswith(("--exit-timeout-secs", "--backend-config"))] == settings.server_flags()
    assert "probe.py" in " ".join(triton["healthcheck"]["test"])
    assert int(triton["stop_grace_period"].rstrip("s")) > settings.EXIT_TIMEOUT_S
    verify = compose["services"]["verify"]
    assert verify["depends_on"] == {
        "triton": {"condition": "service_healthy"},
        "proxy": {"condition": "service_started"},
    }
    assert verify["command"] == VERIFY and verify["restart"] == "no"
    assert "../runs/model_repository:/models:ro" in verify["volumes"]
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS server" in dockerfile
    assert "USER 1000:1000" in dockerfile and "HEALTHCHECK" in dockerfile and "/opt/reranker/probe.py" in dockerfile
    assert 'ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]' in dockerfile
    assert "driver >= 560" in dockerfile and "535.86" in dockerfile  # the pinned image's driver requirement
    server_target = dockerfile.split("AS server-baked")[0]
    assert "tritonclient[grpc]==2.51.0" in server_target and "--no-deps /opt/reranker/client" in server_target
    # Every launcher module is copied next to serve.py, and the build context admits it
    # (.dockerignore starts from `*`): serve.py imports its siblings at start.
    import re

    copied = set()
    for line in server_target.splitlines():
        if line.startswith("COPY docker/") and line.rstrip().endswith("/opt/reranker/"):
            copied |= set(line.split()[1:-1])
    siblings = set(re.findall(r"^(?:import|from) (\w+)", (ROOT / "docker" / "serve.py").read_text(), re.M))
    local = {f"docker/{name}.py" for name in siblings if (ROOT / "docker" / f"{name}.py").exists()}
    assert {"docker/serve.py", "docker/probe.py"} | local <= copied, (local, copied)
    admitted = set((ROOT / ".dockerignore").read_text().split())
    # Each copied file is admitted by name or by a folder it is in (`!export/`).
    for path in copied:
        parents = [path] + [f"{'/'.join(path.split('/')[:i])}/" for i in range(1, path.count("/") + 1)]
        assert any(f"!{p}" in admitted for p in parents), (path, admitted)
    flags = re.findall(r'"(--(?:exit-timeout-secs|backend-config)=[^"]+)"', server_target)
    assert flags == settings.server_flags()
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!docker/serve.py", "!docker/probe.py", "!client/"} <= set(ignored)


def test_kserve_manifest():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kserve/inferenceservice.yaml").read_text()) if d]
    [isvc] = [d for d in docs if d["kind"] == "InferenceService"]
    [hpa] = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    assert "command" not in container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http1": 8080, "h2c": 9000}
    served = container["args"][container["args"].index("--") + 1 :]
    assert "--http-port=8080" in served and "--grpc-port=9000" in served and "--exit-on-error=true" in served
    assert [a for a in served if a.startswith(("--exit-timeout-secs", "--backend-config"))] == settings.server_flags()
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and "emptyDir" in volumes["trt-cache"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/dev/shm", "/trt-cache"} <= mounts
    assert container["livenessProbe"]["exec"]["command"][1] == "/opt/reranker/probe.py"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(settings.PRESTOP_SLEEP_S)]
    assert predictor["terminationGracePeriodSeconds"] == settings.TERMINATION_GRACE_S
    assert "nodeSelector" not in predictor
    # The autoscaler scales on queue time, not CPU.
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{isvc['metadata']['name']}-predictor"
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "triton_queue_time_per_request_us"


def test_chart_values_match_settings():
    values = yaml.safe_load((ROOT / "deploy/helm/bge-reranker/values.yaml").read_text())
    assert [f"--backend-config={v}" for v in values["triton"]["backendConfig"]] == settings.python_backend_flags()
    shutdown = values["shutdown"]
    assert (shutdown["preStopSleepSeconds"], shutdown["exitTimeoutSeconds"], shutdown["marginSeconds"]) == (
        settings.PRESTOP_SLEEP_S,
        settings.EXIT_TIMEOUT_S,
        settings.SHUTDOWN_MARGIN_S,
    )
    assert values["trtCache"]["type"] == "emptyDir"  # binds on every cluster


@pytest.mark.parametrize("variant", ["default", "proxy"])
def test_front_proxy_variant(rendered, variant):
    """proxy.enabled, the chart's default since issue 26 (a plain `helm install`): an NGINX
    sidecar with the generated config; Triton's HTTP/gRPC on loopback; Services and the
    NetworkPolicy reach only the proxy's ports (issue 13)."""
    objects = rendered[variant]
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"triton", "proxy"}
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1"} <= set(containers["triton"]["args"])
    assert containers["triton"]["startupProbe"]["httpGet"]["port"] == "proxy-http"
    config = _one(objects, "ConfigMap")["data"]["nginx.conf"]
    assert config.strip() == (ROOT / "deploy/helm/bge-reranker/files/nginx.conf").read_text().strip()
    assert f"client_max_body_size {settings.PROXY_MAX_BODY_BYTES};" in config
    for service in (o for o in objects if o["kind"] == "Service"):
        assert {p["targetPort"] for p in service["spec"]["ports"] if p["name"] in ("http", "grpc")} <= {
            "proxy-http",
            "proxy-grpc",
        }
    policy = _one(objects, "NetworkPolicy", TRITON_POLICY)
    inference_ports = {p["port"] for p in policy["spec"]["ingress"][0]["ports"]}
    assert inference_ports == {settings.PROXY_HTTP_PORT, settings.PROXY_GRPC_PORT}
    # The opt-out (direct.yaml, proxy.enabled=false): one container, Triton's own ports exposed.
    direct = rendered["direct"]
    [triton] = _one(direct, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1"} & set(triton["args"])
    direct_policy = _one(direct, "NetworkPolicy", TRITON_POLICY)
    assert {p["port"] for p in direct_policy["spec"]["ingress"][0]["ports"]} == {8000, 8001}


def _notes(values: dict) -> str:
    """The chart's NOTES.txt as helm prints it after an install with these values."""
    script = (
        "import json, sys; from helm_python import chart\n"
        "c = chart.Chart.load('deploy/helm/bge-reranker')\n"
        "out = c.render(json.loads(sys.argv[1]), name='rr', namespace='search', is_install=True)\n"
        "print(next(t for p, t in out.items() if p.endswith('NOTES.txt')))"
    )
    proc = subprocess.run(
        [str(DEPLOY_PYTHON), "-c", script, json.dumps(values)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_install_notes_name_the_surface_and_warn_without_the_proxy():
    """Issue 26 item 1: a plain install says it serves through the proxy; the direct.yaml
    opt-out prints a warning naming what it exposes."""
    default = _notes({})
    assert "NGINX front proxy (the default)" in default and "WARNING" not in default
    assert f"rr-bge-reranker-headless.search.svc:{settings.PROXY_GRPC_PORT}" in default
    direct = _notes(yaml.safe_load((ROOT / "deploy/helm/values/direct.yaml").read_text()))
    assert "WARNING: proxy.enabled=false" in direct and "SECURITY.md" in direct


def test_rest_api_chart_option(rendered):
    """rest.enabled: the REST API's own Deployment and Service on 8080; with rest.exclusive only
    its pods (and the helm test pod) reach Triton's inference ports."""
    assert not [o for o in rendered["default"] if o["metadata"]["name"].endswith("-rest")]
    objects = rendered["rest"]
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    rest, triton = deployments["rr-bge-reranker-rest"], deployments["rr-bge-reranker"]
    rest_labels = rest["spec"]["template"]["metadata"]["labels"]
    triton_labels = triton["spec"]["template"]["metadata"]["labels"]
    [container] = rest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Through the front proxy's gRPC port (the chart's default): Triton's own binds loopback.
    assert env["REST_TRITON_URL"] == (
        f"dns:///rr-bge-reranker-headless.search.svc.cluster.local:{settings.PROXY_GRPC_PORT}"
    )
    assert env["REST_HOST"] == "0.0.0.0" and env["REST_PORT"] == "8080"
    assert env["REST_API_KEYS_FILE"] == "/etc/reranker-rest/keys/keys"  # a file: rotations apply live
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert services["rr-bge-reranker-rest"]["spec"]["ports"][0]["port"] == 8080
    assert services["rr-bge-reranker-rest"]["spec"]["selector"].items() <= rest_labels.items()
    for name in ("rr-bge-reranker", "rr-bge-reranker-headless"):  # Triton's Services never pick REST pods
        assert not services[name]["spec"]["selector"].items() <= rest_labels.items()
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    inference = policies["rr-bge-reranker"]["spec"]["ingress"][0]
    assert {p["port"] for p in inference["ports"]} == {settings.PROXY_HTTP_PORT, settings.PROXY_GRPC_PORT}
    allowed = [peer["podSelector"]["matchLabels"] for peer in inference["from"]]
    assert len(allowed) == len(inference["from"]) == 2  # no namespace-wide or extra peers
    assert allowed[0].items() <= rest_labels.items() and allowed[0].items() - triton_labels.items()
    assert allowed[1]["app.kubernetes.io/component"] == "helm-test"
    rest_policy = policies["rr-bge-reranker-rest"]["spec"]
    assert rest_policy["podSelector"]["matchLabels"].items() <= rest_labels.items()
    assert {p["port"] for p in rest_policy["ingress"][0]["ports"]} == {8080}
    [to_triton] = [rule for rule in rest_policy["egress"] if "to" in rule]
    assert {p["port"] for p in to_triton["ports"]} == {settings.PROXY_GRPC_PORT}


def test_rest_api_compose_and_dockerfile():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    rest = compose["services"]["rest"]
    assert rest["build"]["target"] == "rest" and rest["ports"] == ["127.0.0.1:8090:8080"]
    # Through the front proxy's gRPC port, as every caller: Triton's own binds loopback.
    assert rest["environment"]["REST_TRITON_URL"] == f"triton:{settings.PROXY_GRPC_PORT}"
    assert rest["depends_on"] == {"triton": {"condition": "service_healthy"}, "proxy": {"condition": "service_started"}}
    target = (ROOT / "docker/Dockerfile").read_text().split(" AS rest\n")[1]
    assert "-c requirements/dev.txt ./client ./rest" in target and "USER 1000:1000" in target
    assert 'ENTRYPOINT ["python", "-m", "reranker_rest"]' in target and "HEALTHCHECK" in target
    assert "!rest/" in (ROOT / ".dockerignore").read_text().splitlines()


def _node_admits(terms: list[dict], labels: dict[str, str]) -> bool:
    """Kubernetes' nodeSelectorTerms (ORed terms of ANDed In / DoesNotExist expressions) on one node."""

    def holds(expression: dict) -> bool:
        if expression["operator"] == "In":
            return labels.get(expression["key"]) in expression["values"]
        if expression["operator"] == "DoesNotExist":
            return expression["key"] not in labels
        raise AssertionError(f"operator not evaluated here: {expression}")

    return any(all(holds(e) for e in term["matchExpressions"]) for term in terms)


def test_cpu_pods_can_be_pinned_to_nodes_that_run_the_gated_int8_kernel(rendered):
    """The certificate's int8_node_features (export/cpu_isa.node_features) as the chart's
    int8NodeFeatures: rendered on the CPU profile and strictly validated, the nodeAffinity admits a
    node with the export host's features and refuses one whose ONNX Runtime would pick another int8
    kernel (NFD labels; an AVX-512 node runs MLAS's Avx512Core u8u8 kernel, not Avx2's)."""
    from export import cpu_isa

    avx2_host = ["avx2", "fma"]
    features = cpu_isa.node_features(avx2_host, weights_uint8=True)
    values = {**yaml.safe_load((ROOT / "deploy/helm/values/cpu.yaml").read_text()), "int8NodeFeatures": features}
    script = (
        "import sys, json; sys.path.insert(0, 'deploy'); import validate\n"
        f"objects = validate.render({values!r})\n"
        "problems = validate.check_kubernetes(objects, 'cpu-pinned')\n"
        "print(json.dumps({'problems': problems, 'objects': objects}))"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["problems"] == []
    pod = _one(out["objects"], "Deployment")["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]

    def node(flags):
        return {cpu_isa.NFD_LABEL_PREFIX + cpu_isa.NFD_NAMES[f]: "true" for f in flags}

    assert _node_admits(terms, node(avx2_host))
    assert _node_admits(terms, node(avx2_host + ["avx_vnni"]))  # AVX-VNNI leaves the u8u8 kernel alone
    assert cpu_isa.mlas_u8u8_kernel(avx2_host + ["avx512f", "avx512bw", "avx512dq", "avx512vl"]) != "Avx2"
    assert not _node_admits(terms, node(avx2_host + ["avx512f", "avx512bw", "avx512dq", "avx512vl"]))
    assert not _node_admits(terms, node(avx2_host + ["avx_vnni_int8"]))
    assert not _node_admits(terms, {})  # a node without NFD labels: Pending, not a silent mismatch
    unpinned = _one(rendered["cpu"], "Deployment")["spec"]["template"]["spec"]
    assert "affinity" not in unpinned  # the CPU profile as shipped: no pinning until it is set


@pytest.mark.parametrize(
    "other",
    [{"gpuProducts": ["NVIDIA-L4"]}, {"affinity": {"nodeAffinity": {}}}],
    ids=["gpu-pin", "empty-user-nodeAffinity"],
)
def test_cpu_pinning_and_another_node_affinity_do_not_render(other):
    """Two nodeAffinity keys would render (a user's, even {}, and the pin's): strict decoders refuse
    duplicate keys and the lenient ones keep one silently. Refused, naming the values."""
    values = {"int8NodeFeatures": {"require": ["AVX2"], "exclude": []}, **other}
    script = f"import sys; sys.path.insert(0, 'deploy'); import validate\nvalidate.render({values!r})"
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "int8NodeFeatures pins CPU pods" in proc.stderr


def test_a_pin_copied_from_a_certificate_without_node_features_names_the_value():
    """Review rv11: docs/CPU.md's `jq '{int8NodeFeatures: .served.int8_gate_cpu.int8_node_features}'`
    writes `int8NodeFeatures: null` for a certificate written before the export recorded them (or a
    GPU certificate); helm drops the key and the chart failed with `nil pointer evaluating interface
    {}.require`, which names neither the value nor the cause. It must render (unpinned) or name it."""
    values = {**yaml.safe_load((ROOT / "deploy/helm/values/cpu.yaml").read_text()), "int8NodeFeatures": None}
    script = f"import sys; sys.path.insert(0, 'deploy'); import validate\nvalidate.render({values!r})"
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    error = proc.stderr.strip().splitlines()[-1] if proc.returncode else ""
    assert proc.returncode == 0 or "int8NodeFeatures" in error, error
