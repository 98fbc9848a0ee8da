"""`--health-port`: standard gRPC health checking alone, in plaintext, beside a TLS-only gateway.

Kubernetes' own gRPC probes speak no TLS (kube/gateway.py probes this port). The port tells what the
main port's health tells, Triton's outages included, and serves nothing else: no Analyzer, no reflection.
"""
from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import self_signed
from toneserve.gateway import server as server_module
from toneserve.gateway.settings import Settings
from toneserve.triton import free_port
from toneserve.v1 import toneserve_pb2, toneserve_pb2_grpc


class FakeTriton:
    """Inference's surface the server uses at start, with a readiness the test switches."""
    is_ready = True
    replicas = 1

    def __init__(self, url: str, timeout: float):
        self.models: dict = {}

    async def count_replicas(self) -> int:
        return self.replicas

    async def load(self) -> None:
        pass

    async def ready(self, timeout: float) -> bool:
        return FakeTriton.is_ready

    async def close(self) -> None:
        pass


async def _status(address: str, service: str = "") -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=3)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_the_health_port_follows_triton_and_serves_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "Inference", FakeTriton)
    FakeTriton.is_ready = True
    cert, key = self_signed(tmp_path)
    port, health_port = free_port(), free_port()

    async def scenario():
        gateway = server_module.Gateway("127.0.0.1:1", port=port, tls=(key.read_bytes(), cert.read_bytes()),
                                        settings=Settings(triton_poll_seconds=0.05), health_port=health_port)
        await gateway.start()
        try:
            health = f"127.0.0.1:{health_port}"
            assert await _status(health) == "SERVING"
            assert await _status(health, server_module.SERVICE_NAME) == "SERVING"
            async with grpc.aio.insecure_channel(health) as channel:  # the API is not on this port
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await toneserve_pb2_grpc.AnalyzerStub(channel).Analyze(toneserve_pb2.AnalyzeRequest(), timeout=3)
                assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError):  # and the main port still speaks TLS only
                await _status(f"127.0.0.1:{port}")
            FakeTriton.is_ready = False
            for _ in range(100):
                if await _status(health) == "NOT_SERVING":
                    break
                await asyncio.sleep(0.05)
            assert await _status(health) == "NOT_SERVING"
        finally:
            await gateway.stop()

    asyncio.run(scenario())


def test_the_cli_takes_the_health_port_and_the_drain():
    from toneserve.cli import parser

    assert parser().parse_args(["gateway"]).health_port == 0  # off unless asked
    assert parser().parse_args(["gateway", "--health-port", "50052"]).health_port == 50052
    assert parser().parse_args(["gateway"]).drain_seconds == 5.0  # a quick stop by hand, as before
    assert parser().parse_args(["serve", "--drain-seconds", "16200"]).drain_seconds == 16200.0


def test_health_says_not_serving_while_the_gateway_drains(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "Inference", FakeTriton)
    FakeTriton.is_ready = True
    port, health_port = free_port(), free_port()
    seen_while_draining: list[str] = []

    async def scenario():
        gateway = server_module.Gateway("127.0.0.1:1", port=port, settings=Settings(triton_poll_seconds=0.05),
                                        health_port=health_port)
        await gateway.start()
        assert await _status(f"127.0.0.1:{health_port}") == "SERVING"
        real_stop = gateway.server.stop

        async def drain(grace):  # what a health checker sees while calls in progress finish
            seen_while_draining.append(await _status(f"127.0.0.1:{health_port}"))
            seen_while_draining.append(await _status(f"127.0.0.1:{health_port}", server_module.SERVICE_NAME))
            await real_stop(grace)

        gateway.server.stop = drain
        await gateway.stop(grace=1.0)

    asyncio.run(scenario())
    assert seen_while_draining == ["NOT_SERVING", "NOT_SERVING"]
