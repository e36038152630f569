"""NetworkPolicy reachability of the rendered chart, for every values file (tests/netpol.py
evaluates the policies; no cluster needed).

Each variant's world: the rendered Triton, REST and `helm test` pods (listening on the ports
their containers bind beyond loopback), a client pod in the release namespace and one in each
configured client namespace, a Prometheus pod in networkPolicy.prometheusNamespace, a stranger
in another namespace, kube-dns, the cloud metadata servers and an object store on the internet.
Every address the chart hands a caller (the helm test's --url, REST_TRITON_URL, the Services
clients are told to use, the scrape ports) is resolved through the rendered Services and must
reach a listening port that the policies admit; every other flow into or out of a chart pod
must be denied."""

from __future__ import annotations

import itertools

import pytest

from tests.netpol import Cluster, Endpoint, pod, resolve, selector_matches
from tests.test_deploy import VARIANTS

NAMESPACE = "search"  # deploy/validate.py renders every variant into it
NETWORK_VARIANTS = [
    *VARIANTS,
    "proxy",
    "rest",
    "proxy-rest",
    "gateway",
    "prebuild",
    "eks",
    "gke",
    "gke-autopilot",
    "aks",
]

KUBE_DNS = pod(
    "kube-dns", "10.0.0.10", "kube-system", {"k8s-app": "kube-dns"}, [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
)
OBJECT_STORE = Endpoint("object-store", "52.216.8.1")  # an S3/GCS/Blob address on the internet
GKE_METADATA = Endpoint("gke-metadata", "169.254.169.254")
GKE_METADATA_988 = Endpoint("gke-metadata-252", "169.254.169.252")
EKS_POD_IDENTITY = Endpoint("eks-pod-identity", "169.254.170.23")
EXTERNAL_PORTS = {
    OBJECT_STORE: [443, 80],
    GKE_METADATA: [80, 988, 443],
    GKE_METADATA_988: [988],
    EKS_POD_IDENTITY: [80],
}


def _objects(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def _bound_to_loopback(container: dict) -> set[int]:
    """Ports a container declares but binds to 127.0.0.1 (tritonserver --http-address etc.)."""
    args = container.get("args", []) + container.get("command", [])
    flags = dict(a[2:].split("=", 1) for a in args if isinstance(a, str) and a.startswith("--") and "=" in a)
    out = set()
    for kind in ("http", "grpc", "metrics"):
        if flags.get(f"{kind}-address") == "127.0.0.1" and f"{kind}-port" in flags:
            out.add(int(flags[f"{kind}-port"]))
    return out


def _pod_from(name: str, ip: str, template: dict) -> Endpoint:
    ports = []
    for container in template["spec"]["containers"]:
        loopback = _bound_to_loopback(container)
        ports += [
            (p.get("name", ""), p["containerPort"], p.get("protocol", "TCP"))
            for p in container.get("ports", [])
            if p["containerPort"] not in loopback
        ]
    return pod(name, ip, NAMESPACE, template["metadata"]["labels"], ports)


class World:
    def __init__(self, objects: list[dict]):
        self.objects = objects
        self.policies = _objects(objects, "NetworkPolicy")
        self.services = _objects(objects, "Service")
        deployments = {d["metadata"]["name"]: d for d in _objects(objects, "Deployment")}
        self.triton_deployment = deployments["rr-bge-reranker"]
        self.triton = [
            _pod_from(f"triton-{i}", f"10.1.0.{i + 1}", self.triton_deployment["spec"]["template"]) for i in range(2)
        ]
        self.rest_deployment = deployments.get("rr-bge-reranker-rest")
        self.rest = (
            [_pod_from("rest-0", "10.1.1.1", self.rest_deployment["spec"]["template"])] if self.rest_deployment else []
        )
        [test_pod] = _objects(objects, "Pod")
        self.test_pod_object = test_pod
        self.test = _pod_from("helm-test", "10.1.2.1", test_pod)
        # The engine prebuild Jobs' pods (issue 27 item 6): their Triton binds loopback only.
        self.prebuild = [
            _pod_from(f"prebuild-{i}", f"10.1.4.{i + 1}", job["spec"]["template"])
            for i, job in enumerate(_objects(objects, "Job"))
        ]
        self.values_policy = next((p for p in self.policies if p["metadata"]["name"] == "rr-bge-reranker"), None)
        self.prometheus_namespace = self._prometheus_namespace()
        self.client = pod("client", "10.1.3.1", NAMESPACE, {"app": "search-frontend"})
        self.client_namespaces = self._client_namespaces()
        self.remote_clients = [
            pod(f"client-{ns}", f"10.2.{i}.1", ns, {"app": "caller"}) for i, ns in enumerate(self.client_namespaces)
        ]
        self.routes = [o for o in objects if o["kind"] in ("HTTPRoute", "GRPCRoute")]
        if self.routes:  # the Gateway's data plane, in the namespace the policies admit
            self.remote_clients.append(pod("gateway", "10.5.0.1", "gateway-system", {"app": "envoy"}))
        self.prometheus = pod(
            "prometheus", "10.3.0.1", self.prometheus_namespace, {"app.kubernetes.io/name": "prometheus"}
        )
        self.stranger = pod("stranger", "10.4.0.1", "elsewhere", {"app": "search-frontend"})
        self.chart_pods = [*self.triton, *self.rest, self.test, *self.prebuild]
        self.all_pods = [
            *self.chart_pods,
            self.client,
            *self.remote_clients,
            self.prometheus,
            self.stranger,
            KUBE_DNS,
        ]
        self.cluster = Cluster(self.policies)

    def _prometheus_namespace(self) -> str:
        """The namespace the metrics rule (Triton's :8002) admits."""
        metrics = int(self.triton_deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
        for policy in self.policies:
            for rule in policy["spec"].get("ingress", []):
                if not any(p.get("port") == metrics for p in rule.get("ports", [])):
                    continue
                for peer in rule.get("from", []):
                    name = (
                        (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    )
                    if name:
                        return name
        return "monitoring"

    def _client_namespaces(self) -> list[str]:
        names = set()
        for policy in self.policies:
            for rule in policy["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    for expr in (peer.get("namespaceSelector") or {}).get("matchExpressions", []):
                        names.update(expr.get("values", []))
        return sorted(names)

    def dial(self, source: Endpoint, address: str) -> list[tuple[Endpoint, int]]:
        """The pods and ports `address` reaches from source; fails the test when it reaches none,
        or a port nothing listens on, or a flow the policies deny."""
        targets = resolve(address, source.namespace, self.services, self.all_pods)
        assert targets, f"{source.name} -> {address}: the Service selects no pod"
        for destination, port in targets:
            assert destination.listens(port), (
                f"{source.name} -> {address}: nothing listens on {destination.name}:{port}"
            )
            assert self.cluster.allowed(source, destination, port), (
                f"{source.name} -> {address} ({destination.name}:{port}) denied by the NetworkPolicies"
            )
        return targets

    def direct(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"):
        assert destination.listens(port, protocol), f"nothing listens on {destination.name}:{port}"
        assert self.cluster.allowed(source, destination, port, protocol), (
            f"{source.name} -> {destination.name}:{port}/{protocol} denied by the NetworkPolicies"
        )
        return [(destination, port, protocol)]


def _env(deployment: dict) -> dict[str, str]:
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "rest"]
    return {e["name"]: e["value"] for e in container["env"]}


def _intended_flows(world: World, variant_values: dict) -> set[tuple[str, str, int, str]]:
    """Every flow the chart means to allow, each checked to connect; returns them as
    (source, destination, port, protocol)."""
    flows: set[tuple[str, str, int, str]] = set()

    def add(source, targets):
        for target in targets:
            destination, port = target[0], target[1]
            protocol = target[2] if len(target) > 2 else "TCP"
            flows.add((source.name, destination.name, port, protocol))

    # helm test -> Triton (or the proxy), through the address the test pod is given.
    command = world.test_pod_object["spec"]["containers"][0].get("command", [])
    url = next((a.split("=", 1)[1] for a in command if a.startswith("--url=")), None)
    if url is not None:
        add(world.test, world.dial(world.test, url))
    else:  # the skip message: still the flow the verifier would use
        add(world.test, world.dial(world.test, "rr-bge-reranker:8001"))
    # REST -> Triton through REST_TRITON_URL.
    if world.rest_deployment:
        add(world.rest[0], world.dial(world.rest[0], _env(world.rest_deployment)["REST_TRITON_URL"]))
    # Prometheus -> every scrape port the pods announce. The policies know Prometheus by its
    # namespace: any pod there counts (kube-dns too, where that namespace is kube-system: AKS).
    scrapers = [p for p in world.all_pods if p.namespace == world.prometheus_namespace]
    for pods, deployment in ((world.triton, world.triton_deployment), (world.rest, world.rest_deployment)):
        if deployment:
            port = int(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
            for p, scraper in itertools.product(pods, scrapers):
                add(scraper, world.direct(scraper, p, port))
    # Prometheus -> the self-certification verdict (docker/self_certify.py), where the pods export it.
    certify = {
        port
        for c in world.triton_deployment["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
        if p["name"] == "certify"
        for port in [p["containerPort"]]
    }
    for p, scraper, port in itertools.product(world.triton, scrapers, certify):
        add(scraper, world.direct(scraper, p, port))
    # Clients -> the public door: the REST Service when it is the only door, else Triton's
    # Services (ClusterIP on 8000/8001, headless on the pods' own gRPC port) and REST's.
    rest_only = bool(variant_values.get("rest", {}).get("exclusive")) and world.rest_deployment
    callers = [world.client, *world.remote_clients]
    for caller in callers:
        if world.rest_deployment:
            add(caller, world.dial(caller, f"rr-bge-reranker-rest.{NAMESPACE}:8080"))
        if not rest_only:
            add(caller, world.dial(caller, f"rr-bge-reranker.{NAMESPACE}:8001"))
            add(caller, world.dial(caller, f"rr-bge-reranker.{NAMESPACE}:8000"))
            headless = [s for s in world.services if s["metadata"]["name"] == "rr-bge-reranker-headless"]
            if headless:
                [grpc] = [p for p in headless[0]["spec"]["ports"] if p["name"] == "grpc"]
                add(
                    caller,
                    world.dial(caller, f"dns:///rr-bge-reranker-headless.{NAMESPACE}.svc.cluster.local:{grpc['port']}"),
                )
    # The Gateway -> every route's backend.
    gateways = [c for c in world.remote_clients if c.name == "gateway"]
    for route, gateway in itertools.product(world.routes, gateways):
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                add(gateway, world.dial(gateway, f"{backend['name']}.{NAMESPACE}:{backend['port']}"))
    # Every chart pod resolves names.
    for source in world.chart_pods:
        for protocol in ("UDP", "TCP"):
            add(source, world.direct(source, KUBE_DNS, 53, protocol))
    # Triton and the prebuild Jobs (which load the same repository) -> object storage and the
    # identity endpoints, as configured. The Jobs need no other egress: the shared cache is a
    # volume, and they talk to their own Triton on loopback.
    model = variant_values.get("modelRepository", {})
    policy_values = variant_values.get("networkPolicy", {})
    identity = policy_values.get("workloadIdentity", "")
    if model.get("source") == "uri" or policy_values.get("allowEgress") or identity == "irsa":
        for p in [*world.triton, *world.prebuild]:
            add(p, world.direct(p, OBJECT_STORE, 443))
    if identity == "gke":
        for p in [*world.triton, *world.prebuild]:
            for endpoint, port in ((GKE_METADATA, 80), (GKE_METADATA, 988), (GKE_METADATA_988, 988)):
                add(p, world.direct(p, endpoint, port))
    if identity == "eks-pod-identity":
        for p in [*world.triton, *world.prebuild]:
            add(p, world.direct(p, EKS_POD_IDENTITY, 80))
    return flows


def _allowed_flows(world: World) -> set[tuple[str, str, int, str]]:
    """Every flow into or out of a chart pod that the policies admit (pods: the ports they
    listen on; addresses outside: the ports tried)."""
    out = set()
    chart = {p.name for p in world.chart_pods}
    targets = [(p, port, proto) for p in world.all_pods for _, port, proto in p.ports]
    targets += [(e, port, "TCP") for e, ports in EXTERNAL_PORTS.items() for port in ports]
    for source, (destination, port, protocol) in itertools.product(world.all_pods, targets):
        if source is destination or (source.name not in chart and destination.name not in chart):
            continue
        if world.cluster.allowed(source, destination, port, protocol):
            out.add((source.name, destination.name, port, protocol))
    return out


def _values(variant: str) -> dict:
    import yaml

    from tests.test_deploy import ROOT

    if variant == "default":
        return {}
    return yaml.safe_load((ROOT / "deploy/helm/values" / f"{variant}.yaml").read_text()) or {}


@pytest.mark.parametrize("variant", NETWORK_VARIANTS)
def test_reachability_matches_intent(rendered, variant):
    """helm test -> Triton, REST -> Triton, Prometheus -> metrics, clients -> the public door,
    DNS and the configured cloud endpoints: allowed and connected; nothing else."""
    world = World(rendered[variant])
    intended = _intended_flows(world, _values(variant))
    if not world.policies:
        return  # networkPolicy.enabled=false: connectivity checked above, nothing is denied
    allowed = _allowed_flows(world)
    assert allowed - intended == set(), f"{variant}: flows the chart admits but does not mean to"
    assert intended <= allowed


@pytest.mark.parametrize("variant", NETWORK_VARIANTS)
def test_helm_test_pod_is_not_a_triton_pod(rendered, variant):
    """The test pod carries no selector of the Deployment's Services, PDB, HPA or policy."""
    objects = rendered[variant]
    [test_pod] = _objects(objects, "Pod")
    labels = test_pod["metadata"]["labels"]
    selectors = [o["spec"]["selector"] for o in objects if o["kind"] == "Service"]
    selectors += [o["spec"]["selector"] for o in objects if o["kind"] == "PodDisruptionBudget"]
    for selector in selectors:
        matcher = selector if "matchLabels" in selector or "matchExpressions" in selector else {"matchLabels": selector}
        assert not selector_matches(matcher, labels), f"{variant}: the helm test pod matches {selector}"
    for policy in _objects(objects, "NetworkPolicy"):
        if policy["metadata"]["name"] != "rr-bge-reranker-test":
            assert not selector_matches(policy["spec"]["podSelector"], labels)
    deployment = next(d for d in _objects(objects, "Deployment") if d["metadata"]["name"] == "rr-bge-reranker")
    assert not selector_matches(deployment["spec"]["selector"], labels)
    # The deadline covers pulling the ~15 GB image on a node without it.
    assert test_pod["spec"]["activeDeadlineSeconds"] >= 600
    assert test_pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_evaluator_semantics():
    """The evaluator itself: what it must deny and allow, so the checks above can fail."""
    a = pod("a", "10.0.0.1", "ns1", {"app": "a"}, [("http", 80, "TCP")])
    b = pod("b", "10.0.0.2", "ns1", {"app": "b"}, [("web", 8080, "TCP")])
    c = pod("c", "10.0.1.1", "ns2", {"app": "b"})
    outside = Endpoint("out", "8.8.8.8")
    assert Cluster([]).allowed(a, b, 8080)  # no policy: open
    deny_b = {
        "metadata": {"namespace": "ns1"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]},
    }
    assert not Cluster([deny_b]).allowed(a, b, 8080)
    named = {
        "metadata": {"namespace": "ns1"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "web"}]}],
        },
    }
    assert Cluster([named]).allowed(a, b, 8080) and not Cluster([named]).allowed(a, b, 8081)
    assert not Cluster([named]).allowed(c, b, 8080)  # podSelector alone: the policy's namespace only
    both = {
        "metadata": {"namespace": "ns1"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns2"}},
                            "podSelector": {"matchLabels": {"app": "a"}},
                        }
                    ]
                }
            ],
        },
    }
    assert not Cluster([both]).allowed(c, b, 8080)  # namespace matches, pod does not: AND
    egress = {
        "metadata": {"namespace": "ns1"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "8.0.0.0/8", "except": ["8.8.8.0/24"]}}], "ports": [{"port": 443}]}
            ],
        },
    }
    assert not Cluster([egress]).allowed(a, outside, 443)  # in the except range
    assert Cluster([egress]).allowed(a, Endpoint("o2", "8.1.1.1"), 443)
    assert not Cluster([egress]).allowed(a, Endpoint("o2", "8.1.1.1"), 80)
    assert not Cluster([egress]).allowed(a, b, 443)  # ipBlock only: not this pod
    assert Cluster([egress]).allowed(b, a, 80)  # the policy selects a's egress only
    headless = {
        "metadata": {"name": "h", "namespace": "ns1"},
        "spec": {"clusterIP": "None", "selector": {"app": "b"}, "ports": [{"port": 1, "targetPort": "web"}]},
    }
    assert resolve("dns:///h.ns1.svc.cluster.local:8080", "ns1", [headless], [a, b]) == [(b, 8080)]
    cluster_ip = {
        "metadata": {"name": "s", "namespace": "ns1"},
        "spec": {"selector": {"app": "b"}, "ports": [{"port": 1, "targetPort": "web"}]},
    }
    assert resolve("s:1", "ns1", [cluster_ip], [a, b]) == [(b, 8080)]
    with pytest.raises(LookupError):
        resolve("s:2", "ns1", [cluster_ip], [a, b])
