"""The gateway when Triton is missing or goes away: clear errors, never a hang or a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import stop_stack, wait_for_health
from toneserve.client.sdk import AnalyzeError, Client
from toneserve.samples import speechlike, wav_bytes
from toneserve.triton import EmbeddedTriton, TritonPorts, free_port


def test_gateway_refuses_to_start_without_triton():
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", f"127.0.0.1:{free_port()}",
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TRITON_UNAVAILABLE" in done.stderr and "Traceback" not in done.stderr


def test_triton_going_away_gives_unavailable_and_the_gateway_survives(repository, tmp_path):
    triton = EmbeddedTriton(repository, TritonPorts(free_port(), free_port(), free_port()),
                            log_path=tmp_path / "triton.log").start()
    port = free_port()
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        gateway = subprocess.Popen([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", triton.grpc_url,
                                    "--port", str(port), "--metrics-port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_health(f"127.0.0.1:{port}", gateway, log, timeout=60)
        clip = wav_bytes(speechlike(2.0), 16000)
        with Client(f"127.0.0.1:{port}") as client:
            assert len(client.analyze(clip).segments) == 1
            triton.stop()
            for _ in range(2):  # and again: the gateway itself is still there
                with pytest.raises(AnalyzeError) as error:
                    client.analyze(clip, timeout=30)
                assert error.value.status == "UNAVAILABLE"
                assert error.value.code == "TRITON_UNAVAILABLE"
    finally:
        triton.stop()
        assert stop_stack(gateway) == 0, log.read_text()
