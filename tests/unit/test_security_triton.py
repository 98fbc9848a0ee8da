"""The embedded tritonserver (Triton 2.51, older than the 2025 fixes) listens on loopback only: 127.0.0.1
unless told another address of 127.0.0.0/8 (replicas sharing a port), never anything else."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from toneserve import triton
from toneserve.triton import EmbeddedTriton, TritonPorts, TritonStartError


def test_every_triton_endpoint_binds_loopback(tmp_path):
    server = EmbeddedTriton(tmp_path, TritonPorts(18000, 18001, 18002))
    command = server._command(Path("/bin/tritonserver"), tmp_path / "backends")
    addresses = dict(flag.split("=", 1) for flag in command if "-address=" in flag)
    assert addresses == {"--http-address": "127.0.0.1", "--grpc-address": "127.0.0.1",
                         "--metrics-address": "127.0.0.1"}
    assert server.grpc_url == "127.0.0.1:18001" and server.http_url == "http://127.0.0.1:18000"


def test_no_caller_can_choose_another_address(tmp_path):
    assert "host" not in inspect.signature(EmbeddedTriton).parameters
    with pytest.raises(TypeError):
        EmbeddedTriton(tmp_path, host="0.0.0.0")  # type: ignore[call-arg]
    assert triton.HOST == "127.0.0.1"


@pytest.mark.parametrize("address", ["0.0.0.0", "10.0.0.5", "192.168.1.2", "::", "::1", "localhost",
                                     "triton.example.com", "127.0.0.1.nip.io", ""])
def test_only_loopback_addresses_can_be_chosen(tmp_path, address):
    with pytest.raises(TritonStartError, match="loopback"):
        EmbeddedTriton(tmp_path, loopback=address)


def test_a_replica_listens_on_another_loopback_address(tmp_path):
    server = EmbeddedTriton(tmp_path, TritonPorts(18000, 18001, 18002), loopback="127.0.0.2", max_connection_age=5)
    command = server._command(Path("/bin/tritonserver"), tmp_path / "backends")
    addresses = {flag.split("=", 1)[1] for flag in command if "-address=" in flag}
    assert addresses == {"127.0.0.2"} and server.grpc_url == "127.0.0.2:18001"
    assert "--grpc-max-connection-age=5000" in command and "--grpc-max-connection-age-grace=5000" in command
    assert not any("connection-age" in flag for flag in EmbeddedTriton(tmp_path)._command(Path("/b"), tmp_path))


def test_serve_starts_triton_without_the_gateways_host():
    """`toneserve serve --host X` gives X to the gateway only."""
    from toneserve import cli

    source = inspect.getsource(cli.cmd_serve)
    assert "EmbeddedTriton(repository, _triton_ports(args))" in source and "host" not in source.split(
        "EmbeddedTriton(", 1)[1].split(")", 1)[0]
