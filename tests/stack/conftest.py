"""The stack tier's session: one real tritonserver and gateway (`toneserve serve`) on the tiny cpu repository."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import Stack, processes_using, stop_stack, wait_for_health


@pytest.fixture(scope="session")
def stack(repository, toneserve_home) -> Stack:
    from toneserve.triton import free_port

    ports = {name: free_port() for name in ("gateway", "http", "grpc", "metrics", "gateway_metrics")}
    log = toneserve_home / "serve.log"
    command = [sys.executable, "-m", "toneserve.cli", "serve", "--repository", str(repository),
               "--port", str(ports["gateway"]), "--triton-http-port", str(ports["http"]),
               "--triton-grpc-port", str(ports["grpc"]), "--triton-metrics-port", str(ports["metrics"]),
               "--metrics-port", str(ports["gateway_metrics"])]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    stack = Stack(f"127.0.0.1:{ports['gateway']}", f"127.0.0.1:{ports['grpc']}",
                  f"127.0.0.1:{ports['http']}", process, log, f"http://127.0.0.1:{ports['gateway_metrics']}/metrics")
    try:
        wait_for_health(stack.gateway, process, log)
        yield stack
    finally:
        code = stop_stack(process)
        leftovers = processes_using(repository)
        assert code == 0, f"serve exited with {code} on Ctrl-C:\n{log.read_text()}"
        assert not leftovers, f"processes outlived the stack: {leftovers}"
