"""The embedded tritonserver (Triton 2.51, older than the 2025 fixes) listens on 127.0.0.1 only."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from toneserve import triton
from toneserve.triton import EmbeddedTriton, TritonPorts


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


def test_serve_starts_triton_without_the_gateways_host():
    """`toneserve serve --host X` gives X to the gateway only."""
    from toneserve import cli

    source = inspect.getsource(cli.cmd_serve)
    assert "EmbeddedTriton(repository, _triton_ports(args))" in source and "host" not in source.split(
        "EmbeddedTriton(", 1)[1].split(")", 1)[0]
