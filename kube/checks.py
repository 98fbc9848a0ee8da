"""What the Kubernetes schemas do not check, checked on a list of rendered objects.

- a Deployment's selector matches its pod template's labels;
- each Service and PodDisruptionBudget selects the pods of exactly one Deployment;
- a probe's or Service's named port exists in the container / pods it points at;
- every port of a Service is admitted, from somewhere, by the NetworkPolicies that select its pods (a port
  added to the Service but not to the policy would be dropped for everyone);
- every name is DNS-1123 (a label for Services, a subdomain otherwise);
- extended resources (nvidia.com/gpu) are requested exactly as they are limited;
- the pods that must be Guaranteed (Triton's: the last the kubelet evicts) are: every container, init
  containers included, limits cpu and memory and requests what it limits (ephemeral-storage too, where set).

Each function returns the problems found, as sentences; none means the objects pass.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from toneserve.kube import triton

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
NATIVE_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
# Components (app.kubernetes.io/component) whose pods must be of the Guaranteed QoS class.
GUARANTEED = {triton.COMPONENT}


def _name(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def _containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def names(objects: Iterable[dict]) -> list[str]:
    problems = []
    for obj in objects:
        name = obj["metadata"]["name"]
        pattern = DNS1123_LABEL if obj["kind"] == "Service" else DNS1123_SUBDOMAIN
        limit = 63 if obj["kind"] == "Service" else 253
        if not pattern.match(name) or len(name) > limit:
            problems.append(f"{_name(obj)}: not a DNS-1123 {'label' if limit == 63 else 'subdomain'}")
        for c in _containers(obj) if obj["kind"] == "Deployment" else []:
            if not DNS1123_LABEL.match(c["name"]):
                problems.append(f"{_name(obj)}: container {c['name']!r} is not a DNS-1123 label")
    return problems


def selectors(objects: Iterable[dict]) -> list[str]:
    objects = list(objects)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    problems = []
    for d in deployments:
        match = d["spec"]["selector"].get("matchLabels", {})
        if not matches(match, _pod_labels(d)):
            problems.append(f"{_name(d)}: selector {match} does not match its template's labels {_pod_labels(d)}")
    for obj in objects:
        if obj["kind"] == "Service":
            sel = obj["spec"].get("selector", {})
        elif obj["kind"] == "PodDisruptionBudget":
            sel = obj["spec"]["selector"].get("matchLabels", {})
        else:
            continue
        chosen = [d for d in deployments if matches(sel, _pod_labels(d))]
        if len(chosen) != 1:
            problems.append(f"{_name(obj)}: selects {len(chosen)} Deployments ({[_name(d) for d in chosen]}), not 1")
    return problems


def _port_names(container: dict) -> set:
    return {p.get("name") for p in container.get("ports", [])} | {p["containerPort"] for p in container.get("ports", [])}


def ports(objects: Iterable[dict]) -> list[str]:
    objects = list(objects)
    problems = []
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            for probe_name in PROBES:
                probe = c.get(probe_name)
                if not probe:
                    continue
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    if kind in probe and probe[kind]["port"] not in _port_names(c):
                        problems.append(f"{_name(d)}: {c['name']} {probe_name} port {probe[kind]['port']!r} "
                                        "is not a port of the container")
    for svc in (o for o in objects if o["kind"] == "Service"):
        pods = [d for d in deployments if matches(svc["spec"].get("selector", {}), _pod_labels(d))]
        known = set().union(*(_port_names(c) for d in pods for c in d["spec"]["template"]["spec"]["containers"]))
        for p in svc["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in known:
                problems.append(f"{_name(svc)}: targetPort {p.get('targetPort', p['port'])!r} is no port of its pods")
    return problems


def _port_number(containers: list[dict], port) -> int | None:
    """A port given by number or by a container port's name, as a number (None: no such name)."""
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for c in containers for p in c.get("ports", []) if p.get("name") == port), None)


def _policy_selects(policy: dict, labels: dict) -> bool:
    """Whether a NetworkPolicy's podSelector selects pods with `labels` (matchLabels only; {} selects all)."""
    chosen = policy["spec"].get("podSelector", {})
    wanted = chosen.get("matchLabels", {})
    return not chosen.get("matchExpressions") and all(labels.get(k) == v for k, v in wanted.items())


def _admits(rule: dict, containers: list[dict], number: int, protocol: str) -> bool:
    if "ports" not in rule:  # a rule without ports admits every port
        return True
    for allowed in rule["ports"]:
        if allowed.get("protocol", "TCP") != protocol:
            continue
        if "port" not in allowed:
            return True
        first = _port_number(containers, allowed["port"])
        if first is not None and first <= number <= allowed.get("endPort", first):
            return True
    return False


def policies(objects: Iterable[dict]) -> list[str]:
    objects = list(objects)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    ingress = [o for o in objects if o["kind"] == "NetworkPolicy" and "Ingress" in o["spec"].get("policyTypes", ["Ingress"])]
    problems = []
    for svc in (o for o in objects if o["kind"] == "Service"):
        for d in (d for d in deployments if matches(svc["spec"].get("selector", {}), _pod_labels(d))):
            selecting = [p for p in ingress if _policy_selects(p, _pod_labels(d))]
            if not selecting:  # no policy selects the pods: everything is admitted
                continue
            containers = d["spec"]["template"]["spec"]["containers"]
            for port in svc["spec"]["ports"]:
                number = _port_number(containers, port.get("targetPort", port["port"]))
                if number is None:
                    continue  # ports() reports it
                protocol = port.get("protocol", "TCP")
                if not any(_admits(rule, containers, number, protocol) for p in selecting
                           for rule in p["spec"].get("ingress", [])):
                    problems.append(f"{_name(svc)}: port {port.get('name', port['port'])!r} ({number}/{protocol}) of "
                                    f"{_name(d)} is admitted by none of the NetworkPolicies selecting its pods "
                                    f"({', '.join(_name(p) for p in selecting)})")
    return problems


def extended_resources(objects: Iterable[dict]) -> list[str]:
    problems = []
    for d in (o for o in objects if o["kind"] == "Deployment"):
        for c in _containers(d):
            requests = c.get("resources", {}).get("requests", {})
            limits = c.get("resources", {}).get("limits", {})
            for name in (set(requests) | set(limits)) - NATIVE_RESOURCES:
                if str(requests.get(name)) != str(limits.get(name)):
                    problems.append(f"{_name(d)}: {c['name']} requests {name} {requests.get(name)} but limits "
                                    f"{limits.get(name)}: extended resources need requests equal to limits")
    return problems


def qos_class(pod: dict) -> str:
    """The QoS class Kubernetes gives a pod spec: Guaranteed when every container (init containers too) limits
    cpu and memory and requests the same (a request left out defaults to the limit); BestEffort when none sets
    either; Burstable otherwise."""
    containers = pod.get("initContainers", []) + pod["containers"]
    guaranteed, any_set = True, False
    for c in containers:
        limits = c.get("resources", {}).get("limits", {})
        requests = {**limits, **c.get("resources", {}).get("requests", {})}
        for name in ("cpu", "memory"):
            any_set = any_set or name in limits or name in requests
            if name not in limits or str(requests[name]) != str(limits[name]):
                guaranteed = False
    return "Guaranteed" if guaranteed else "Burstable" if any_set else "BestEffort"


def qos(objects: Iterable[dict]) -> list[str]:
    problems = []
    for d in (o for o in objects if o["kind"] == "Deployment"):
        if _pod_labels(d).get("app.kubernetes.io/component") not in GUARANTEED:
            continue
        pod = d["spec"]["template"]["spec"]
        if qos_class(pod) != "Guaranteed":
            problems.append(f"{_name(d)}: its pods are {qos_class(pod)}, not Guaranteed: every container needs cpu "
                            "and memory limits, requested as limited")
        for c in _containers(d):
            limits = c.get("resources", {}).get("limits", {})
            requests = {**limits, **c.get("resources", {}).get("requests", {})}
            for name in set(requests) - set(limits):
                problems.append(f"{_name(d)}: {c['name']} requests {name} without a limit")
            for name in set(limits) & set(requests):
                if str(requests[name]) != str(limits[name]):
                    problems.append(f"{_name(d)}: {c['name']} requests {name} {requests[name]} but limits "
                                    f"{limits[name]}")
    return problems


def problems(objects: Iterable[dict]) -> list[str]:
    objects = [o for o in objects if o]
    return (names(objects) + selectors(objects) + ports(objects) + policies(objects) + extended_resources(objects)
            + qos(objects))
