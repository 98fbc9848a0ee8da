"""The gateway on Kubernetes: a Deployment with keys and TLS from Secrets, a Service, a PodDisruptionBudget.

The gateway reads Triton's label sets and provenance once at start, and calls every ready Triton pod
through the headless Service (a `dns:///` target, re-resolved as Triton replicas come and go).
"""
from __future__ import annotations

import copy
import math

from toneserve.gateway.settings import Settings
from toneserve.kube import facts, triton
from toneserve.kube.objects import meta, pdb, probe_budget, restricted, selector, spread

NAME = "toneserve-gateway"
COMPONENT = "gateway"
KEYS_SECRET = "toneserve-api-keys"  # key api_keys.txt (docs/security.md: the key file)
TLS_SECRET = "toneserve-gateway-tls"  # type kubernetes.io/tls (tls.crt, tls.key)
KEYS_DIR, TLS_DIR = "/run/secrets/api-keys", "/run/secrets/tls"
# Annotation of the pod template carrying a digest of the Secrets' contents (`toneserve k8s --secrets`):
# a rotation changes it, and the Deployment rolls its pods onto the new key file and certificate.
SECRETS_ANNOTATION = "toneserve.io/secrets-sha256"
# Plaintext gRPC health checking alone (`--health-port`): the kubelet's gRPC probes speak no TLS, and
# the API port serves TLS only. It tells nothing a client could not learn from the API port's health.
HEALTH_PORT = 50052
# The name of the Triton Service this gateway calls: an environment variable, so that Kustomize's
# replacements follow a renamed Service (blue/green tracks, kube/tracks.py).
TRITON_ENV = "TRITON_SERVICE"


def triton_url() -> str:
    # Every ready Triton pod's address from the headless Service; the kubelet expands $(...).
    return f"dns:///$({TRITON_ENV}).$(POD_NAMESPACE).svc:{facts.TRITON_GRPC_PORT}"


# The longest grace a stopping pod gets from what drains nodes: the cluster autoscaler's default
# --max-graceful-termination-sec (a scale-down kills the pod then, whatever its own grace says); spot and
# preemptible nodes give less (AWS 120 s, GCP 30 s). A grace of hours would also hold every rollout and
# `kubectl drain` for hours. So the gateway's grace stays within it, and a longer call is cut at the end
# of the drain with UNAVAILABLE / SHUTTING_DOWN, which clients retry on another replica.
NODE_GRACE_LIMIT_S = 600
# What the grace holds beyond the drain: the preStop pause (5 s) and the process's exit.
STOP_MARGIN_S = 30
# Clients are told to reconnect after this (gRPC GOAWAY; HTTP: Connection: close), so that gateway replicas
# the autoscaler adds get their share: a client keeps its connection to the replica it first found. The
# same age, and the same reason, as Triton's for the gateways (kube/triton.py).
MAX_CONNECTION_AGE_S = triton.MAX_CONNECTION_AGE_S


def drain_seconds(settings: Settings) -> int:
    """How long a stopping gateway lets its calls finish: the longest a request may take, within what node
    drains allow (NODE_GRACE_LIMIT_S less the stop's margin)."""
    longest = math.ceil(settings.max_request_seconds or settings.upload_timeout_seconds)
    return min(longest, NODE_GRACE_LIMIT_S - STOP_MARGIN_S)


def args(settings: Settings) -> list[str]:
    """Compose's command line, with this cluster's paths and Triton address, the health port, the drain, and the
    connections' age: a connection closed for its age lets its calls run on for the drain's time."""
    drain = str(drain_seconds(settings))
    return [*facts.gateway_args(triton_url(), f"{KEYS_DIR}/api_keys.txt", f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key"),
            "--health-port", str(HEALTH_PORT), "--drain-seconds", drain,
            "--max-connection-age", str(MAX_CONNECTION_AGE_S), "--max-connection-age-grace", drain]


def _grpc_probe(period: int, failures: int) -> dict:
    return {"grpc": {"port": HEALTH_PORT}, "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures}


# The gateway listens at once, NOT_SERVING until it has read Triton's model configs (it retries with a
# backoff while Triton is away): so startup asks only that the process listens; readiness waits for Triton,
# and a Triton slower than any startup budget never gets the gateway restarted.
STARTUP_PROBE = {"tcpSocket": {"port": HEALTH_PORT}, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 30}


def progress_deadline_s() -> int:
    """A gateway becomes ready only once a Triton pool is (it reads the models' configs first): when a new
    repository starts a new pool (kube/pools.py), the gateways' rollout waits for it. So: Triton's deadline,
    then the gateway's own image pull and startup budget (its new pods wait NOT_SERVING, the old ones serve)."""
    return triton.progress_deadline_s() + facts.IMAGE_PULL_S["gateway"] + probe_budget(STARTUP_PROBE)


def deployment(settings: Settings | None = None, secrets_digest: str | None = None) -> dict:
    settings = settings or Settings()
    template_meta: dict = {"labels": meta(NAME, COMPONENT)["labels"]}
    if secrets_digest:
        template_meta["annotations"] = {SECRETS_ANNOTATION: secrets_digest}
    gateway = {
        "name": "gateway", "image": facts.GATEWAY_IMAGE,
        "args": args(settings),
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": TRITON_ENV, "value": triton.NAME}],
        "ports": [{"name": "grpc", "containerPort": facts.GATEWAY_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": facts.GATEWAY_HTTP_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": facts.GATEWAY_METRICS_PORT, "protocol": "TCP"},
                  {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True},
                         {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "startupProbe": copy.deepcopy(STARTUP_PROBE),
        # NOT_SERVING until the gateway has read Triton's model configs (label sets, provenance), and while
        # Triton is not ready: the pod is not (or no longer) in the Service, clients go to the others.
        # It stands for the HTTP port too: readiness is the pod's, not a port's (a ready pod is an endpoint
        # of every port of its Services); the gateway says SERVING only once its HTTP listener is up, and
        # from then on /v1/health follows the same state (Triton ready, not draining). An httpGet probe of
        # /v1/health (scheme HTTPS, which the kubelet does not verify) would tell the same, at the cost of a
        # TLS handshake every period and of a scheme to keep in step with the TLS flags.
        "readinessProbe": _grpc_probe(period=5, failures=2),
        # Liveness asks only whether the process answers at all (any status): a Triton outage must not
        # restart every gateway.
        "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10, "timeoutSeconds": 3,
                          "failureThreshold": 6},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {**restricted(facts.GATEWAY_UID), "readOnlyRootFilesystem": True},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(NAME, COMPONENT),
        # No `replicas`: the HorizontalPodAutoscaler owns the count (an applied one would reset it).
        "spec": {
            "selector": {"matchLabels": selector(COMPONENT)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": progress_deadline_s(),
            "template": {
                "metadata": template_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"fsGroup": facts.GATEWAY_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    # The drain, plus the preStop pause and room to exit: NODE_GRACE_LIMIT_S at most.
                    "terminationGracePeriodSeconds": drain_seconds(settings) + STOP_MARGIN_S,
                    "topologySpreadConstraints": spread(COMPONENT),
                    "containers": [gateway],
                    "volumes": [
                        {"name": "api-keys", "secret": {"secretName": KEYS_SECRET, "defaultMode": 0o440}},
                        {"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o440}},
                        # AnalyzeUpload spools large uploads to a temporary file.
                        {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
                    ],
                },
            },
        },
    }


def client_ports() -> list[dict]:
    """The Service ports clients use: gRPC, and the HTTP/JSON API, which serves TLS in the base (the
    certificate of `TLS_SECRET`), hence appProtocol https, which meshes (Istio) read before the port's name."""
    return [{"name": "grpc", "port": facts.GATEWAY_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            {"name": "http", "port": facts.GATEWAY_HTTP_PORT, "targetPort": "http", "protocol": "TCP",
             "appProtocol": "https"}]


def service() -> dict:
    """For clients. A ClusterIP balances connections, not calls: clients balance per call with an L7
    proxy (an ingress or mesh speaking HTTP/2) or the SDK's `dns:///` target on the headless variant."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(NAME, COMPONENT),
            "spec": {"type": "ClusterIP", "selector": selector(COMPONENT), "ports": client_ports()}}


def headless_service() -> dict:
    """Every ready gateway pod's address, for clients inside the cluster that balance per call themselves."""
    svc = service()
    svc["metadata"] = meta(f"{NAME}-pods", COMPONENT)
    svc["spec"] = {**svc["spec"], "clusterIP": "None"}
    del svc["spec"]["type"]
    return svc


def metrics_service() -> dict:
    """Gateway metrics (tenant names and volumes) on their own Service, for the monitoring namespace only."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(f"{NAME}-metrics", COMPONENT),
            "spec": {"type": "ClusterIP", "selector": selector(COMPONENT),
                     "ports": [{"name": "metrics", "port": facts.GATEWAY_METRICS_PORT, "targetPort": "metrics",
                                "protocol": "TCP"}]}}


def objects(settings: Settings | None = None, secrets_digest: str | None = None) -> list[dict]:
    return [deployment(settings, secrets_digest), service(), headless_service(), metrics_service(),
            pdb(NAME, COMPONENT, max_unavailable=1)]
