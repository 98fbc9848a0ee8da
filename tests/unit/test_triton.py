"""The embedded tritonserver launcher's clear errors before it starts anything."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

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


_MMAPPED_AFTER_A_FREE = """
import ctypes, sys
from toneserve.triton import bound_malloc

libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no mallinfo2")
    sys.exit(0)
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
print("bound" if sys.argv[1] == "bound" and bound_malloc() else "default")
block = libc.malloc(1 << 20)  # over glibc's starting threshold (128 KB): mmapped; freeing it raises the threshold
libc.free(block)
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


@pytest.mark.parametrize("mode", ["default", "bound"])
def test_bound_malloc_fixes_this_process_mmap_threshold(mode):
    """The gateway's own process (GLIBC_TUNABLES is read only at a process's start): after bound_malloc() a 1 MB
    block is still mmapped after one was freed (the fixed 256 KB threshold), where glibc's default has raised its
    threshold and serves it from the heap, whose freed pages stay resident."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _MMAPPED_AFTER_A_FREE, mode], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    if out == ["no", "mallinfo2"]:
        pytest.skip("this C library has no mallinfo2 (glibc < 2.33 or not glibc)")
    assert out == [mode, "1" if mode == "bound" else "0"]


def test_bound_malloc_keeps_the_callers_own_tunables(monkeypatch):
    from toneserve.triton import bound_malloc

    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert bound_malloc() is False
