"""A repository's own Triton pool (kube/pools.py, deploy/k8s/components/repository-pool), built with `kubectl kustomize`.

- each example pool (over the GPU site, over the CPU site) validates strictly (Kubernetes 1.29 and 1.33) and
  passes kube/checks.py; its Triton Deployment, Service, PodDisruptionBudget and HPA carry the repository's
  digest in their names, labels and selectors; the HPA scales that Deployment; the gateways call that Service;
- two repositories applied one after the other are two Deployments side by side, not a rollout of one: built
  together, no Service or PDB of one pool selects the other's pods, and the gateways' pods change (they roll
  onto the new pool, and read its labels at start);
- the pool overlay's lines are what `toneserve pack --url` prints.
"""
from __future__ import annotations

import shutil

import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_k8s_validate import NOT_CORE, _build, needs_kubectl
from tests.support import ROOT
from toneserve.kube import checks, gateway, pack, pools, tracks, triton

K8S = ROOT / "deploy" / "k8s"


def _get(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in objects if o["kind"] == kind])
    return found[0]


def _pool(objects: list[dict]) -> str:
    repository = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        triton.REPOSITORY_CONFIG))
    sha, track = repository["data"]["sha256"], repository["data"][triton.REPOSITORY_TRACK_KEY]
    assert track == tracks.track(sha) and repository["data"]["url"].startswith("https://")
    return track


@needs_kubectl
@pytest.mark.parametrize("pool", ["gpu-pool", "cpu-pool"])
def test_a_pool_is_named_and_selected_by_its_digest(pool):
    objects = _build(K8S / "overlays" / pool)
    for obj in objects:
        if obj["kind"] not in NOT_CORE:
            for version in ("1.29", "1.33"):
                kubernetes_validate.validate(obj, version, strict=True)
    assert not checks.problems(objects), checks.problems(objects)
    track = _pool(objects)
    name = f"{triton.NAME}-{track}"
    deployment = _get(objects, "Deployment", name)
    assert deployment["spec"]["selector"]["matchLabels"][tracks.TRACK_LABEL] == track
    assert deployment["spec"]["template"]["metadata"]["labels"][tracks.TRACK_LABEL] == track
    assert _get(objects, "Service", name)["spec"]["selector"][tracks.TRACK_LABEL] == track
    assert _get(objects, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"][tracks.TRACK_LABEL] == track
    hpa = _get(objects, "HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"]["name"] == name and hpa["metadata"]["labels"][tracks.TRACK_LABEL] == track
    assert not [o for o in objects if o["kind"] in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")
                and o["metadata"]["name"] == triton.NAME]
    pod = _get(objects, "Deployment", gateway.NAME)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env[gateway.TRITON_ENV] == name
    # A name of its own for each pool, within the limits (a Service's is a DNS label, 63 characters).
    assert len(name) <= 63


def _write_pool(root, folder: str, sha: str) -> None:
    site = yaml.safe_load((K8S / "overlays" / "gpu-pool" / "kustomization.yaml").read_text())
    site["configMapGenerator"] = yaml.safe_load(pack.kustomize_snippet(
        pack.Packed(root / f"repository-{sha[:16]}.tar.gz", sha), f"https://store.example/repository-{sha[:16]}.tar.gz"))[
        "configMapGenerator"]
    (root / "overlays" / folder).mkdir()
    (root / "overlays" / folder / "kustomization.yaml").write_text(yaml.safe_dump(site))


@needs_kubectl
def test_a_new_repository_is_a_new_deployment_beside_the_old(tmp_path):
    """What `kubectl apply -k` of the pool does when its repository changes: a second Deployment, the first one
    left as it was (serving the gateways that read its labels) until it is deleted."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    old_sha, new_sha = "a" * 64, "b" * 64
    _write_pool(root, "old", old_sha)
    _write_pool(root, "new", new_sha)
    old, new = _build(root / "overlays" / "old"), _build(root / "overlays" / "new")
    old_name, new_name = f"{triton.NAME}-{'a' * 16}", f"{triton.NAME}-{'b' * 16}"
    assert _pool(old) == "a" * 16 and _pool(new) == "b" * 16
    # What the cluster holds after both applies: the old pool's Triton objects, and everything of the new build.
    kept = [o for o in old if o["metadata"]["name"] == old_name]
    assert {o["kind"] for o in kept} == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    cluster = [o for o in kept + new if o["kind"] not in NOT_CORE]
    assert not checks.problems(cluster), checks.problems(cluster)  # each Service and PDB: one pool's pods
    old_pods = _get(old, "Deployment", old_name)["spec"]["template"]["metadata"]["labels"]
    assert not checks.matches(_get(new, "Service", new_name)["spec"]["selector"], old_pods)
    # The gateways' pods change with the repository: they roll, and each new one calls the new pool.
    old_gateway, new_gateway = (_get(b, "Deployment", gateway.NAME)["spec"]["template"] for b in (old, new))
    assert old_gateway != new_gateway
    assert old_gateway["spec"]["containers"][0]["env"] != new_gateway["spec"]["containers"][0]["env"]


def test_the_component_is_what_kube_pools_renders():
    text = (K8S / pools.FOLDER / "kustomization.yaml").read_text()
    assert yaml.safe_load(text) == pools.component()
