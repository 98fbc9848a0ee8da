"""A gateway process of its own, with or without a Triton behind it, for the tests of what it does itself
(start, connections, drain, TLS); and the calls those tests make to it."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toneserve.triton import free_port


def health(address: str, root_certificates: bytes | None = None) -> str:
    """The gateway's gRPC health; over TLS when `root_certificates` (trusted alone) are given."""
    channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates),
                                   options=[("grpc.use_local_subchannel_pool", 1)])  # a connection of its own
               if root_certificates else grpc.insecure_channel(address))
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def http_call(url: str, body: bytes | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def gateway_without_triton(triton_grpc: str, log, *flags: str,
                           root_certificates: bytes | None = None) -> tuple[subprocess.Popen, str]:
    """A gateway against a Triton that is not there (yet), once its gRPC health answers (over TLS trusting
    `root_certificates` where given)."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", triton_grpc,
                                    "--port", str(port), "--metrics-port", "0", *flags],
                                   stdout=out, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the gateway exited ({process.returncode}):\n{log.read_text()}"
        try:
            health(address, root_certificates)
            return process, address
        except grpc.RpcError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
