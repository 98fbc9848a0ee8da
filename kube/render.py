"""`toneserve k8s`: the Kustomize base, from the same facts and gateway settings as compose.

deploy/k8s/base/ is this module's output, committed; tests/deploy/test_k8s_render.py checks it equals a
fresh render. Plain manifests: overlays (deploy/k8s/overlays/gpu/) patch them, a chart may wrap them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from toneserve.gateway.settings import Settings
from toneserve.kube import autoscaling, gateway, network, pools, tracks, triton

HEADER = "# Rendered by `toneserve k8s` (toneserve/kube); do not edit: patch it in an overlay (docs/kubernetes.md).\n"
# deploy/k8s's other rendered files (the pool Component, the cpu overlay's resources), from the same facts.
PIECES_HEADER = ("# Rendered by `toneserve k8s` (toneserve/kube); do not edit: change the Python "
                 "(docs/kubernetes.md).\n")
# The repository's ConfigMap is generated, so that its name carries a hash of its contents: a new
# repository digest changes the name, and the Triton Deployment rolls onto it.
REPOSITORY_LITERALS = ("url=", "sha256=")
SECRET_FILES = ("api_keys.txt", "tls.crt", "tls.key")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts) as literal blocks, so that the manifests read as they run."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: list[dict], header: str = HEADER) -> str:
    return header + "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=120) for o in objects)


def secrets_digest(folder: Path) -> str:
    """sha256 over the gateway's Secret files present in `folder` (names and contents)."""
    h = hashlib.sha256()
    found = [name for name in SECRET_FILES if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"none of {', '.join(SECRET_FILES)} in {folder}")
    for name in found:
        data = (folder / name).read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def files(models: list, settings: Settings | None = None, secrets: str | None = None) -> dict[str, str]:
    """The base's files: name -> text. `models`: the catalog's (catalog.describe), whose computing models
    the autoscaling rules read; `secrets`: the digest of the gateway's Secrets (annotation)."""
    settings = settings or Settings()
    out = {
        "triton.yaml": dump(triton.objects(settings)),
        "gateway.yaml": dump(gateway.objects(settings, secrets)),
        "network-policy.yaml": dump(network.objects()),
    }
    # The HPAs, their per-replica targets (`toneserve plan` measures them), the scrape and the rules.
    out.update({name: dump(objects) for name, objects in autoscaling.base_resources(models).items()})
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/managed-by": "kustomize"}}],
        "resources": list(out),
        "configMapGenerator": [{"name": triton.REPOSITORY_CONFIG, "literals": list(REPOSITORY_LITERALS)}],
        "replacements": [*autoscaling.base_kustomization()["replacements"], tracks.service_name_replacement()],
    }
    out["kustomization.yaml"] = dump([kustomization])
    return out


def cpu_triton_patch(rss_mib: int = triton.CPU_RSS_MIB) -> dict:
    """A cpu overlay's patch of Triton's Deployment: the cpu image's resources (no GPU) for a repository that
    peaked at `rss_mib`, Guaranteed."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": triton.NAME},
            "spec": {"template": {"spec": {"containers": [
                {"name": "tritonserver", "resources": {"$patch": "replace", **triton.cpu_resources(rss_mib)}}]}}}}


def pieces() -> dict[str, str]:
    """deploy/k8s's rendered files outside the base: path under deploy/k8s -> text."""
    return {f"{pools.FOLDER}/kustomization.yaml": dump([pools.component()], PIECES_HEADER),
            "overlays/cpu/triton-cpu-resources.yaml": dump([cpu_triton_patch()], PIECES_HEADER),
            "overlays/cpu-bf16/triton-cpu-resources.yaml": dump([cpu_triton_patch(triton.CPU_BF16_RSS_MIB)],
                                                                 PIECES_HEADER)}


def write(out_dir: Path, rendered: dict[str, str]) -> list[Path]:
    """Write the files, and remove YAML files of an earlier render that this one no longer has."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.yaml"):
        if stale.name not in rendered and stale.read_text().startswith(HEADER):
            stale.unlink()
    paths = []
    for name, text in rendered.items():
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
    return paths
