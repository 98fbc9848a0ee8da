"""The embedded tritonserver launcher's clear errors before it starts anything."""
from __future__ import annotations

import socket

import pytest

from tests.support import triton_ports
from toneserve.triton import EmbeddedTriton, TritonPorts, TritonStartError, free_port


def test_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = TritonPorts(free_port(), port, free_port())
        with pytest.raises(TritonStartError, match=f"grpc port {port} .* already in use"):
            EmbeddedTriton(tmp_path, ports).start()


def test_missing_binary_and_missing_repository_are_clear(tmp_path):
    with pytest.raises(TritonStartError, match="missing or not executable"):
        EmbeddedTriton(tmp_path, triton_ports(), binary=tmp_path / "no-tritonserver").start()
    with pytest.raises(TritonStartError, match="does not exist"):
        EmbeddedTriton(tmp_path / "nowhere", triton_ports()).start()


def test_the_server_gets_the_measured_malloc_settings_unless_the_caller_has_its_own(monkeypatch):
    """tritonserver and its stubs run with MALLOC_TUNABLES (2 arenas, a fixed mmap threshold), as the images do:
    one value, checked here against both Dockerfiles; a GLIBC_TUNABLES of the caller's own wins."""
    from pathlib import Path

    from toneserve.triton import MALLOC_TUNABLES, _server_env

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert _server_env()["GLIBC_TUNABLES"] == MALLOC_TUNABLES
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert _server_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"
    root = Path(__file__).resolve().parents[2]
    for image in ("triton-cpu", "gateway"):
        text = (root / "deploy" / image / "Dockerfile").read_text()
        assert f"GLIBC_TUNABLES={MALLOC_TUNABLES}" in text, f"deploy/{image}/Dockerfile: GLIBC_TUNABLES differs"
