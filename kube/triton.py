"""Triton on Kubernetes: a Deployment on GPU nodes, its headless Service and PodDisruptionBudget.

The model repository arrives as a packed tarball (kube/pack.py): an init container downloads it from
the URL in the `toneserve-repository` ConfigMap, checks its sha256 and unpacks it into an emptyDir
that Triton mounts read-only. Triton's HTTP port stays on the pod's loopback (as in compose): the
probes run curl inside the pod, so they can ask for each model's readiness.
"""
from __future__ import annotations

import math

from toneserve.gateway.settings import Settings
from toneserve.kube import facts
from toneserve.kube.objects import exec_probe, meta, pdb, restricted, selector

NAME = "toneserve-triton"
COMPONENT = "triton"
REPOSITORY_CONFIG = "toneserve-repository"  # made by the kustomization's configMapGenerator (url, sha256)
ADMIN_TOKEN_SECRET = "toneserve-triton-admin"  # key `token`
TOKEN_FILE = "/run/secrets/triton-admin/token"
# Clients (the gateways) are told to reconnect after this, so that replicas the autoscaler adds get
# their share of new calls: gRPC keeps a connection to the replica it first found for its life.
MAX_CONNECTION_AGE_S = 300
# /dev/shm: the Python backend passes every tensor through it (compose's shm_size explains the size).
SHM_SIZE = "2Gi"

FETCH = """set -eu
if [ -z "$REPOSITORY_URL" ] || [ -z "$REPOSITORY_SHA256" ]; then
  echo "set url and sha256 in the toneserve-repository ConfigMap (toneserve pack prints them)" >&2; exit 1
fi
curl -fsSL --retry 5 --retry-connrefused -o /models/.repository.tar.gz "$REPOSITORY_URL"
echo "$REPOSITORY_SHA256  /models/.repository.tar.gz" | sha256sum -c -
tar -xzf /models/.repository.tar.gz -C /models
rm /models/.repository.tar.gz
"""


def _curl(*paths: str) -> str:
    return " && ".join(f"curl -fsS -o /dev/null http://127.0.0.1:{facts.TRITON_HTTP_PORT}{path}" for path in paths)


def triton_args(settings: Settings) -> list[str]:
    """tritonserver's flags: compose's, plus how long connections live and how long Triton drains."""
    # A call Triton is serving never outlives the request it belongs to: the grace lets the longest
    # request (an hour-long stream) finish on its old connection.
    longest = max(settings.max_request_seconds or 0.0, settings.triton_timeout_seconds)
    return ["tritonserver", *facts.TRITON_FLAGS,
            f"--grpc-max-connection-age={MAX_CONNECTION_AGE_S * 1000}",
            f"--grpc-max-connection-age-grace={math.ceil(longest) * 1000}",
            f"--exit-timeout-secs={math.ceil(settings.triton_timeout_seconds)}",
            "--log-verbose=0"]


def deployment(settings: Settings | None = None) -> dict:
    settings = settings or Settings()
    drain = math.ceil(settings.triton_timeout_seconds)
    repository_env = [{"name": f"REPOSITORY_{key.upper()}",
                       "valueFrom": {"configMapKeyRef": {"name": REPOSITORY_CONFIG, "key": key}}}
                      for key in ("url", "sha256")]
    fetch = {
        "name": "fetch-repository", "image": facts.FETCH_IMAGE, "command": ["/bin/sh", "-c", FETCH],
        "env": repository_env, "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": restricted(facts.TRITON_UID),
    }
    triton = {
        "name": "tritonserver", "image": facts.TRITON_IMAGE,
        "command": ["/bin/sh", "-c", facts.admin_wrapper(TOKEN_FILE), "tritonserver"],
        "args": triton_args(settings),
        "ports": [{"name": "grpc", "containerPort": facts.TRITON_GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": facts.TRITON_METRICS_PORT, "protocol": "TCP"}],
        # GPU requests equal limits (extended resources allow nothing else); memory too: a Guaranteed pod
        # is the last one the kubelet evicts.
        "resources": {"requests": {"nvidia.com/gpu": 1, "cpu": "4", "memory": "16Gi"},
                      "limits": {"nvidia.com/gpu": 1, "cpu": "4", "memory": "16Gi"}},
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "admin-token", "mountPath": "/run/secrets/triton-admin", "readOnly": True}],
        # Loading ONNX Runtime sessions (and TensorRT engines) takes minutes: up to 10 before liveness counts.
        "startupProbe": exec_probe(_curl("/v2/health/ready"), period=10, timeout=5, failures=60),
        # Ready = every model loaded (strict readiness) and the models the gateway calls answer ready.
        "readinessProbe": exec_probe(_curl("/v2/health/ready", *(f"/v2/models/{m}/ready" for m in facts.READY_MODELS)),
                                     period=10, timeout=5, failures=3),
        "livenessProbe": exec_probe(_curl("/v2/health/live"), period=10, timeout=5, failures=6),
        # Endpoints drop the pod before Triton stops taking calls; then it drains those in flight.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": restricted(facts.TRITON_UID),
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(NAME, COMPONENT),
        # No `replicas`: the HorizontalPodAutoscaler owns the count (an applied one would reset it).
        "spec": {
            "selector": {"matchLabels": selector(COMPONENT)},
            # A new pod is ready before an old one goes: rollouts never drop capacity (they need one spare GPU).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "minReadySeconds": 10,
            "template": {
                "metadata": {"labels": meta(NAME, COMPONENT)["labels"]},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"fsGroup": facts.TRITON_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": drain + 30,
                    "initContainers": [fetch],
                    "containers": [triton],
                    "volumes": [
                        {"name": "models", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
                        {"name": "admin-token", "secret": {"secretName": ADMIN_TOKEN_SECRET, "defaultMode": 0o440}},
                    ],
                },
            },
        },
    }


def service() -> dict:
    """Headless: DNS answers every ready pod's address, so a gateway's `dns:///` target can balance calls."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(NAME, COMPONENT),
            "spec": {"clusterIP": "None", "selector": selector(COMPONENT),
                     "ports": [{"name": "grpc", "port": facts.TRITON_GRPC_PORT, "targetPort": "grpc",
                                "protocol": "TCP", "appProtocol": "grpc"},
                               {"name": "metrics", "port": facts.TRITON_METRICS_PORT, "targetPort": "metrics",
                                "protocol": "TCP"}]}}


def objects(settings: Settings | None = None) -> list[dict]:
    return [deployment(settings), service(), pdb(NAME, COMPONENT, max_unavailable=1)]
