"""Triton on Kubernetes: a Deployment (on GPU nodes; the cpu site runs the cpu image on any node), its headless
Service and PodDisruptionBudget. Where a site's pool names the repository, kube/pools.py names these objects
by its digest.

The model repository arrives as a packed tarball (kube/pack.py): an init container downloads it from
the URL in the `toneserve-repository` ConfigMap, checks its sha256 and unpacks it into an emptyDir
that Triton mounts read-only. Triton's HTTP port stays on the pod's loopback (as in compose): the
probes run curl inside the pod, so they can ask for each model's readiness.
"""
from __future__ import annotations

import copy
import math

from toneserve.gateway.settings import Settings
from toneserve.kube import facts
from toneserve.kube.objects import NODE_START_S, exec_probe, meta, pdb, probe_budget, restricted, selector, spread

NAME = "toneserve-triton"
COMPONENT = "triton"
REPOSITORY_CONFIG = "toneserve-repository"  # made by the kustomization's configMapGenerator (url, sha256)
# The optional key of that ConfigMap naming the pool (sha256[:16]) where the Triton objects are named by their
# repository (deploy/k8s/components/repository-pool, kube/pools.py): the init container refuses a digest
# that does not start with it, so a pool's name cannot lie about what it serves.
REPOSITORY_TRACK_KEY = "track"
ADMIN_TOKEN_SECRET = "toneserve-triton-admin"  # key `token`
TOKEN_FILE = "/run/secrets/triton-admin/token"
# Clients (the gateways) are told to reconnect after this, so that replicas the autoscaler adds get
# their share of new calls: gRPC keeps a connection to the replica it first found for its life.
MAX_CONNECTION_AGE_S = 300
# /dev/shm: the Python backend passes every tensor through it (compose's shm_size explains the size).
SHM_SIZE = "2Gi"

# The fetch's bounds. The repository's size (unpacked; its tarball is about as large: weights do not
# compress) sizes the init container's disk and the download's time: 2 GiB holds the base repository
# (measured: 1781 MiB for the base cpu one, `du` without OpenVINO's caches); patch it for larger sizes.
REPOSITORY_GIB = 2
FETCH_MIN_MIB_S = 10  # the slowest store a try waits for: a try may take the tarball's size at this rate
FETCH_CONNECT_S = 10
FETCH_RETRIES = 3  # after the first try; every error retried (a 5xx, a reset, a timeout), with a pause
FETCH_RETRY_DELAY_S = 5
FETCH_TRY_S = math.ceil(REPOSITORY_GIB * 1024 / FETCH_MIN_MIB_S)
# No new try starts after this; so the whole fetch ends within FETCH_RETRY_WINDOW_S + FETCH_TRY_S.
FETCH_RETRY_WINDOW_S = FETCH_RETRIES * (FETCH_TRY_S + FETCH_RETRY_DELAY_S)
# Checking the digest and unpacking, at the init container's one CPU: well under a minute for 2 GiB.
UNPACK_S = 120
# A private store: an optional Secret whose key holds one whole header line, sent with every try
# (`Authorization: Bearer TOKEN`, `X-Api-Key: KEY`...). Without the Secret, no header is sent.
REPOSITORY_AUTH_SECRET = "toneserve-repository-auth"
REPOSITORY_AUTH_KEY = "header"
# Mounted as a file (an optional Secret volume): never in the environment, curl reads it with `-H @FILE`, so
# it is on no command line either.
REPOSITORY_AUTH_DIR = "/run/secrets/repository-auth"
REPOSITORY_AUTH_FILE = f"{REPOSITORY_AUTH_DIR}/{REPOSITORY_AUTH_KEY}"

FETCH = f"""set -eu
if [ -z "$REPOSITORY_URL" ] || [ -z "$REPOSITORY_SHA256" ]; then
  echo "set url and sha256 in the toneserve-repository ConfigMap (toneserve pack prints them)" >&2; exit 1
fi
case "$REPOSITORY_SHA256" in
  "${{REPOSITORY_TRACK:-}}"*) ;;
  *) echo "the pool's name (track=${{REPOSITORY_TRACK:-}}) is not the start of sha256=$REPOSITORY_SHA256" >&2; exit 1;;
esac
headers=/dev/null
if [ -s {REPOSITORY_AUTH_FILE} ]; then headers={REPOSITORY_AUTH_FILE}; fi
curl --fail --silent --show-error --location --connect-timeout {FETCH_CONNECT_S} --max-time {FETCH_TRY_S} --speed-limit 1048576 --speed-time 30 --retry {FETCH_RETRIES} --retry-delay {FETCH_RETRY_DELAY_S} --retry-max-time {FETCH_RETRY_WINDOW_S} --retry-all-errors --header "@$headers" --output /models/.repository.tar.gz "$REPOSITORY_URL"
echo "$REPOSITORY_SHA256  /models/.repository.tar.gz" | sha256sum -c -
tar -xzf /models/.repository.tar.gz -C /models
rm /models/.repository.tar.gz
"""


def fetch_budget_s() -> int:
    """The longest the init container runs: the last try, started just inside the retry window, then unpacking."""
    return FETCH_RETRY_WINDOW_S + FETCH_TRY_S + UNPACK_S


def storage() -> str:
    """Ephemeral storage of the pod's containers and of the `models` emptyDir: the tarball and what it unpacks
    while the init container runs; then the unpacked repository and Triton's compiled-model caches (OpenVINO
    writes its cache to /tmp when /models is read-only: about the repository's size), plus 1 GiB of logs."""
    return f"{2 * REPOSITORY_GIB + 1}Gi"


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


def _guaranteed(**amounts) -> dict:
    """Requests equal to limits: with cpu and memory in every container, the pod is Guaranteed (the
    kubelet evicts it last; kube/checks.py's qos rule holds every Triton pod to it)."""
    return {"requests": dict(amounts), "limits": dict(amounts)}


# Triton's container on a GPU node: one GPU (extended resources allow only requests equal to limits).
GPU_RESOURCES = {"nvidia.com/gpu": 1, "cpu": "4", "memory": "16Gi"}

# The cpu overlay (deploy/k8s/overlays/cpu): resident memory of one Triton replica of the default cpu
# profile at base size (1 instance x 2 streams of each heavy model), the peak of `toneserve soak` (15 min of
# mixed calls and short clips, 4 users; Triton and its Python backend stubs, the gateway left out):
# docs/BENCHMARKS.md, "Memory: one copy of the weights per model", on 2 vCPUs (AVX2, OpenVINO f32). The
# figure this replaced, 8219 MiB after light load with 2 instances each, was below what that layout took
# under mixed load (11.1 GB in 6 minutes, still growing). On a CPU with native bf16 the default serves int8 weights
# (bf16 and f32 activations) and the 30-minute soak's Triton peaked far lower (3101 MB with glibc's default malloc,
# docs/BENCHMARKS.md "Int8 weights, capped runs"; 5445 MB before int8 weights); the limit keeps the f32 figure,
# which the same image serves on a node without bf16 (`--precision auto` serves fp32 there).
CPU_RSS_MIB = 7179
# The cpu-bf16 overlay (deploy/k8s/overlays/cpu-bf16), for the repository a bf16 request renders (SIZE-cpu-bf16:
# emotion2vec+ in static int8, the other heavy models with int8 weights): the peak of Triton and its stubs during
# the 30-minute `toneserve soak` of that repository, the gateway left out (docs/BENCHMARKS.md, "The default with
# static int8"), on 2 vCPUs with avx512_bf16. The figure is the repository's: where the CPU lacks bf16, OpenVINO
# computes its float layers in f32, which held about as much in-process on the measuring machine (not measured on
# such a CPU).
CPU_BF16_RSS_MIB = 2627
CPU_CORES = 2  # the vCPUs both were measured on
# Above the plateau: a long call's larger tensors, /dev/shm's traffic (memory-backed, charged to the pod).
CPU_MEMORY_HEADROOM = 0.25


def cpu_resources(rss_mib: int = CPU_RSS_MIB) -> dict:
    """The Triton container's resources on CPU nodes: a measured peak (`rss_mib`) plus headroom, in whole GiB."""
    memory_gib = math.ceil(rss_mib * (1 + CPU_MEMORY_HEADROOM) / 1024)
    return _guaranteed(cpu=str(CPU_CORES), memory=f"{memory_gib}Gi", **{"ephemeral-storage": storage()})


STARTUP_PROBE = exec_probe(_curl("/v2/health/ready"), period=10, timeout=5, failures=60)
READINESS_PROBE = exec_probe(_curl("/v2/health/ready", *(f"/v2/models/{m}/ready" for m in facts.READY_MODELS)),
                             period=10, timeout=5, failures=3)
MIN_READY_S = 10


def progress_deadline_s() -> int:
    """How long a rollout may go without a new pod becoming available before the Deployment reports it
    stalled (Progressing=False; `kubectl rollout status` fails): one pod's whole start, each step at its
    bound. A node to arrive, the image to pull, the fetch (every try), the startup probe's whole budget,
    one readiness period, minReadySeconds. Kubernetes' default, 600 s, is less than the startup probe
    alone allows, so a slow but healthy model load would read as a failed rollout."""
    return (NODE_START_S + facts.IMAGE_PULL_S["triton"] + facts.IMAGE_PULL_S["fetch"] + fetch_budget_s()
            + probe_budget(STARTUP_PROBE) + READINESS_PROBE["periodSeconds"] + MIN_READY_S)


def deployment(settings: Settings | None = None) -> dict:
    settings = settings or Settings()
    drain = math.ceil(settings.triton_timeout_seconds)
    repository_env = [{"name": f"REPOSITORY_{key.upper()}",
                       "valueFrom": {"configMapKeyRef": {"name": REPOSITORY_CONFIG, "key": key}}}
                      for key in ("url", "sha256")]
    repository_env.append({"name": f"REPOSITORY_{REPOSITORY_TRACK_KEY.upper()}", "valueFrom": {"configMapKeyRef": {
        "name": REPOSITORY_CONFIG, "key": REPOSITORY_TRACK_KEY, "optional": True}}})
    fetch = {
        "name": "fetch-repository", "image": facts.FETCH_IMAGE, "command": ["/bin/sh", "-c", FETCH],
        "env": repository_env, "volumeMounts": [{"name": "models", "mountPath": "/models"},
                                                {"name": "repository-auth", "mountPath": REPOSITORY_AUTH_DIR,
                                                 "readOnly": True}],
        # Init containers count for scheduling only as the largest of them against the sum of the others:
        # a whole CPU for sha256sum and gunzip costs the pod nothing once it runs.
        "resources": _guaranteed(cpu="1", memory="256Mi", **{"ephemeral-storage": storage()}),
        "securityContext": restricted(facts.TRITON_UID),
    }
    triton = {
        "name": "tritonserver", "image": facts.TRITON_IMAGE,
        "command": ["/bin/sh", "-c", facts.admin_wrapper(TOKEN_FILE), "tritonserver"],
        "args": triton_args(settings),
        "ports": [{"name": "grpc", "containerPort": facts.TRITON_GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": facts.TRITON_METRICS_PORT, "protocol": "TCP"}],
        # Requests equal limits, GPU, cpu, memory and disk: a Guaranteed pod is the last one the kubelet evicts.
        "resources": _guaranteed(**GPU_RESOURCES, **{"ephemeral-storage": storage()}),
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "admin-token", "mountPath": "/run/secrets/triton-admin", "readOnly": True}],
        # Loading ONNX Runtime sessions (and TensorRT engines) takes minutes: up to 10 before liveness counts.
        "startupProbe": copy.deepcopy(STARTUP_PROBE),
        # Ready = every model loaded (strict readiness) and the models the gateway calls answer ready.
        "readinessProbe": copy.deepcopy(READINESS_PROBE),
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
            "minReadySeconds": MIN_READY_S,
            "progressDeadlineSeconds": progress_deadline_s(),
            "template": {
                "metadata": {"labels": meta(NAME, COMPONENT)["labels"]},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"fsGroup": facts.TRITON_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": drain + 30,
                    "topologySpreadConstraints": spread(COMPONENT),
                    "initContainers": [fetch],
                    "containers": [triton],
                    "volumes": [
                        {"name": "models", "emptyDir": {"sizeLimit": storage()}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
                        {"name": "admin-token", "secret": {"secretName": ADMIN_TOKEN_SECRET, "defaultMode": 0o440}},
                        # Optional: without the Secret the folder is empty and no header is sent.
                        {"name": "repository-auth", "secret": {"secretName": REPOSITORY_AUTH_SECRET,
                                                               "defaultMode": 0o440, "optional": True}},
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
