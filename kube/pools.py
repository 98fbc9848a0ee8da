"""A repository's own Triton pool: the Triton objects named and selected by the repository's digest.

The gateway reads the label sets and provenance of Triton's models once, at start, so a Triton pool must
never mix two repositories. A rolling update of the Triton Deployment onto a new repository would (old
and new pods side by side behind one Service). So where a site overlay says which repository to serve,
this Kustomize Component (deploy/k8s/components/repository-pool) names the Triton Deployment, its
Service, PodDisruptionBudget and HorizontalPodAutoscaler `toneserve-triton-<sha256[:16]>`, labels them
and their pods `toneserve.io/repository: <sha256[:16]>`, selects by that label, and points the gateways
at that Service. A new repository is then a new Deployment beside the old one, not a rollout of it; the
gateways roll onto the new pool once it is ready (each gateway reads the labels of the pool it calls), the
old pool serves the old gateways until they are gone, and is deleted after (docs/kubernetes.md).

Why a Component and not the base: Kustomize runs a kustomization's replacements on that kustomization's
own view, so the base's would see only the base's empty repository literals; a Component runs where it is
included, after that overlay's configMapGenerator. The digest's first 16 characters come from the
ConfigMap's `track` literal (Kustomize cannot cut a string; a label value holds 63 at most, a sha256 is
64), and the init container refuses a `sha256` that does not start with it. The blue/green tracks
(kube/tracks.py) do the same naming for every object with a nameSuffix, over a site without this Component.
"""
from __future__ import annotations

from toneserve.kube import gateway, tracks, triton

FOLDER = "components/repository-pool"  # under deploy/k8s
# Kustomize's replacement option that appends `-<value>` to a name of two dash-separated parts.
_APPEND = {"delimiter": "-", "index": len(triton.NAME.split("-"))}


def component() -> dict:
    label = f"[{tracks.TRACK_LABEL}]"
    create = {"create": True}

    def target(kind: str, *paths: str, options: dict) -> dict:
        return {"select": {"kind": kind, "name": triton.NAME}, "fieldPaths": list(paths), "options": options}

    targets = [
        # Labels and selectors first: targets are chosen by name, which the last ones change.
        target("Deployment", f"metadata.labels.{label}", f"spec.selector.matchLabels.{label}",
               f"spec.template.metadata.labels.{label}", options=create),
        target("Service", f"metadata.labels.{label}", f"spec.selector.{label}", options=create),
        target("PodDisruptionBudget", f"metadata.labels.{label}", f"spec.selector.matchLabels.{label}",
               options=create),
        target("HorizontalPodAutoscaler", f"metadata.labels.{label}", options=create),
        {"select": {"kind": "Deployment", "name": gateway.NAME},
         "fieldPaths": [f"spec.template.spec.containers.[name=gateway].env.[name={gateway.TRITON_ENV}].value"],
         "options": _APPEND},
        target("HorizontalPodAutoscaler", "spec.scaleTargetRef.name", "metadata.name", options=_APPEND),
        target("ScaledObject", "spec.scaleTargetRef.name", "metadata.name", options=_APPEND),  # the KEDA overlay's
        *(target(kind, "metadata.name", options=_APPEND) for kind in ("Deployment", "Service", "PodDisruptionBudget")),
    ]
    return {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "replacements": [{"source": {"kind": "ConfigMap", "name": triton.REPOSITORY_CONFIG,
                                         "fieldPath": f"data.{triton.REPOSITORY_TRACK_KEY}"},
                              "targets": targets}]}
