"""Blue/green model updates by repository digest: each repository runs as its own track.

The gateway reads the label sets and provenance of Triton's models once, at start: a gateway whose
Triton pool mixed two repositories would label one's results with the other's names. So a repository
never changes under a running pool. A new one gets a track of its own, a Kustomize overlay over the
site's (the GPU overlay): every object renamed with `-<sha256[:16]>`, every pod labelled and selected
by that digest, its gateways pointed at its own Triton Service, its Triton at the new artifact, its
PodMonitors scraping its own pods only (kustomize's label selectors do not reach a PodMonitor's). The
front Service (`toneserve`, what clients use) selects one track's gateways; switching it is the
cut-over, and switching back the rollback. The old track is deleted once its calls have ended.
"""
from __future__ import annotations

from toneserve.kube import gateway, triton
from toneserve.kube.objects import selector

TRACK_LABEL = "toneserve.io/repository"
FRONT = "toneserve"


def track(sha256: str) -> str:
    return sha256[:16]


def service_name_replacement() -> dict:
    """Kustomize: the gateway's Triton Service name, as renamed (an overlay's nameSuffix), into its env.
    Overlays that rename objects repeat it: replacements run after their own renaming."""
    return {"source": {"kind": "Service", "name": triton.NAME, "fieldPath": "metadata.name"},
            "targets": [{"select": {"kind": "Deployment", "name": gateway.NAME},
                         "fieldPaths": [f"spec.template.spec.containers.[name=gateway].env.[name={gateway.TRITON_ENV}]"
                                        ".value"]}]}


def pod_monitor_patch(sha256: str) -> dict:
    """Kustomize: every PodMonitor of the site selects this track's pods only. `labels: includeSelectors`
    extends Services', Deployments' and PDBs' selectors, not a PodMonitor's (a custom resource): without
    this, each track's PodMonitors would select both tracks' pods, and Prometheus would scrape every
    pod twice (once per track's PodMonitor)."""
    key = TRACK_LABEL.replace("~", "~0").replace("/", "~1")  # a JSON pointer's escapes
    return {"target": {"group": "monitoring.coreos.com", "kind": "PodMonitor"},
            "patch": f"- op: add\n  path: /spec/selector/matchLabels/{key}\n  value: \"{track(sha256)}\"\n"}


def track_kustomization(sha256: str, url: str, site: str) -> dict:
    """The overlay of one repository's track, over `site` (a path relative to the overlay's folder)."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [site],
        "nameSuffix": f"-{track(sha256)}",
        "labels": [{"pairs": {TRACK_LABEL: track(sha256)}, "includeSelectors": True}],
        "configMapGenerator": [{"name": triton.REPOSITORY_CONFIG, "behavior": "replace",
                                "literals": [f"url={url}", f"sha256={sha256}"]}],
        "patches": [pod_monitor_patch(sha256)],
        "replacements": [service_name_replacement()],
    }


def front_service(sha256: str, namespace: str | None = None) -> dict:
    """The clients' Service, on the gateways of the track of `sha256`."""
    metadata: dict = {"name": FRONT, "labels": {**selector(gateway.COMPONENT), "app.kubernetes.io/part-of": "toneserve"}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"type": "ClusterIP", "selector": {**selector(gateway.COMPONENT), TRACK_LABEL: track(sha256)},
                     "ports": gateway.client_ports()}}
