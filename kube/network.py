"""Who may reach what: only gateway pods reach Triton's gRPC port, only the monitoring namespace the
metrics ports (Triton's, and the gateway's, which name tenants). Clients reach the gateway's gRPC and
HTTP ports."""
from __future__ import annotations

from toneserve.kube import facts, gateway, triton
from toneserve.kube.objects import meta, selector

MONITORING_NAMESPACE = "monitoring"  # overlays change it where Prometheus runs elsewhere


def _port(number: int) -> dict:
    return {"protocol": "TCP", "port": number}


def _monitoring() -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}


def triton_policy() -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(triton.NAME, triton.COMPONENT),
            "spec": {"podSelector": {"matchLabels": selector(triton.COMPONENT)}, "policyTypes": ["Ingress"],
                     "ingress": [
                         {"from": [{"podSelector": {"matchLabels": selector(gateway.COMPONENT)}}],
                          "ports": [_port(facts.TRITON_GRPC_PORT)]},
                         {"from": [_monitoring()], "ports": [_port(facts.TRITON_METRICS_PORT)]},
                     ]}}


def gateway_policy() -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(gateway.NAME, gateway.COMPONENT),
            "spec": {"podSelector": {"matchLabels": selector(gateway.COMPONENT)}, "policyTypes": ["Ingress"],
                     "ingress": [
                         # Clients from anywhere the cluster routes: both APIs need a key and TLS.
                         {"ports": [_port(facts.GATEWAY_PORT), _port(facts.GATEWAY_HTTP_PORT)]},
                         {"from": [_monitoring()], "ports": [_port(facts.GATEWAY_METRICS_PORT)]},
                     ]}}


def objects() -> list[dict]:
    return [triton_policy(), gateway_policy()]
