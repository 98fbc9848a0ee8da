"""The SDK spreads calls over every server a `dns:///` (or multi-address) target resolves to: a headless
Service's name gives every gateway pod its share of one client's calls, not only the first pod."""
from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from toneserve.client.connection import Connection
from toneserve.triton import free_port


def _server(address: str, status: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    return server


def _statuses(address: str, calls: int = 12) -> set[int]:
    with Connection.resolve(address, tls=False).channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True).status
                for _ in range(calls)}


def test_calls_go_round_robin_over_the_targets_addresses():
    port = free_port()
    # Two servers on one port of two loopback addresses, told apart by the status they answer.
    servers = [_server(f"127.0.0.1:{port}", health_pb2.HealthCheckResponse.SERVING),
               _server(f"127.0.0.2:{port}", health_pb2.HealthCheckResponse.NOT_SERVING)]
    try:
        both = {health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING}
        assert _statuses(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}") == both
        assert len(_statuses(f"127.0.0.1:{port}")) == 1  # one address: one server, as before
    finally:
        for server in servers:
            server.stop(0)
