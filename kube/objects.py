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
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name, component),
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": selector(component)}}}


def exec_probe(script: str, period: int, timeout: int, failures: int) -> dict:
    return {"exec": {"command": ["/bin/sh", "-c", script]}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def restricted(uid: int) -> dict:
    """A container security context of the restricted Pod Security Standard."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
