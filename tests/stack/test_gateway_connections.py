"""--max-connection-age: a real gateway closes a client's connection once it is that old (gRPC GOAWAY; HTTP
`Connection: close`), and the client's next call reconnects and succeeds. Triton is not needed: health
checks answer without it. Which connections exist is read from the kernel (/proc/net/tcp)."""
from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.stack.gateway_alone import gateway_without_triton
from tests.support import stop_stack
from toneserve.triton import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="no /proc/net/tcp to read sockets from")


def client_ports(server_port: int) -> set[int]:
    """Local ports of the established connections to `server_port` (the gateway's clients: this test's), IPv4 or
    IPv6 sockets (gRPC connects IPv4 through v4-mapped IPv6 ones)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (Path(table).read_text().splitlines()[1:] if Path(table).is_file() else []):
            local, remote, state = line.split()[1:4]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _check(stub) -> None:
    stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


@pytest.mark.parametrize("age", [1.0, None])
def test_grpc_connections_are_closed_at_their_age_and_the_next_call_reconnects(tmp_path, age):
    flags = ["--max-connection-age", str(age), "--max-connection-age-grace", "5"] if age else []
    gateway, address = gateway_without_triton(f"127.0.0.1:{free_port()}", tmp_path / "gateway.log", *flags)
    port = int(address.rsplit(":", 1)[1])
    states: list[grpc.ChannelConnectivity] = []
    changed = threading.Event()

    def seen(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        changed.set()

    try:
        with grpc.insecure_channel(address) as channel:
            channel.subscribe(seen)
            stub = health_pb2_grpc.HealthStub(channel)
            _check(stub)
            first = client_ports(port)
            assert len(first) == 1
            ready_at = len(states)
            time.sleep(3)  # three ages; the channel makes no call meanwhile
            later = client_ports(port)
            after_age = states[ready_at:]
            _check(stub)  # the next call: reconnects where the server closed the connection
            again = client_ports(port)
    finally:
        assert stop_stack(gateway) == 0
    if age:
        assert later == set()  # the server closed it (GOAWAY), the client did not hold on to it
        assert grpc.ChannelConnectivity.IDLE in after_age, states
        assert len(again) == 1 and again != first
    else:
        assert later == again == first and after_age == []


@pytest.mark.parametrize("age", [1.0, None])
def test_http_keep_alive_ends_at_the_connections_age(tmp_path, age):
    http_port = free_port()
    flags = ["--max-connection-age", str(age)] if age else []
    gateway, _ = gateway_without_triton(f"127.0.0.1:{free_port()}", tmp_path / "gateway.log",
                                        "--http-port", str(http_port), *flags)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        answers = []
        for wait in (0, 1.5, 0):  # the second request comes when the connection is past its age
            time.sleep(wait)
            connection.request("GET", "/v1/health")
            response = connection.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection"), client_ports(http_port)))
        connection.close()
    finally:
        assert stop_stack(gateway) == 0
    assert [status for status, _, _ in answers] == [503, 503, 503]  # NOT_SERVING: no Triton; answered all the same
    (_, first_header, first), (_, second_header, _), (_, _, third) = answers
    assert len(first) == 1 and first_header != "close"
    if age:
        assert second_header == "close"
        assert len(third) == 1 and third != first  # a new connection
    else:
        assert second_header != "close" and third == first
