"""Egress of the namespace that holds patient images: DNS, the Pushgateway, S3 (and the Kubernetes API the
Argo executor reports through), nothing else (issue 15, item 7). Checked offline on both kustomize builds
with a small evaluator of NetworkPolicy semantics (allowed when no Egress policy selects the pod, else
when some rule of a selecting policy matches the destination and port)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "mammo"
WORKFLOW_POD = {"app.kubernetes.io/part-of": "mammo"}  # the podMetadata of every workflow pod


@pytest.fixture(scope="module")
def policies(kustomize_builds) -> dict[str, list[dict]]:
    return {overlay: [d for d in docs if d["kind"] == "NetworkPolicy"] for overlay, docs in kustomize_builds.items()}


@dataclass(frozen=True)
class Destination:
    port: int
    protocol: str = "TCP"
    namespace: str | None = None  # None: outside the cluster
    labels: dict = field(default_factory=dict)
    ip: str = "10.244.0.10"


KUBE_SYSTEM = {"kubernetes.io/metadata.name": "kube-system"}


def selects(selector: dict, labels: dict) -> bool:
    expressions = selector.get("matchExpressions", [])
    assert not expressions, "the evaluator handles matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def peer_matches(peer: dict, to: Destination) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(to.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if to.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": to.namespace}
        if not selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif to.namespace != NAMESPACE:
        return False
    return selects(peer.get("podSelector", {}), to.labels)


def port_matches(port: dict, to: Destination) -> bool:
    return port.get("protocol", "TCP") == to.protocol and (
        "port" not in port or port["port"] == to.port or (port["port"] <= to.port <= port.get("endPort", -1)))


def egress_allowed(policies: list[dict], pod: dict, to: Destination) -> bool:
    selecting = [p for p in policies if "Egress" in p["spec"].get("policyTypes", [])
                 and selects(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True
    return any((not rule.get("to") or any(peer_matches(peer, to) for peer in rule["to"]))
               and (not rule.get("ports") or any(port_matches(port, to) for port in rule["ports"]))
               for policy in selecting for rule in policy["spec"].get("egress", []))


DNS = Destination(53, "UDP", "kube-system", {"k8s-app": "kube-dns"})
PUSHGATEWAY = Destination(9091, "TCP", NAMESPACE, {"app.kubernetes.io/name": "pushgateway",
                                                     "app.kubernetes.io/part-of": "mammo"})
MINIO = Destination(9000, "TCP", NAMESPACE, {"app.kubernetes.io/name": "minio"})
AWS_S3 = Destination(443, ip="52.219.170.12")  # an s3.eu-central-1.amazonaws.com address
API_SERVER = Destination(6443, ip="172.18.0.2")  # where the kubernetes Service forwards to (kind)
FORBIDDEN = {
    "plain HTTP to the internet": Destination(80, ip="52.219.170.12"),
    "DNS to an outside resolver": Destination(53, "UDP", ip="8.8.8.8"),
    "SSH to the internet": Destination(22, ip="203.0.113.7"),
    "a PACS in another namespace": Destination(104, "TCP", "radiology", {"app": "pacs"}),
    "a database in another namespace": Destination(5432, "TCP", "hospital", {"app": "postgres"}),
    "the Pushgateway on another port": Destination(22, "TCP", NAMESPACE, dict(PUSHGATEWAY.labels)),
    "kube-system pods other than DNS": Destination(53, "UDP", "kube-system", {"k8s-app": "metrics-server"}),
}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_workflow_pods_reach_dns_the_pushgateway_and_s3_only(policies, overlay):
    rules = policies[overlay]
    for name, to in {"DNS": DNS, "DNS over TCP": Destination(53, "TCP", DNS.namespace, DNS.labels),
                     "Pushgateway": PUSHGATEWAY, "S3 over HTTPS": AWS_S3, "Kubernetes API": API_SERVER}.items():
        assert egress_allowed(rules, WORKFLOW_POD, to), name
    for name, to in FORBIDDEN.items():
        assert not egress_allowed(rules, WORKFLOW_POD, to), name
    assert egress_allowed(rules, WORKFLOW_POD, MINIO) == (overlay == "dev")  # in-cluster S3 only in dev


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_pod_of_the_namespace_is_under_an_egress_policy_with_port_limited_rules(policies, overlay):
    egress = [p for p in policies[overlay] if "Egress" in p["spec"].get("policyTypes", [])]
    assert any(p["spec"]["podSelector"] == {} for p in egress)  # pushgateway, MinIO and jobs included
    for policy in egress:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule without ports allows every port"


def test_the_evaluator_allows_everything_without_an_egress_policy():
    ingress_only = [{"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}]
    assert all(egress_allowed(ingress_only, WORKFLOW_POD, to) for to in FORBIDDEN.values())
