"""A small Kubernetes NetworkPolicy evaluator for rendered manifests (no cluster, no CNI).

It decides whether a connection from one endpoint to another on a port and protocol is allowed
by the networking.k8s.io/v1 NetworkPolicies given, following the API's semantics
(https://kubernetes.io/docs/concepts/services-networking/network-policies/):
- a pod selected by no policy of a direction (Ingress/Egress) is open in that direction;
- a selected pod admits what the union of its policies' rules admits;
- a rule's `from`/`to` peers: podSelector alone = pods of the policy's namespace; namespaceSelector
  alone = every pod of the matching namespaces; both in one peer = AND; ipBlock = addresses (cidr
  minus except); an absent or empty peer list = everyone;
- a rule's ports: absent or empty = every port; a named port resolves on the destination pod;
  endPort makes a range; protocol defaults to TCP;
- policyTypes absent: Ingress, plus Egress when the policy has egress rules.
A connection needs both the source's egress and the destination's ingress.

Services are resolved the way kube-proxy and DNS do: a ClusterIP Service's port forwards to its
targetPort on every selected pod; a headless Service's name resolves to the pods' IPs, so the
caller's own port number is what reaches the pod. Policies see the pod and port after that.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels + the ports it listens on beyond loopback) or an address
    outside the cluster (namespace None)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    # (name or "", number, protocol) of every port it accepts connections on
    ports: tuple[tuple[str, int, str], ...] = ()

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def listens(self, port: int, protocol: str = "TCP") -> bool:
        return not self.is_pod or any(p == port and proto == protocol for _, p, proto in self.ports)

    def named_port(self, name: str, protocol: str) -> int | None:
        for port_name, number, proto in self.ports:
            if port_name == name and proto == protocol:
                return number
        return None


def pod(name, ip, namespace, labels=None, ports=()) -> Endpoint:
    return Endpoint(name, ip, namespace, tuple(sorted((labels or {}).items())), tuple(ports))


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector; an empty one matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op}")
    return True


@dataclass
class Cluster:
    policies: list[dict]
    # namespace name -> its labels (kubernetes.io/metadata.name is added automatically)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)

    def _namespace_labels(self, name: str) -> dict[str, str]:
        return {**self.namespaces.get(name, {}), "kubernetes.io/metadata.name": name}

    @staticmethod
    def _types(policy: dict) -> list[str]:
        spec = policy["spec"]
        if "policyTypes" in spec:
            return spec["policyTypes"]
        return ["Ingress"] + (["Egress"] if "egress" in spec else [])

    def _selecting(self, endpoint: Endpoint, direction: str) -> list[dict]:
        if not endpoint.is_pod:
            return []
        return [
            p
            for p in self.policies
            if p["metadata"].get("namespace") == endpoint.namespace
            and direction in self._types(p)
            and selector_matches(p["spec"].get("podSelector"), endpoint.label_dict())
        ]

    def _peer_matches(self, peer: dict, policy_namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            address = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            network = ipaddress.ip_network(block["cidr"])
            if address.version != network.version or address not in network:
                return False
            return not any(
                address in ipaddress.ip_network(e)
                for e in block.get("except", [])
                if ipaddress.ip_network(e).version == address.version
            )
        if not other.is_pod:
            return False  # pod and namespace selectors select pods only
        if "namespaceSelector" in peer:
            if not selector_matches(peer["namespaceSelector"], self._namespace_labels(other.namespace)):
                return False
        elif other.namespace != policy_namespace:
            return False
        return "podSelector" not in peer or selector_matches(peer["podSelector"], other.label_dict())

    @staticmethod
    def _port_matches(rule_ports: list[dict] | None, destination: Endpoint, port: int, protocol: str) -> bool:
        if not rule_ports:
            return True
        for entry in rule_ports:
            if entry.get("protocol", "TCP") != protocol:
                continue
            wanted = entry.get("port")
            if wanted is None:
                return True
            if isinstance(wanted, str):
                wanted = destination.named_port(wanted, protocol) if destination.is_pod else None
                if wanted is None:
                    continue
            if wanted <= port <= entry.get("endPort", wanted):
                return True
        return False

    def _admitted(self, policies, rules_key, peers_key, other, destination, port, protocol) -> bool:
        if not policies:
            return True
        for policy in policies:
            for rule in policy["spec"].get(rules_key) or []:
                peers = rule.get(peers_key) or []
                if peers and not any(self._peer_matches(p, policy["metadata"]["namespace"], other) for p in peers):
                    continue
                if self._port_matches(rule.get("ports"), destination, port, protocol):
                    return True
        return False

    def allowed(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        egress = self._admitted(
            self._selecting(source, "Egress"), "egress", "to", destination, destination, port, protocol
        )
        ingress = self._admitted(
            self._selecting(destination, "Ingress"), "ingress", "from", source, destination, port, protocol
        )
        return egress and ingress


def resolve(address: str, caller_namespace: str, services: list[dict], pods: list[Endpoint]):
    """`[dns:///]host:port` as a caller in caller_namespace dials it -> [(pod, pod port)].
    Raises LookupError when the host is no Service of the manifests or the port is not one of
    its ports."""
    address = address.removeprefix("dns:///").removeprefix("http://").removeprefix("https://")
    host, port_text = address.rsplit(":", 1)
    port = int(port_text.split("/")[0])
    parts = host.split(".")
    name, namespace = parts[0], parts[1] if len(parts) > 1 else caller_namespace
    matches = [s for s in services if s["metadata"]["name"] == name and s["metadata"]["namespace"] == namespace]
    if not matches:
        raise LookupError(f"no Service {namespace}/{name} for {address}")
    [service] = matches
    spec = service["spec"]
    selected = [
        p
        for p in pods
        if p.namespace == namespace
        and spec.get("selector")
        and selector_matches({"matchLabels": spec["selector"]}, p.label_dict())
    ]
    [entry] = [e for e in spec["ports"] if e["port"] == port] or [None]
    if spec.get("clusterIP") == "None":
        # DNS answers the pods' IPs: the caller's port goes straight to the pod.
        return [(p, port) for p in selected]
    if entry is None:
        raise LookupError(f"Service {namespace}/{name} has no port {port}")
    target = entry.get("targetPort", port)
    protocol = entry.get("protocol", "TCP")
    out = []
    for p in selected:
        number = p.named_port(target, protocol) if isinstance(target, str) else target
        if number is not None:
            out.append((p, number))
    return out
