"""What the Kubernetes manifests share with docker-compose.yml and the images, said once here.

tests/deploy/test_k8s_render.py checks each fact against docker-compose.yml and deploy/, so the two
deployments cannot drift apart: the same images, the same Triton flags, the same admin-token rule.
"""
from __future__ import annotations

from toneserve.contract import ASR, EMOTION, VAD

# The images docker-compose.yml builds (deploy/triton/Dockerfile pins the NGC base, 25.07 = Triton 2.59.1).
TRITON_IMAGE = "toneserve/tritonserver:25.07-py3-toneserve0.1.0"
GATEWAY_IMAGE = "toneserve/gateway:0.1.0"
# Triton without CUDA, for CPU nodes (deploy/triton-cpu/Dockerfile; compose's cpu profile): the same
# tritonserver flags and admin-token wrapper, `tritonserver` on PATH, the cpu profile's repository.
TRITON_CPU_IMAGE = "toneserve/tritonserver-cpu:0.1.0"
# The init container that fetches the packed repository: curl, sha256sum and tar (busybox) on Alpine.
FETCH_IMAGE = "curlimages/curl:8.11.1"
# How long pulling each image may take on a node that has none of its layers, for the Deployments'
# progress deadlines: the NGC-based Triton image is ~10 GB compressed (about 15 min at ~12 MB/s); the
# gateway's and the fetcher's are small.
IMAGE_PULL_S = {"triton": 900, "gateway": 300, "fetch": 120}

TRITON_HTTP_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT = 8000, 8001, 8002
GATEWAY_PORT, GATEWAY_METRICS_PORT = 50051, 9464
# The gateway's HTTP/JSON API (`--http-port`): TLS and API keys as on the gRPC port, when they are given.
GATEWAY_HTTP_PORT = 8080
# uid of the gateway image's user (deploy/gateway/Dockerfile) and of the NGC image's triton-server user.
GATEWAY_UID, TRITON_UID = 10001, 1000

# The models whose readiness makes a Triton pod ready: the two ensembles and the VAD the gateway calls.
READY_MODELS = (EMOTION, ASR, VAD)

# Triton's flags, as compose passes them (the shell wrapper adds the restricted-API flags).
TRITON_FLAGS = (
    "--model-repository=/models",
    "--model-control-mode=none",
    "--strict-readiness=true",
    "--exit-on-error=true",
    "--http-address=127.0.0.1",
    f"--http-port={TRITON_HTTP_PORT}",
    f"--grpc-port={TRITON_GRPC_PORT}",
    f"--metrics-port={TRITON_METRICS_PORT}",
    "--allow-metrics=true",
    "--allow-gpu-metrics=true",
    "--allow-cpu-metrics=true",
)
# Triton has no authentication: its admin APIs answer only requests with this header and the token.
ADMIN_APIS = "shared-memory,model-repository,logging,trace"
ADMIN_HEADER = "toneserve-admin"


def admin_wrapper(token_file: str) -> str:
    """The shell that reads Triton's admin token, refuses a weak one, and starts tritonserver ("$@")
    with the admin APIs restricted to requests carrying it (docker-compose.yml runs the same)."""
    return (f'token=$(cat {token_file}) && [ ${{#token}} -ge 32 ] '
            '&& case $token in *[!A-Za-z0-9_-]*) false;; esac '
            '|| { echo "triton_admin_token: need 32 or more characters of A-Z a-z 0-9 _ -" >&2; exit 1; }; '
            'exec "$@" '
            f'--grpc-restricted-protocol={ADMIN_APIS}:{ADMIN_HEADER}=$token '
            f'--http-restricted-api={ADMIN_APIS}:{ADMIN_HEADER}=$token')


def gateway_args(triton_url: str, api_keys: str, tls_cert: str, tls_key: str) -> list[str]:
    """The gateway's command line (compose and the image's CMD, with their own paths and Triton address)."""
    return ["toneserve", "gateway", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--triton-url", triton_url,
            "--http-port", str(GATEWAY_HTTP_PORT), "--metrics-host", "0.0.0.0", "--metrics-port",
            str(GATEWAY_METRICS_PORT), "--api-keys", api_keys, "--tls-cert", tls_cert, "--tls-key", tls_key]
