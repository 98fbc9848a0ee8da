"""Every Kubernetes object toneserve ships, against the API's own schemas and the rules they miss.

- each object of the base (its files as written, and `kubectl kustomize`'s build of it) and of the
  example GPU overlay's build validates strictly (unknown fields are errors) against the schemas of
  Kubernetes 1.29 and 1.33, bundled in kubernetes-validate;
- the rules schemas miss (kube/checks.py): selectors match template labels, each Service and PDB
  selects one Deployment, probe and target ports exist, every Service port is admitted by the
  NetworkPolicies selecting its pods, names are DNS-1123, GPU requests equal limits; each rule is
  shown to catch a broken object;
- the GPU site keeps Triton on GPU nodes; the CPU site runs the cpu image without any GPU, Guaranteed,
  sized from the measured memory; every image either site runs comes from the site's registry;
- the pools over each site (tests/deploy/test_k8s_pools.py has the rest) point Triton at the artifact.

`kubectl` (with kustomize built in) is in this project's machine image; where it is absent the build
tests skip and say so (and fail under CI, where it is installed), and the base's own files are still
validated.
"""
from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.support import ROOT
from toneserve.kube import checks, facts, render, triton

BASE = ROOT / "deploy" / "k8s" / "base"
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
OVERLAY = OVERLAYS / "gpu"
REGISTRY = "registry.example.com/"
VERSIONS = ("1.29", "1.33")
# Objects that are not the API's: Kustomize's own, and the CRDs of operators (Prometheus, KEDA), which
# kubernetes-validate has no schemas for.
NOT_CORE = {"Kustomization", "PrometheusRule", "ScaledObject", "PodMonitor", "ServiceMonitor"}
KUBECTL = shutil.which("kubectl")


def needs_kubectl(test):
    """Skip without kubectl, but fail under CI (CI=true), where scripts/setup installs it."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        if KUBECTL is None:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail("kubectl (with kustomize) is not installed, and CI is set", pytrace=False)
            pytest.skip("kubectl (with kustomize) is not installed here")
        return test(*args, **kwargs)
    return run


def _files() -> list[dict]:
    return [o for path in sorted(BASE.glob("*.yaml")) for o in yaml.safe_load_all(path.read_text()) if o]


def _build(folder) -> list[dict]:
    done = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def _invalid(objects: list[dict]) -> list[str]:
    problems = []
    for obj in objects:
        if obj["kind"] in NOT_CORE:
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                problems.append(f"{version} {obj['kind']}/{obj['metadata']['name']} {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{version}: {exc.message}")
    return problems


def test_the_base_files_validate_strictly():
    objects = _files()
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= {o["kind"] for o in objects}
    assert not _invalid(objects), "\n".join(_invalid(objects))
    assert not checks.problems([o for o in objects if o["kind"] not in NOT_CORE])


@needs_kubectl
def test_the_base_builds_and_validates():
    objects = _build(BASE)
    assert not _invalid(objects), "\n".join(_invalid(objects))
    assert not checks.problems(objects), checks.problems(objects)


def _deployment(objects: list[dict], prefix: str) -> dict:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].startswith(prefix))


def _images(objects: list[dict]) -> set[str]:
    return {c["image"] for o in objects if o["kind"] == "Deployment"
            for c in o["spec"]["template"]["spec"].get("initContainers", []) + o["spec"]["template"]["spec"]["containers"]}


@needs_kubectl
def test_the_gpu_overlay_builds_and_validates():
    objects = _build(OVERLAY)
    assert not _invalid(objects), "\n".join(_invalid(objects))
    assert not checks.problems(objects), checks.problems(objects)
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"toneserve"}
    pod = _deployment(objects, "toneserve-triton")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    gpu = pod["containers"][0]["resources"]
    assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == 1
    # The site names no repository (a pool or a track does): the init container's ConfigMap is the base's.
    repository = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "toneserve-repository-"))
    assert repository["data"] == {"url": "", "sha256": ""}
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"]["name"] for e in pod["initContainers"][0]["env"]
           if "configMapKeyRef" in e["valueFrom"]}
    assert set(env.values()) == {repository["metadata"]["name"]}


@needs_kubectl
@pytest.mark.parametrize("site", ["gpu", "cpu", "cpu-bf16"])
def test_every_image_a_site_runs_comes_from_its_registry(site):
    """The fetcher too: a site that mirrors its images must not pull the init container from Docker Hub."""
    images = _images(_build(OVERLAYS / site))
    assert len(images) == 3 and all(i.startswith(REGISTRY) for i in images), images
    base = _images(_files())
    assert {facts.FETCH_IMAGE, facts.GATEWAY_IMAGE, facts.TRITON_IMAGE} == base
    assert {REGISTRY + facts.FETCH_IMAGE, REGISTRY + facts.GATEWAY_IMAGE} <= images  # same names and tags


@needs_kubectl
@pytest.mark.parametrize("site, rss_mib", [("cpu", triton.CPU_RSS_MIB), ("cpu-bf16", triton.CPU_BF16_RSS_MIB)])
def test_the_cpu_overlay_runs_the_cpu_image_without_a_gpu(site, rss_mib):
    """Both cpu sites; each sizes Triton from its repository's measured peak (the bf16 one's is under half)."""
    objects = _build(OVERLAYS / site)
    assert not _invalid(objects), "\n".join(_invalid(objects))
    assert not checks.problems(objects), checks.problems(objects)
    assert {o["metadata"].get("namespace") for o in objects} == {"toneserve"}
    pod = _deployment(objects, "toneserve-triton")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == REGISTRY + facts.TRITON_CPU_IMAGE
    # The same command and flags as on GPU nodes (the cpu image has tritonserver on PATH, the same wrapper).
    base = _deployment(_files(), "toneserve-triton")["spec"]["template"]["spec"]["containers"][0]
    assert (container["command"], container["args"]) == (base["command"], base["args"])
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in str(pod["containers"]) and "nvidia.com/gpu" not in str(pod.get("initContainers"))
    assert checks.qos_class(pod) == "Guaranteed"
    resources = container["resources"]
    assert resources == triton.cpu_resources(rss_mib)
    memory_mib = int(resources["limits"]["memory"].removesuffix("Gi")) * 1024
    assert rss_mib * (1 + triton.CPU_MEMORY_HEADROOM) <= memory_mib < rss_mib * (1 + triton.CPU_MEMORY_HEADROOM) + 1024
    assert resources["limits"]["cpu"] == str(triton.CPU_CORES)


def test_the_rendered_pieces_are_fresh():
    """The pool Component and the cpu overlay's resources, as `toneserve k8s` writes them."""
    for relative, text in render.pieces().items():
        path = ROOT / "deploy" / "k8s" / relative
        assert path.read_text() == text, f"deploy/k8s/{relative} is stale: run `toneserve k8s`"


def test_strict_validation_catches_a_misspelt_field():
    deployment = copy.deepcopy(next(o for o in _files() if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert _invalid([deployment])


def _base_objects() -> list[dict]:
    return [o for o in _files() if o["kind"] not in NOT_CORE]


def _first(objects, kind, name_part=""):
    return next(o for o in objects if o["kind"] == kind and name_part in o["metadata"]["name"])


def test_each_rule_catches_what_it_is_for():
    objects = _base_objects()
    assert not checks.problems(objects)

    broken = copy.deepcopy(objects)
    _first(broken, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "x"
    assert any("does not match its template" in p for p in checks.selectors(broken))

    broken = copy.deepcopy(objects)
    _first(broken, "Service", "gateway")["spec"]["selector"] = {"app.kubernetes.io/name": "toneserve"}
    assert any("selects 2 Deployments" in p for p in checks.selectors(broken))

    broken = copy.deepcopy(objects)
    _first(broken, "PodDisruptionBudget", "triton")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "y"
    assert any("selects 0 Deployments" in p for p in checks.selectors(broken))

    broken = copy.deepcopy(objects)
    _first(broken, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {
        "tcpSocket": {"port": "grcp"}}
    assert any("'grcp' is not a port" in p for p in checks.ports(broken))

    broken = copy.deepcopy(objects)
    _first(broken, "Service", "triton")["spec"]["ports"][0]["targetPort"] = 9001
    assert any("targetPort 9001" in p for p in checks.ports(broken))

    # A client port the NetworkPolicy forgot: the Service has it, every connection to it would be dropped.
    broken = copy.deepcopy(objects)
    clients = _first(broken, "NetworkPolicy", "gateway")["spec"]["ingress"][0]
    clients["ports"] = [p for p in clients["ports"] if p["port"] != 8080]
    assert any("port 'http' (8080/TCP)" in p and "NetworkPolicy/toneserve-gateway" in p for p in checks.policies(broken))
    clients["ports"].append({"protocol": "TCP", "port": "http"})  # by name, as the API allows
    assert not checks.policies(broken)
    clients["ports"][-1] = {"protocol": "TCP", "port": 8000, "endPort": 8100}  # or in a range
    assert not checks.policies(broken)
    clients["ports"][-1] = {"protocol": "UDP", "port": 8080}
    assert checks.policies(broken), "UDP does not admit a TCP port"
    del clients["ports"]  # a rule without ports admits all of them
    assert not checks.policies(broken)

    broken = copy.deepcopy(objects)
    _first(broken, "Service", "gateway")["metadata"]["name"] = "Toneserve_Gateway"
    assert any("DNS-1123" in p for p in checks.names(broken))

    broken = copy.deepcopy(objects)
    _first(broken, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"][
        "nvidia.com/gpu"] = 2
    assert any("requests nvidia.com/gpu 2 but limits 1" in p for p in checks.extended_resources(broken))

    # Triton's pods must be Guaranteed: an init container with a CPU request and no limit makes them Burstable.
    broken = copy.deepcopy(objects)
    init = _first(broken, "Deployment", "triton")["spec"]["template"]["spec"]["initContainers"][0]["resources"]
    del init["limits"]["cpu"]
    assert any("Burstable, not Guaranteed" in p and "requests cpu without a limit" not in p for p in checks.qos(broken))
    assert any("fetch-repository requests cpu without a limit" in p for p in checks.qos(broken))
    broken = copy.deepcopy(objects)
    resources = _first(broken, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["resources"]
    resources["requests"]["ephemeral-storage"] = "1Gi"  # cpu and memory still equal: Guaranteed, but disk is not
    assert checks.qos_class(_first(broken, "Deployment", "triton")["spec"]["template"]["spec"]) == "Guaranteed"
    assert any("requests ephemeral-storage 1Gi but limits" in p for p in checks.qos(broken))
    # The gateway's pods may burst (no CPU limit: throttling would add latency): the rule leaves them alone.
    assert checks.qos_class(_first(objects, "Deployment", "gateway")["spec"]["template"]["spec"]) == "Burstable"
