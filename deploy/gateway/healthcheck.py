"""Container health check of the gateway: standard gRPC health checking (grpc.health.v1).

    python healthcheck.py [HOST:PORT] [SERVICE]

Exit 0 when the server answers SERVING for SERVICE ("" = the whole server, the default), 1 for
any other status, an RPC error or no answer within 3 s. Uses only grpcio and
grpcio-health-checking, which the gateway image has anyway.
"""
from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def check(address: str, service: str = "") -> tuple[bool, str]:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        return False, f"{address}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main(argv: list[str]) -> int:
    address = argv[1] if len(argv) > 1 else "127.0.0.1:50051"
    service = argv[2] if len(argv) > 2 else ""
    healthy, message = check(address, service)
    print(("healthy " if healthy else "unhealthy ") + message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
