"""Container health check of the gateway: standard gRPC health checking (grpc.health.v1).

    python healthcheck.py [HOST:PORT] [SERVICE] [--ca PEM [--name NAME]]

Exit 0 when the server answers SERVING for SERVICE ("" = the whole server, the default), 1 for
any other status, an RPC error or no answer within 3 s. `--ca`: the gateway serves TLS; trust this
certificate (for a self-signed gateway, its own certificate) and expect the name NAME in it (default
localhost), since the check connects to 127.0.0.1 whatever name the certificate is for. Uses only
grpcio and grpcio-health-checking, which the gateway image has anyway.
"""
from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def check(address: str, service: str = "", ca: bytes | None = None, name: str | None = None) -> tuple[bool, str]:
    if ca is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", name)] if name else []
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca), options=options)
    try:
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        return False, f"{address}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="healthcheck.py")
    p.add_argument("address", nargs="?", default="127.0.0.1:50051")
    p.add_argument("service", nargs="?", default="")
    p.add_argument("--ca", help="TLS: the PEM certificate(s) to trust")
    p.add_argument("--name", default="localhost", help="TLS: the name the certificate must hold (default localhost)")
    args = p.parse_args(argv[1:])
    try:
        ca = open(args.ca, "rb").read() if args.ca else None
    except OSError as exc:
        print(f"unhealthy: cannot read {args.ca}: {exc.strerror}", file=sys.stderr)
        return 1
    healthy, message = check(args.address, args.service, ca, args.name if ca else None)
    print(("healthy " if healthy else "unhealthy ") + message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
