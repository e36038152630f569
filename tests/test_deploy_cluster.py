"""What a real cluster would show first (issue 27), asserted on the rendered chart: pods fit the
common GPU node shapes, overload sheds load instead of killing pods, rollouts and drains keep
going, gRPC connections are recycled, and the per-cloud values files carry what each cloud needs.
Reachability under the NetworkPolicies: tests/test_deploy_network.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from dataclasses import dataclass

import pytest

from export import settings
from tests.test_deploy import DEPLOY_PYTHON, ROOT, VARIANTS, _bytes, _one

CLOUD_VARIANTS = ["eks", "gke", "gke-autopilot", "aks"]
ALL_VARIANTS = [
    *VARIANTS,
    "proxy",
    "rest",
    "proxy-rest",
    "gateway",
    "prebuild",
    *CLOUD_VARIANTS,
]
GI = 2**30


def _triton(objects) -> dict:
    return _one(objects, "Deployment", "rr-bge-reranker")


def _cpu_millis(quantity) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


# --- Node sizing. Allocatable = capacity - kube-reserved - system-reserved - hard eviction, by
# each provider's published reservation rules (EKS AMI bootstrap, GKE "node allocatable", AKS
# "resource reservations"). Capacity memory: what the kubelet reports is a little below the
# nominal size (firmware and kernel); 3% is taken off. The image's size is the pinned NGC
# image (nvcr.io/nvidia/tritonserver:24.10-py3) plus our layers, ~15 GB uncompressed as the
# issue gives it: measure yours with `docker image inspect`. ---
IMAGE_BYTES = 15 * 10**9
# Daemonsets on a GPU node (kube-proxy, CNI, device plugin, DCGM exporter, log and metrics
# agents) request a few hundred millicores and up to a GiB between them.
DAEMONSET_CPU_M = 300
DAEMONSET_MEMORY = 1 * GI
# Kubelet hard eviction on the node filesystem (nodefs.available < 10%, imagefs.available < 15%:
# image and pod data share the root disk on all three) and the OS itself.
DISK_EVICTION_FRACTION = 0.15
OS_BYTES = 4 * GI


def _tiered(amount: float, tiers: list[tuple[float, float]]) -> float:
    """sum of rate x the part of amount inside each (size, rate) tier, the last size open."""
    reserved, rest = 0.0, amount
    for size, rate in tiers:
        part = min(rest, size)
        reserved += part * rate
        rest -= part
        if rest <= 0:
            break
    return reserved


def _cpu_reserved_m(cores: int, cloud: str) -> float:
    if cloud == "aks":  # AKS table: 1 core 60m, 2 100m, 4 140m, 8 180m, 16 260m
        return {1: 60, 2: 100, 4: 140, 8: 180, 16: 260}[cores]
    # EKS and GKE: 6% of the first core, 1% of the second, 0.5% of the next two, 0.25% above
    return _tiered(cores * 1000, [(1000, 0.06), (1000, 0.01), (2000, 0.005), (1e9, 0.0025)])


def _memory_reserved(memory: float, cloud: str, max_pods: int) -> float:
    eviction = 100 * 2**20
    if cloud == "eks":  # 255 MiB + 11 MiB per pod the node may run
        return (255 + 11 * max_pods) * 2**20 + eviction
    if cloud == "gke":  # 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% to 128
        return (
            _tiered(memory, [(4 * GI, 0.25), (4 * GI, 0.20), (8 * GI, 0.10), (112 * GI, 0.06), (1e15, 0.02)]) + eviction
        )
    if cloud == "aks":  # 1.29+: 20 MiB per pod + 50 MiB
        return (20 * max_pods + 50) * 2**20 + eviction
    raise ValueError(cloud)


@dataclass(frozen=True)
class NodeShape:
    name: str
    cloud: str
    gpu: str
    cores: int
    memory_gib: float
    max_pods: int
    default_disk_gib: int  # the provider's default root disk for the node pool
    chart_disk_gib: int  # what docs/DEPLOYMENT.md asks for

    @property
    def cpu_m(self) -> float:
        return self.cores * 1000 - _cpu_reserved_m(self.cores, self.cloud)

    @property
    def memory(self) -> float:
        capacity = self.memory_gib * GI * 0.97
        return capacity - _memory_reserved(capacity, self.cloud, self.max_pods)

    def disk_for_pods(self, disk_gib: int) -> float:
        """Bytes left for pods' ephemeral storage once the OS and the image are on the disk and
        the kubelet's eviction threshold is kept free."""
        return disk_gib * GI * (1 - DISK_EVICTION_FRACTION) - OS_BYTES - IMAGE_BYTES


NODE_SHAPES = [
    NodeShape("g4dn.xlarge", "eks", "T4", 4, 16, 29, 20, 60),
    NodeShape("g5.xlarge", "eks", "A10G", 4, 16, 58, 20, 60),
    NodeShape("g6.xlarge", "eks", "L4", 4, 16, 58, 20, 60),
    NodeShape("g2-standard-4", "gke", "L4", 4, 16, 110, 100, 100),
    NodeShape("n1-standard-4 + T4", "gke", "T4", 4, 15, 110, 100, 100),
    NodeShape("Standard_NC4as_T4_v3", "aks", "T4", 4, 28, 30, 128, 128),
]
CLOUD_FILE = {"eks": "eks", "gke": "gke", "aks": "aks"}
# The nodes docs/GPU.md and long-context.yaml name for a repository exported at max_length 8,192.
LONG_CONTEXT_NODE_SHAPES = [
    NodeShape("g5.2xlarge", "eks", "A10G", 8, 32, 58, 20, 60),
    NodeShape("g6.2xlarge", "eks", "L4", 8, 32, 58, 20, 60),
    NodeShape("g2-standard-8", "gke", "L4", 8, 32, 110, 100, 100),
    NodeShape("Standard_NC8as_T4_v3", "aks", "T4", 8, 56, 30, 128, 128),
]


def _pod_requests(objects) -> tuple[int, int, int]:
    """(cpu millicores, memory bytes, ephemeral bytes) the Triton pod requests, all containers."""
    pod = _triton(objects)["spec"]["template"]["spec"]
    cpu = memory = disk = 0
    for container in pod["containers"]:
        requests = container["resources"]["requests"]
        cpu += _cpu_millis(requests["cpu"])
        memory += _bytes(requests["memory"])
        disk += _bytes(requests.get("ephemeral-storage", "0"))
    return cpu, memory, disk


@pytest.mark.parametrize("shape", NODE_SHAPES, ids=lambda s: s.name)
def test_pods_fit_common_gpu_nodes(rendered, shape):
    """Every values file's Triton pod (with the proxy where it runs) fits each node shape's
    allocatable CPU and memory beside the daemonsets; its cloud's file and the default fit the
    disk the docs ask for. The GKE Autopilot file is checked against the GKE shapes."""
    variants = [v for v in ALL_VARIANTS if v not in CLOUD_VARIANTS]
    # Autopilot picks the node for the pod's requests: no fixed shape to fit.
    variants += [v for v in CLOUD_VARIANTS if v.split("-")[0] == shape.cloud and v != "gke-autopilot"]
    for variant in variants:
        cpu, memory, _ = _pod_requests(rendered[variant])
        assert cpu + DAEMONSET_CPU_M <= shape.cpu_m, (
            f"{variant} on {shape.name}: {cpu}m + daemonsets > {shape.cpu_m:.0f}m"
        )
        assert memory + DAEMONSET_MEMORY <= shape.memory, (
            f"{variant} on {shape.name}: {memory / GI:.1f} GiB + daemonsets > {shape.memory / GI:.1f} GiB"
        )
    for variant in ("default", CLOUD_FILE[shape.cloud]):
        disk = _pod_requests(rendered[variant])[2]
        assert disk <= shape.disk_for_pods(shape.chart_disk_gib), (
            f"{variant}: {shape.chart_disk_gib} GiB disk too small"
        )


def test_long_context_fits_only_32_gib_nodes(rendered):
    """long-context.yaml (max_length 8,192: build peak ~14 GiB) requests what it may use
    (request = limit), so the scheduler cannot place it on a 16 GiB node (allocatable ~14.6 GiB
    on g5/g6.xlarge, even with no daemonset), where the build would be evicted or OOM-killed; it
    fits the 32 GiB nodes the docs name beside the daemonsets."""
    pod = _triton(rendered["long-context"])["spec"]["template"]["spec"]
    [triton] = [c for c in pod["containers"] if c["name"] == "triton"]
    resources = triton["resources"]
    assert _bytes(resources["requests"]["memory"]) == _bytes(resources["limits"]["memory"])
    cpu, memory, _ = _pod_requests(rendered["long-context"])
    small = [shape for shape in NODE_SHAPES if shape.memory_gib <= 16]
    assert {s.name for s in small} >= {"g5.xlarge", "g6.xlarge", "g2-standard-4"}
    for shape in small:
        assert memory > shape.memory, f"long-context schedulable on {shape.name}: {memory / GI:.1f} GiB"
    docs = (ROOT / "docs/GPU.md").read_text() + (ROOT / "deploy/helm/values/long-context.yaml").read_text()
    for shape in LONG_CONTEXT_NODE_SHAPES:
        assert shape.name in docs, shape.name
        assert cpu + DAEMONSET_CPU_M <= shape.cpu_m, f"long-context on {shape.name}: {cpu}m"
        assert memory + DAEMONSET_MEMORY <= shape.memory, (
            f"long-context on {shape.name}: {memory / GI:.1f} GiB + daemonsets > {shape.memory / GI:.1f} GiB"
        )


def test_the_documented_disk_sizes():
    """EKS's 20 GiB default node disk cannot hold the image and the pod's disk request: the EKS
    file and docs/DEPLOYMENT.md say so, and give the size the table checks."""
    [eks] = [s for s in NODE_SHAPES if s.name == "g5.xlarge"]
    assert eks.disk_for_pods(eks.default_disk_gib) < 8 * GI  # not even the default request
    docs = (ROOT / "docs/DEPLOYMENT.md").read_text()
    values = (ROOT / "deploy/helm/values/eks.yaml").read_text()
    assert f"diskSize >= {eks.chart_disk_gib}" in values
    for shape in NODE_SHAPES:
        assert re.search(rf"\|\s*{re.escape(shape.name)}\s*\|.*\|\s*{shape.chart_disk_gib} GiB", docs), shape.name


def test_the_node_shapes_table_is_the_docs_table():
    """docs/DEPLOYMENT.md's sizing table carries the allocatable figures computed above."""
    docs = (ROOT / "docs/DEPLOYMENT.md").read_text()
    for shape in NODE_SHAPES:
        row = next(line for line in docs.splitlines() if line.startswith(f"| {shape.name} |"))
        assert f"{shape.cpu_m / 1000:.2f}" in row and f"{shape.memory / GI:.1f}" in row, (shape.name, row)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_gpu_taints_tolerated(rendered, variant):
    """nvidia.com/gpu (EKS, GKE, GPU Operator) and AKS's documented sku=gpu:NoSchedule."""
    tolerations = _triton(rendered[variant])["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in tolerations
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in tolerations)


# --- Overload sheds load, it does not kill pods (issue 27 item 5) ---


def _probe_timeout(probe: dict) -> float:
    command = probe["exec"]["command"]
    [flag] = [a for a in command if a.startswith("--timeout=")]
    return float(flag.split("=", 1)[1])


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_overload_sheds_load_not_pods(rendered, variant):
    """The probe waits longer than any request may queue, so a saturated Triton answers
    "busy" (exit 0, docker/probe.py) before the probe gives up; the kubelet waits longer than
    the probe; liveness restarts only a pod failing for minutes, much later than readiness
    takes a pod out of the Service."""
    container = _triton(rendered[variant])["spec"]["template"]["spec"]["containers"][0]
    queue_s = settings.QUEUE_TIMEOUT_US / 1e6
    for name in ("readinessProbe", "livenessProbe"):
        probe = container[name]
        assert _probe_timeout(probe) > queue_s, f"{name}: a full queue would read as a failure"
        assert probe["timeoutSeconds"] > _probe_timeout(probe)
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    budget = lambda p: p["periodSeconds"] * p["failureThreshold"]  # noqa: E731
    assert budget(readiness) >= 3 * readiness["periodSeconds"]  # one slow answer is not unready
    assert budget(liveness) >= 120 and budget(liveness) >= 4 * budget(readiness)


def test_probe_timeouts_checked_at_render():
    """A kubelet timeout at or below the probe's own fails the render, naming the field."""
    script = (
        "import sys; sys.path.insert(0, 'deploy'); import validate\n"
        "validate.render({'probes': {'liveness': {'timeoutSeconds': 8}}})"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "probes.liveness.timeoutSeconds" in proc.stderr


# --- Rollouts, drains and connection recycling (items 6, 8, 9) ---


@pytest.mark.parametrize("variant", ["proxy", "proxy-rest"])
def test_proxy_waits_for_endpoint_removal(rendered, variant):
    """The proxy pauses like Triton before it stops listening, inside the grace period."""
    pod = _triton(rendered[variant])["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    for name in ("triton", "proxy"):
        assert containers[name]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(settings.PRESTOP_SLEEP_S)]
    assert pod["terminationGracePeriodSeconds"] > settings.PRESTOP_SLEEP_S + settings.EXIT_TIMEOUT_S


def _flag(args: list[str], name: str) -> int:
    [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return int(value)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_grpc_connections_are_recycled(rendered, variant):
    """Triton sends GOAWAY after a connection's max age (grpc-go/grpc-java then reconnect and
    re-resolve the headless Service), with a grace that covers a queued request's run."""
    args = _triton(rendered[variant])["spec"]["template"]["spec"]["containers"][0]["args"]
    age_ms = _flag(args, "grpc-max-connection-age")
    grace_ms = _flag(args, "grpc-max-connection-age-grace")
    assert 60_000 <= age_ms <= 600_000  # an added pod gets traffic within minutes
    assert grace_ms >= settings.QUEUE_TIMEOUT_US / 1000


def test_the_recycling_flags_exist_in_tritonserver_2_51():
    """The flags the chart passes are in the pinned release's own --help (the binary bundled in
    nvidia-pytriton is tritonserver 2.51): an unknown flag would stop every pod at start."""
    from local_triton.server import pytriton_root, server_environment

    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    proc = subprocess.run([str(binary), "--help"], env=server_environment(), capture_output=True, text=True, timeout=60)
    text = proc.stdout + proc.stderr  # the usage goes to stderr
    assert "--grpc-port" in text  # the help was printed at all
    for flag in ("--grpc-max-connection-age ", "--grpc-max-connection-age-grace "):
        assert flag in text


@pytest.mark.parametrize("variant", ["default", "monitoring", "eks"])
def test_drains_are_not_blocked_by_pods_that_serve_nothing(rendered, variant):
    """A pod still building engines (unready for up to 30 min) may be evicted: EKS managed
    node-group upgrades give up after 15 min of blocked evictions."""
    pdb = _one(rendered[variant], "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pod_annotations_roll_the_pods():
    """podAnnotations (e.g. the model hash) land on the pod template: a change rolls the pods."""
    script = (
        "import sys, json; sys.path.insert(0, 'deploy'); import validate\n"
        "objs = validate.render({'podAnnotations': {'bge-reranker/model-hash': 'abc123'}, "
        "'podLabels': {'team': 'search'}})\n"
        "[d] = [o for o in objs if o['kind'] == 'Deployment']\n"
        "print(json.dumps(d['spec']['template']['metadata']))"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    metadata = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metadata["annotations"]["bge-reranker/model-hash"] == "abc123"
    assert metadata["labels"]["team"] == "search"


# --- Per-cloud files (item 4 of "What to build") ---


def test_cloud_files(rendered):
    gke = _triton(rendered["gke"])["spec"]["template"]["spec"]
    autopilot = _triton(rendered["gke-autopilot"])["spec"]["template"]["spec"]
    # Autopilot provisions the GPU node from the accelerator selector.
    assert autopilot["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert gke["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    for variant, annotation in (
        ("gke", "iam.gke.io/gcp-service-account"),
        ("gke-autopilot", "iam.gke.io/gcp-service-account"),
        ("eks", "eks.amazonaws.com/role-arn"),
    ):
        account = _one(rendered[variant], "ServiceAccount")
        assert annotation in account["metadata"]["annotations"], variant
        pod = _triton(rendered[variant])["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
    for variant in ("gke", "gke-autopilot"):
        monitor = _one(rendered[variant], "PodMonitoring")
        labels = _triton(rendered[variant])["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Autopilot rewrites limits to the requests: the requests must carry the peak.
    resources = autopilot["containers"][0]["resources"]
    for key in ("cpu", "memory"):
        assert str(resources["requests"][key]) == str(resources["limits"][key]), key
    assert _bytes(resources["requests"]["memory"]) >= _bytes(
        _triton(rendered["default"])["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    )
    aks = _triton(rendered["aks"])["spec"]["template"]["spec"]
    assert any(v["name"] == "cloud-credentials" for v in aks["volumes"])  # Triton's own Azure credential file
    classes = {v: _one(rendered[v], "PersistentVolumeClaim")["spec"]["storageClassName"] for v in CLOUD_VARIANTS}
    assert classes == {
        "eks": "efs-sc",
        "gke": "standard-rwx",
        "gke-autopilot": "standard-rwx",
        "aks": "azurefile-csi-premium",
    }


def test_proxy_recycles_at_the_same_age(rendered):
    """With the proxy on, clients connect to nginx: its gRPC server closes connections after
    the same age Triton's flag uses (tests/test_probe_overload.py runs both for real)."""
    import yaml

    from export.proxy_config import ProxySpec

    values = yaml.safe_load((ROOT / "deploy/helm/bge-reranker/values.yaml").read_text())
    assert values["triton"]["grpcMaxConnectionAgeSeconds"] == ProxySpec().grpc_connection_age_s
    config = _one(rendered["proxy"], "ConfigMap")["data"]["nginx.conf"]
    grpc_server = config.split(f"listen {ProxySpec().grpc_port} http2;")[1].split("server {")[0]
    assert f"keepalive_time {ProxySpec().grpc_connection_age_s}s;" in grpc_server


def test_kserve_manifest_follows_the_chart(rendered):
    """The KServe InferenceService carries the same fixes: requests, tolerations, probes,
    connection recycling, and Triton's metrics announced for scraping."""
    import yaml

    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kserve/inferenceservice.yaml").read_text()) if d]
    [isvc] = [d for d in docs if d["kind"] == "InferenceService"]
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    chart = _triton(rendered["default"])["spec"]["template"]["spec"]
    chart_triton = chart["containers"][0]
    normalise = lambda r: {k: str(v) for k, v in r.items()}  # noqa: E731
    for kind in ("requests", "limits"):
        assert normalise(container["resources"][kind]) == normalise(chart_triton["resources"][kind])
    assert predictor["tolerations"] == chart["tolerations"]
    for name in ("readinessProbe", "livenessProbe"):
        ours, theirs = container[name], chart_triton[name]
        assert {k: v for k, v in ours.items() if k != "exec"} == {k: v for k, v in theirs.items() if k != "exec"}
        assert _probe_timeout(ours) == _probe_timeout(theirs)
    assert _flag(container["args"], "grpc-max-connection-age") == _flag(chart_triton["args"], "grpc-max-connection-age")
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["prometheus.kserve.io/port"] == "8002" and "--metrics-port=8002" in container["args"]


def test_adapter_rule_counts_like_with_like():
    """Numerator and denominator cover the same requests: the composing models' queue time of
    both ensembles over requests to both ensembles; the 0/0 floor is far below 1 request/s."""
    import yaml

    from reranker_client.contract import ENSEMBLE, WINDOW_ENSEMBLE

    rule = yaml.safe_load((ROOT / "deploy/prometheus-adapter-rules.yaml").read_text())["rules"]["custom"][0]
    numerator, denominator = rule["metricsQuery"].split(" / ")  # folded: one line
    ensembles = f"{ENSEMBLE}|{WINDOW_ENSEMBLE}"
    assert f'model!~"{ensembles}"' in numerator and "nv_inference_queue_duration_us" in numerator
    assert f'model=~"{ensembles}"' in denominator and "nv_inference_request_success" in denominator
    [floor] = re.findall(r",\s*([0-9.e-]+)\)\s*$", denominator.strip())
    assert float(floor) <= 0.01


def test_dashboard_filters_by_namespace_and_pod():
    """Every query of the Grafana dashboard is scoped by the namespace and pod variables (one
    release among many in a shared Prometheus), and no query pins one model name: the cross
    encoders are one model per length class."""
    import json

    dashboard = json.loads((ROOT / "deploy/grafana/reranker-dashboard.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"namespace", "pod", "model"} <= variables
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            selectors = re.findall(r"\b(?:nv|reranker)_[a-z0-9_]+(\{[^}]*\})?", expr)
            assert selectors and all('namespace=~"$namespace"' in s and 'pod=~"$pod"' in s for s in selectors), expr
            assert 'model="' not in expr, expr


@pytest.mark.parametrize("variant", ["rest", "proxy-rest"])
def test_rest_door_survives_drains_and_zone_loss(rendered, variant):
    """The REST Deployment, the public door when rest.exclusive: spread over nodes and zones, a
    PDB that keeps all but one up, and (rest.yaml) a CPU HPA that owns its replica count."""
    objects = rendered[variant]
    rest = _one(objects, "Deployment", "rr-bge-reranker-rest")
    labels = rest["spec"]["template"]["metadata"]["labels"]
    spread = rest["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)
    pdb = _one(objects, "PodDisruptionBudget", "rr-bge-reranker-rest")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() and pdb["spec"]["maxUnavailable"] == 1
    triton_pdb = _one(objects, "PodDisruptionBudget", "rr-bge-reranker")
    assert not triton_pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"].endswith("-rest")]
    if variant == "rest":
        [hpa] = hpas
        assert hpa["spec"]["scaleTargetRef"]["name"] == "rr-bge-reranker-rest" and "replicas" not in rest["spec"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    else:
        assert not hpas and rest["spec"]["replicas"] == 2


def test_alert_rules(rendered):
    """monitoring.yaml: a PrometheusRule with the alerts docs/DEPLOYMENT.md's runbook covers,
    scoped to this release's namespace and pods (every shipped query parses: deploy/validate.py)."""
    rule = _one(rendered["monitoring"], "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "RerankerQueueTimeHigh",
        "RerankerRequestsFailing",
        "RerankerPodsRestarting",
        "RerankerPodsNotReady",
        "RerankerCertificateFailing",
        "RerankerEngineNotTaken",
    }
    for alert in alerts.values():
        assert 'namespace="search"' in alert["expr"]
    # Not ready for longer than the startup budget (a first engine build is not an incident).
    startup = _triton(rendered["monitoring"])["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert (
        int(alerts["RerankerPodsNotReady"]["for"].rstrip("m")) * 60
        > startup["periodSeconds"] * startup["failureThreshold"]
    )
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    runbook = (ROOT / "docs/DEPLOYMENT.md").read_text()
    assert all(f"`{name}`" in runbook for name in alerts)
    assert not [o for o in rendered["default"] if o["kind"] == "PrometheusRule"]


def test_promql_check_refuses_a_broken_query():
    script = (
        "import sys; sys.path.insert(0, 'deploy'); import validate\n"
        "print(validate.check_promql([('x', 'sum(rate(x[5m])')]))\n"
        "print(validate.check_promql([('y', 'sum(rate(x{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)')]))"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    broken, fine = proc.stdout.strip().splitlines()
    assert "promql (x)" in broken and fine == "[]", proc.stdout + proc.stderr


def test_edge_routes(rendered):
    """gateway.yaml: an HTTPRoute to the REST Service and a GRPCRoute to Triton's Service on an
    existing Gateway, on separate hostnames (the Gateway API forbids sharing one between the two
    kinds on a listener); none unless asked; REST-only when rest.exclusive. Reachability from the
    Gateway's namespace: tests/test_deploy_network.py."""
    objects = rendered["gateway"]
    http = _one(objects, "HTTPRoute")
    grpc = _one(objects, "GRPCRoute")
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    [http_backend] = http["spec"]["rules"][0]["backendRefs"]
    [grpc_backend] = grpc["spec"]["rules"][0]["backendRefs"]
    assert http_backend["port"] in [p["port"] for p in services[http_backend["name"]]["spec"]["ports"]]
    grpc_ports = {p["port"]: p for p in services[grpc_backend["name"]]["spec"]["ports"]}
    assert grpc_ports[grpc_backend["port"]].get("appProtocol") == "grpc"
    assert not set(http["spec"]["hostnames"]) & set(grpc["spec"]["hostnames"])
    assert http["spec"]["parentRefs"] == grpc["spec"]["parentRefs"] and http["spec"]["parentRefs"]
    for variant in ("default", "rest", "proxy-rest"):
        assert not [o for o in rendered[variant] if o["kind"] in ("HTTPRoute", "GRPCRoute")]
    script = (
        "import sys; sys.path.insert(0, 'deploy'); import validate\n"
        "objs = validate.render({'gateway': {'enabled': True, 'parentRefs': [{'name': 'g'}]},"
        " 'rest': {'enabled': True, 'exclusive': True}})\n"
        "print(sorted(o['kind'] for o in objs if o['kind'].endswith('Route')))"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "['HTTPRoute']", proc.stdout + proc.stderr


def _render_routes(values: dict) -> subprocess.CompletedProcess:
    script = (
        "import sys; sys.path.insert(0, 'deploy'); import validate\n"
        f"objs = validate.render({values!r})\n"
        "print(sorted(o['kind'] for o in objs if o['kind'].endswith('Route')))"
    )
    return subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_gateway_never_routes_to_triton_without_the_proxy():
    """A GRPCRoute to Triton's own gRPC port makes every RPC of inference.GRPCInferenceService
    public (SystemSharedMemoryRegister, LogSettings, repository control, internal models): only
    the proxy limits it to export/proxy_config.py GRPC_METHODS. gateway.enabled without the proxy
    does not render, and the message names the values; with the proxy it renders."""
    gateway = {"enabled": True, "parentRefs": [{"name": "g"}]}
    refused = _render_routes({"gateway": gateway, "proxy": {"enabled": False}})
    assert refused.returncode != 0
    assert "gateway.enabled needs proxy.enabled=true" in refused.stderr, refused.stderr[-2000:]
    fine = _render_routes({"gateway": gateway, "proxy": {"enabled": True}})
    assert fine.returncode == 0 and fine.stdout.strip() == "['GRPCRoute']", fine.stdout + fine.stderr[-2000:]


def test_the_self_certification_verdict_is_scraped_and_alerted_on(rendered):
    """docker/self_certify.py exports its verdict on --certify-metrics-port: the port is a named
    containerPort and Service port, the ServiceMonitor scrapes it, and the rules alert on a failing
    certificate and on TensorRT not taking a model, with metric names the exporter really writes.
    (Who may reach the port: tests/test_deploy_network.py.)"""
    spec = importlib.util.spec_from_file_location("self_certify_for_chart", ROOT / "docker" / "self_certify.py")
    assert spec is not None and spec.loader is not None
    self_certify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(self_certify)
    failed = {"device": "NVIDIA L4", "certificate": {"passed": False}, "passed": False, "ready": False}
    exporter = self_certify.metrics_text({**failed, "mode": "fail", "engines": {"cross_encoder": {"taken": False}}})
    objects = rendered["monitoring"]
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    [triton] = [c for c in pod["containers"] if c["name"] == "triton"]
    [flag] = [a for a in triton["args"] if a.startswith("--certify-metrics-port=")]
    port = int(flag.split("=", 1)[1])
    assert {"name": "certify", "containerPort": port, "protocol": "TCP"} in triton["ports"]
    service = _one(objects, "Service", "rr-bge-reranker")
    assert {"name": "certify", "port": port, "targetPort": "certify", "protocol": "TCP"} in service["spec"]["ports"]
    endpoints = _one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["metrics", "certify"]
    rules = {r["alert"]: r for r in _one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]}
    for alert, metric in (
        ("RerankerCertificateFailing", "reranker_selfcert_pass"),
        ("RerankerEngineNotTaken", "reranker_tensorrt_engine_taken"),
    ):
        assert rules[alert]["expr"].startswith(metric + "{") and rules[alert]["expr"].endswith("== 0")
        # What a failing pod exports makes the expression true.
        assert f"# TYPE {metric} gauge" in exporter and rules[alert]["for"]
        assert [line for line in exporter.splitlines() if line.startswith(metric) and line.endswith(" 0")]
    # GKE's managed Prometheus scrapes the same two ports through PodMonitoring.
    script = (
        "import sys; sys.path.insert(0, 'deploy'); import validate\n"
        "objs = validate.render({'podMonitoring': {'enabled': True}})\n"
        "print([e['port'] for o in objs if o['kind'] == 'PodMonitoring' for e in o['spec']['endpoints']])"
    )
    proc = subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "['metrics', 'certify']", proc.stdout + proc.stderr[-2000:]
    # A `uri` repository self-certifies too (issue 25: no silent fallback on object storage).
    eks = _one(rendered["eks"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "certify" in [p["name"] for p in eks["ports"]]


# CPU-only nodes the CPU profile (deploy/helm/values/cpu.yaml, docs/CPU.md) names: 8 vCPU, 32 GiB.
CPU_NODE_SHAPES = [
    NodeShape("m5.2xlarge", "eks", "none", 8, 32, 58, 20, 60),
    NodeShape("n2-standard-8", "gke", "none", 8, 32, 110, 100, 100),
    NodeShape("Standard_D8s_v5", "aks", "none", 8, 32, 30, 128, 128),
]


@pytest.mark.parametrize("shape", CPU_NODE_SHAPES, ids=lambda s: s.name)
def test_the_cpu_pod_fits_common_8_vcpu_nodes(rendered, shape):
    """The CPU profile's pod (Triton at request = limit, plus the front proxy) fits an 8-vCPU,
    32 GiB node's allocatable CPU and memory beside the daemonsets. At 8 CPUs for Triton alone
    (2 instances x 3 threads + 2) it did not: allocatable is ~7.9 cores, so the pod stayed Pending."""
    cpu, memory, _ = _pod_requests(rendered["cpu"])
    assert cpu + DAEMONSET_CPU_M <= shape.cpu_m, f"cpu on {shape.name}: {cpu}m + daemonsets > {shape.cpu_m:.0f}m"
    assert memory + DAEMONSET_MEMORY <= shape.memory, (
        f"cpu on {shape.name}: {memory / GI:.1f} GiB + daemonsets > {shape.memory / GI:.1f} GiB"
    )


# GPU Feature Discovery's nvidia.com/gpu.product for the GPUs of the EKS GPU instances the docs name.
GFD_PRODUCT = {"A10G": "NVIDIA-A10G", "L4": "NVIDIA-L4"}


def test_eks_pods_may_run_on_g5_and_g6(rendered):
    """eks.yaml pins the pods to prebuild.gpuTypes (a required nodeAffinity ORing their
    selectors): with only a10g listed, pods on a g6 (L4) node group stayed Pending. Both the A10G
    and the L4 shapes of the sizing table are admitted, each with a prebuild Job of its own."""
    objects = rendered["eks"]
    pod = _triton(objects)["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    admitted = {
        v for t in terms for e in t["matchExpressions"] if e["key"] == "nvidia.com/gpu.product" for v in e["values"]
    }
    jobs = {o["metadata"]["name"] for o in objects if o["kind"] == "Job"}
    for shape in [s for s in NODE_SHAPES + LONG_CONTEXT_NODE_SHAPES if s.cloud == "eks" and s.gpu in GFD_PRODUCT]:
        assert GFD_PRODUCT[shape.gpu] in admitted, f"eks.yaml: pods on {shape.name} ({shape.gpu}) stay Pending"
    assert {"rr-bge-reranker-prebuild-a10g", "rr-bge-reranker-prebuild-l4"} <= jobs, jobs


def _render_layered(*files: str) -> subprocess.CompletedProcess:
    """validate.render of values files layered as `helm -f a -f b` does (maps merged key by key)."""
    script = (
        "import sys, yaml; sys.path.insert(0, 'deploy'); import validate\n"
        "def merge(a, b):\n"
        "    out = dict(a)\n"
        "    for k, v in b.items():\n"
        "        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v\n"
        "    return out\n"
        "values = {}\n"
        f"for name in {list(files)!r}:\n"
        "    values = merge(values, yaml.safe_load(open(f'deploy/helm/values/{name}.yaml')) or {})\n"
        "print(len(validate.render(values)))"
    )
    return subprocess.run([str(DEPLOY_PYTHON), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_values_files_of_two_clouds_do_not_render_together():
    """shared-cache.yaml is GKE-only (gs:// + GKE Workload Identity): layered on eks.yaml the
    pods would carry an IRSA role and a gs:// repository they can never read. The chart refuses,
    and says why; cloud-neutral files still layer on a cloud file."""
    refused = _render_layered("eks", "shared-cache")
    assert refused.returncode != 0
    assert "gs:// (GCS) but the pods have an AWS identity" in refused.stderr, refused.stderr[-2000:]
    both = _render_layered("gke", "object-storage")  # s3:// with a GKE identity
    assert both.returncode != 0 and "s3:// but the pods have a GKE identity" in both.stderr, both.stderr[-2000:]
    fine = _render_layered("eks", "long-context", "monitoring")
    assert fine.returncode == 0, fine.stderr[-2000:]
