"""Blue/green by repository digest: two tracks of the GPU overlay, as `toneserve pack --track` writes them.

Built together with `kubectl kustomize`, the two tracks' objects validate (Kubernetes 1.29 and 1.33)
and pass kube/checks.py as one set: each Service and PodDisruptionBudget selects one Deployment, so
no Service mixes the tracks' pods. Each track's gateways call its own Triton Service, its Triton
fetches its own artifact, its Triton's NetworkPolicy admits only its own gateways, and the front
Service selects exactly one track's gateways, and each track's PodMonitors scrape only its own pods.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from tests.support import ROOT
from toneserve.kube import checks, gateway, tracks, triton

SITE = ROOT / "deploy" / "k8s" / "overlays" / "gpu"
CORE_KINDS = {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap",
              "HorizontalPodAutoscaler"}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


def _track(tmp_path, model: str):
    repo = tmp_path / f"repo-{model}"
    (repo / model / "1").mkdir(parents=True)
    (repo / model / "config.pbtxt").write_text(f'name: "{model}"\n')
    done = subprocess.run([sys.executable, "-m", "toneserve", "pack", str(repo), "--out", str(tmp_path / "store"),
                           "--url", "https://store.example/models", "--track", str(tmp_path / "tracks"),
                           "--site", str(SITE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {p.read_text().split()[0] for p in (tmp_path / "store").glob("*.sha256")}  # every track packed so far


def _build(folder) -> list[dict]:
    done = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def _get(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_two_tracks_stand_apart_and_the_front_service_picks_one(tmp_path):
    _track(tmp_path, "emotion")
    digests = _track(tmp_path, "asr")
    assert len(digests) == 2
    objects, fronts = [], {}
    for sha in sorted(digests):
        folder = tmp_path / "tracks" / tracks.track(sha)
        built = _build(folder)
        objects += built
        fronts[sha] = yaml.safe_load((folder / "front-service.yaml").read_text())
        suffix = f"-{tracks.track(sha)}"
        pod = _get(built, "Deployment", gateway.NAME + suffix)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env[gateway.TRITON_ENV] == triton.NAME + suffix  # its own Triton pool
        repository = next(o for o in built if o["kind"] == "ConfigMap"
                          and o["metadata"]["name"].startswith(triton.REPOSITORY_CONFIG + suffix))
        assert repository["data"] == {"url": f"https://store.example/models/repository-{sha[:16]}.tar.gz",
                                      "sha256": sha}
        policy = _get(built, "NetworkPolicy", triton.NAME + suffix)["spec"]["ingress"][0]["from"][0]["podSelector"]
        assert policy["matchLabels"][tracks.TRACK_LABEL] == tracks.track(sha)
    # Each track's PodMonitors scrape its own pods only: no pod is scraped twice (once per track).
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        scraped = [d["metadata"]["name"] for d in deployments
                   if checks.matches(monitor["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])]
        suffix = monitor["metadata"]["name"].rsplit("-", 1)[1]
        assert len(scraped) == 1 and scraped[0].endswith(f"-{suffix}"), (monitor["metadata"]["name"], scraped)
    assert len([o for o in objects if o["kind"] == "PodMonitor"]) == 4
    for obj in objects:
        if obj["kind"] in CORE_KINDS:
            for version in ("1.29", "1.33"):
                kubernetes_validate.validate(obj, version, strict=True)
    # As one set: no Service or PDB of one track selects the other's pods, and each front selects one track.
    assert not checks.problems([o for o in objects if o["kind"] in CORE_KINDS]), checks.problems(objects)
    for sha, front in fronts.items():
        kubernetes_validate.validate(front, "1.33", strict=True)
        # Both client ports, on ports of that track's gateways that its NetworkPolicy admits.
        assert [p["name"] for p in front["spec"]["ports"]] == ["grpc", "http"]
        assert not checks.problems([o for o in objects if o["kind"] in CORE_KINDS] + [front])
        chosen = [o["metadata"]["name"] for o in objects + [front] if o["kind"] == "Deployment"
                  and checks.matches(front["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"])]
        assert chosen == [f"{gateway.NAME}-{tracks.track(sha)}"]
