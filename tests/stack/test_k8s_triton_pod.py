"""The Triton container of the Kubernetes base, run for real: its init script, command, flags and probes.

What kube/triton.py renders, with only this machine's paths and free ports put in: the init container's
script fetches the packed tiny repository (file://) and checks its digest; the admin-token wrapper starts
tritonserver (the wheel's Triton 2.51: the NGC 25.07 image's 2.59.1 has the same flags) with every rendered
flag, `--grpc-max-connection-age` and its grace included; the startup, readiness (each of emotion, asr,
vad) and liveness probes pass once the models are loaded; the admin APIs answer only with the token; a
SIGTERM stops the server within the pod's grace period.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from toneserve.gateway.settings import Settings
from toneserve.kube import facts, pack, triton
from toneserve.triton import _server_env, find_binary, free_port, prepare_backends

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "sha256sum", "tar", "sh")),
                                reason="the pod's tools (curl, sha256sum, tar, sh) are not on this machine")


def _local(text: str, ports: dict[int, int], models: str) -> str:
    for pod_port, port in ports.items():
        text = text.replace(f"127.0.0.1:{pod_port}", f"127.0.0.1:{port}").replace(f"-port={pod_port}", f"-port={port}")
    return text.replace("=/models", f"={models}")


def _probe(container: dict, name: str, ports, models) -> subprocess.CompletedProcess:
    command = [_local(part, ports, models) for part in container[name]["exec"]["command"]]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _admin(http_port: int, token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/repository/index", data=b"{}", method="POST")
    if token:
        request.add_header(facts.ADMIN_HEADER, token)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_rendered_triton_container_starts_and_passes_its_probes(repository, tmp_path):
    settings = Settings()
    deployment = triton.deployment(settings)
    spec = deployment["spec"]["template"]["spec"]
    init, container = spec["initContainers"][0], spec["containers"][0]

    # The init container: fetch the artifact, check its sha256, unpack.
    packed = pack.pack(repository, tmp_path / "store")
    models = tmp_path / "models"
    models.mkdir()
    fetched = subprocess.run(["sh", "-c", init["command"][-1].replace("/models", str(models))],
                             env={"PATH": os.environ["PATH"], "REPOSITORY_URL": packed.path.as_uri(),
                                  "REPOSITORY_SHA256": packed.sha256}, capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stderr

    token = tmp_path / "token"
    token.write_text("k8s-test-token-" + "x" * 30)
    ports = {facts.TRITON_HTTP_PORT: free_port(), facts.TRITON_GRPC_PORT: free_port(),
             facts.TRITON_METRICS_PORT: free_port()}
    wrapper = container["command"][2].replace(triton.TOKEN_FILE, str(token))
    args = [_local(a, ports, str(models)) for a in container["args"][1:]]
    # This machine only: gRPC and metrics on loopback (in the pod they face the pod network), the wheel's backends.
    local = ["--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", f"--backend-directory={prepare_backends()}",
             "--allow-gpu-metrics=false"]
    assert container["command"][:2] == ["/bin/sh", "-c"] and container["args"][0] == "tritonserver"
    # An unknown flag would stop tritonserver at once (the startup loop below checks it is running).
    assert {"--grpc-max-connection-age", "--grpc-max-connection-age-grace", "--exit-timeout-secs"} <= {
        a.split("=")[0] for a in args}
    log = open(tmp_path / "triton.log", "wb")
    process = subprocess.Popen(["sh", "-c", wrapper, "tritonserver", str(find_binary()), *args, *local],
                               stdout=log, stderr=subprocess.STDOUT, env=_server_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _probe(container, "startupProbe", ports, str(models)).returncode != 0:
            assert process.poll() is None, (tmp_path / "triton.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Triton not ready within 300 s"
            time.sleep(1)
        for name in ("readinessProbe", "livenessProbe"):
            done = _probe(container, name, ports, str(models))
            assert done.returncode == 0, (name, done.stderr)
        http = ports[facts.TRITON_HTTP_PORT]
        assert _admin(http, None) == 403 and _admin(http, "wrong") == 403
        assert _admin(http, token.read_text()) == 200
        # The readiness probe fails for a model the repository lacks: it really asks per model.
        readiness = container["readinessProbe"]["exec"]["command"][-1].replace("/v2/models/vad/", "/v2/models/nope/")
        assert subprocess.run(["sh", "-c", _local(readiness, ports, str(models))], capture_output=True).returncode
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=spec["terminationGracePeriodSeconds"])
        assert time.monotonic() - started < spec["terminationGracePeriodSeconds"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_a_weak_admin_token_stops_the_pod(tmp_path):
    container = triton.deployment(Settings())["spec"]["template"]["spec"]["containers"][0]
    token = tmp_path / "token"
    token.write_text("short")
    done = subprocess.run(["sh", "-c", container["command"][2].replace(triton.TOKEN_FILE, str(token)),
                           "tritonserver", "true"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "need 32 or more characters" in done.stderr
