"""The containers of the Kubernetes base, run for real: init script, commands, flags and probes.

What kube/triton.py and kube/gateway.py render, with only this machine's paths and free ports put in
(and loopback for the addresses that face the pod network in a cluster):
- the init container's script fetches the packed tiny repository (file://) and checks its digest;
- the admin-token wrapper starts tritonserver (the wheel's Triton 2.51: the NGC 25.07 image's 2.59.1 has
  the same flags) with every rendered flag, `--grpc-max-connection-age` and its grace included; the
  startup, readiness (each of emotion, asr, vad) and liveness probes pass once the models are loaded,
  and readiness fails for a model the repository lacks; the admin APIs answer only with the token; a
  SIGTERM stops the server within the pod's grace period; a weak token stops the pod at once;
- the gateway's rendered command line (keys file, TLS, a `dns:///` Triton target, `--health-port`,
  `--http-port`, `--drain-seconds`) serves: the kubelet's gRPC probe target answers SERVING in plaintext
  while the API port speaks TLS only; once it does, the HTTP port answers /v1/health SERVING over HTTPS
  only (what the pod's one readiness stands for), and an idle gateway stops at once on SIGTERM despite
  its long drain.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import self_signed
from toneserve.gateway.settings import Settings
from toneserve.kube import facts, gateway, pack, triton
from toneserve.triton import _server_env, find_binary, free_port, prepare_backends

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "sha256sum", "tar", "sh")),
                                reason="the pod's tools (curl, sha256sum, tar, sh) are not on this machine")


def _local(text: str, ports: dict[int, int], models: str = "/models") -> str:
    for pod_port, port in ports.items():
        text = (text.replace(f"127.0.0.1:{pod_port}", f"127.0.0.1:{port}").replace(f"-port={pod_port}", f"-port={port}"))
    return text.replace("=/models", f"={models}")


class Pod:
    def __init__(self, spec: dict, ports: dict[int, int], models: str, process: subprocess.Popen, token: str, log):
        self.spec, self.ports, self.models, self.process, self.token, self.log = spec, ports, models, process, token, log
        self.container = spec["containers"][0]

    def probe(self, name: str) -> subprocess.CompletedProcess:
        command = [_local(part, self.ports, self.models) for part in self.container[name]["exec"]["command"]]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def pod(repository, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("k8s-triton")
    spec = triton.deployment(Settings())["spec"]["template"]["spec"]
    init, container = spec["initContainers"][0], spec["containers"][0]

    # The init container: fetch the artifact, check its sha256, unpack.
    packed = pack.pack(repository, tmp / "store")
    models = tmp / "models"
    models.mkdir()
    fetched = subprocess.run(["sh", "-c", init["command"][-1].replace("/models", str(models))],
                             env={"PATH": os.environ["PATH"], "REPOSITORY_URL": packed.path.as_uri(),
                                  "REPOSITORY_SHA256": packed.sha256}, capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stderr

    token = tmp / "token"
    token.write_text("k8s-test-token-" + "x" * 30)
    ports = {facts.TRITON_HTTP_PORT: free_port(), facts.TRITON_GRPC_PORT: free_port(),
             facts.TRITON_METRICS_PORT: free_port()}
    wrapper = container["command"][2].replace(triton.TOKEN_FILE, str(token))
    assert container["command"][:2] == ["/bin/sh", "-c"] and container["args"][0] == "tritonserver"
    args = [_local(a, ports, str(models)) for a in container["args"][1:]]
    # An unknown flag would stop tritonserver at once (the startup loop below checks it is running).
    assert {"--grpc-max-connection-age", "--grpc-max-connection-age-grace", "--exit-timeout-secs"} <= {
        a.split("=")[0] for a in args}
    # This machine only: gRPC and metrics on loopback (in the pod they face the pod network), the wheel's backends.
    local = ["--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", f"--backend-directory={prepare_backends()}",
             "--allow-gpu-metrics=false"]
    log_path = tmp / "triton.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["sh", "-c", wrapper, "tritonserver", str(find_binary()), *args, *local],
                                   stdout=log, stderr=subprocess.STDOUT, env=_server_env(), start_new_session=True)
    running = Pod(spec, ports, str(models), process, token.read_text(), log_path)
    try:
        deadline = time.monotonic() + 300
        while running.probe("startupProbe").returncode != 0:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "Triton not ready within 300 s"
            time.sleep(1)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _admin(http_port: int, token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/repository/index", data=b"{}", method="POST")
    if token:
        request.add_header(facts.ADMIN_HEADER, token)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_triton_pod_passes_its_probes_and_guards_its_admin_apis(pod):
    for name in ("readinessProbe", "livenessProbe"):
        done = pod.probe(name)
        assert done.returncode == 0, (name, done.stderr)
    # The readiness probe fails for a model the repository lacks: it really asks per model.
    readiness = pod.container["readinessProbe"]["exec"]["command"][-1].replace("/v2/models/vad/", "/v2/models/nope/")
    assert subprocess.run(["sh", "-c", _local(readiness, pod.ports)], capture_output=True).returncode
    http = pod.ports[facts.TRITON_HTTP_PORT]
    assert _admin(http, None) == 403 and _admin(http, "wrong") == 403
    assert _admin(http, pod.token) == 200


def _health(address: str, credentials=None) -> str:
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_the_gateway_pod_serves_its_probe_port_beside_tls(pod, tmp_path):
    container = gateway.deployment(Settings())["spec"]["template"]["spec"]["containers"][0]
    cert, key = self_signed(tmp_path)
    keys = tmp_path / "api_keys.txt"
    keys.write_text(f"sha256:{hashlib.sha256(b'k8s-test-key-' + b'y' * 40).hexdigest()} acme\n")
    api, web, metrics, health = free_port(), free_port(), free_port(), free_port()
    swap = {f"{gateway.KEYS_DIR}/api_keys.txt": str(keys), f"{gateway.TLS_DIR}/tls.crt": str(cert),
            f"{gateway.TLS_DIR}/tls.key": str(key), gateway.triton_url(): f"dns:///localhost:{pod.ports[8001]}",
            str(facts.GATEWAY_PORT): str(api), str(facts.GATEWAY_METRICS_PORT): str(metrics),
            str(gateway.HEALTH_PORT): str(health), str(facts.GATEWAY_HTTP_PORT): str(web),
            "0.0.0.0": "127.0.0.1"}
    args = [swap.get(a, a) for a in container["args"]]
    assert args[0] == "toneserve" and "--drain-seconds" in args and str(web) in args
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "toneserve", *args[1:]], stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 120, None
        while status != "SERVING":
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"health port not SERVING: {status}"
            try:
                status = _health(f"127.0.0.1:{health}")
            except grpc.RpcError:
                time.sleep(0.5)
        # The kubelet's gRPC probe has no TLS: this port answers in plaintext, the API port only over TLS.
        assert _health(f"127.0.0.1:{api}", grpc.ssl_channel_credentials(cert.read_bytes())) == "SERVING"
        with pytest.raises(grpc.RpcError):
            _health(f"127.0.0.1:{api}")
        # The HTTP port is up by then (the gateway says SERVING only after it listens) and agrees, over
        # HTTPS with the pod's certificate, as a kubelet httpGet probe (scheme HTTPS, unverified) would see it.
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{web}/v1/health", timeout=5, context=unverified) as reply:
            assert (reply.status, json.loads(reply.read())) == (200, {"status": "SERVING"})
        with urllib.request.urlopen(f"https://localhost:{web}/v1/health", timeout=5,
                                    context=ssl.create_default_context(cafile=str(cert))) as reply:
            assert reply.status == 200
        with pytest.raises((OSError, http.client.HTTPException)):  # no plaintext answer: TLS only
            urllib.request.urlopen(f"http://127.0.0.1:{web}/v1/health", timeout=5).read()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert time.monotonic() - started < 30  # nothing in flight: the long drain does not hold an idle stop
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_stops_triton_within_the_grace_period(pod):
    started = time.monotonic()
    os.killpg(pod.process.pid, signal.SIGTERM)
    pod.process.wait(timeout=pod.spec["terminationGracePeriodSeconds"])
    assert time.monotonic() - started < pod.spec["terminationGracePeriodSeconds"]


def test_a_weak_admin_token_stops_the_pod(tmp_path):
    container = triton.deployment(Settings())["spec"]["template"]["spec"]["containers"][0]
    token = tmp_path / "token"
    token.write_text("short")
    done = subprocess.run(["sh", "-c", container["command"][2].replace(triton.TOKEN_FILE, str(token)),
                           "tritonserver", "true"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "need 32 or more characters" in done.stderr
