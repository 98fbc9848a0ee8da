"""Small builders of Kubernetes objects as plain dicts, shared by the modules of each component."""
from __future__ import annotations

APP = "toneserve"


def selector(component: str) -> dict[str, str]:
    """The labels a component's Services, PodDisruptionBudget and NetworkPolicy select its pods by."""
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def labels(component: str) -> dict[str, str]:
    return {**selector(component), "app.kubernetes.io/part-of": APP}


def meta(name: str, component: str, **extra) -> dict:
    return {"name": name, "labels": labels(component), **extra}


def pdb(name: str, component: str, max_unavailable: int) -> dict:
    """At most `max_unavailable` pods of the component away at once for voluntary disruptions (drains)."""
    # AlwaysAllow: a pod that is not Ready (crash-looping, stuck starting) may always be evicted, so it
    # never blocks a node drain; the budget protects the pods that serve.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name, component),
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": selector(component)},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


# Topology domains the pods of a component spread over: zones first, then nodes.
SPREAD_KEYS = ("topology.kubernetes.io/zone", "kubernetes.io/hostname")


def spread(component: str) -> list[dict]:
    """Topology spread over zones and nodes, as a preference (ScheduleAnyway): a one-node or one-zone cluster,
    nodes without a zone label, or a full node with a free one elsewhere still schedule the pod (a hard rule
    would leave a pod Pending, and a GPU idle, for the sake of balance). matchLabelKeys: each rollout's
    ReplicaSet spreads on its own, not counted against the pods it replaces."""
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector(component)}, "matchLabelKeys": ["pod-template-hash"]}
            for key in SPREAD_KEYS]


# A pod may wait this long for a node (the cluster autoscaler adding one) before its image is pulled.
NODE_START_S = 300


def probe_budget(probe: dict) -> int:
    """The longest a probe lets a container take: every allowed failure, one period apart."""
    return probe["periodSeconds"] * probe["failureThreshold"]


def exec_probe(script: str, period: int, timeout: int, failures: int) -> dict:
    return {"exec": {"command": ["/bin/sh", "-c", script]}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def restricted(uid: int) -> dict:
    """A container security context of the restricted Pod Security Standard."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
