"""The gateway when Triton is missing or goes away: clear errors, never a hang or a traceback."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.stack.gateway_alone import gateway_without_triton, health, http_call
from tests.support import stop_stack, wait_for_health
from toneserve.client.sdk import AnalyzeError, Client
from toneserve.samples import speechlike, wav_bytes
from toneserve.triton import EmbeddedTriton, TritonPorts, free_port


def test_a_gateway_started_before_triton_waits_not_serving_then_serves(repository, tmp_path):
    """No Triton at start: the gateway listens, NOT_SERVING (gRPC and HTTP health), answers requests
    TRITON_UNAVAILABLE with a retry hint, tries again with a backoff; Triton started late, it serves."""
    ports = TritonPorts(free_port(), free_port(), free_port())
    http = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "gateway.log"
    gateway, address = gateway_without_triton(f"127.0.0.1:{ports.grpc}", log, "--http-port", http.rsplit(":", 1)[1])
    triton = None
    try:
        assert health(address) == "NOT_SERVING"
        clip = wav_bytes(speechlike(2.0), 16000)
        with Client(address, max_attempts=1) as client:
            with pytest.raises(AnalyzeError) as error:
                client.analyze(clip, timeout=30)
        assert (error.value.status, error.value.code) == ("UNAVAILABLE", "TRITON_UNAVAILABLE")
        assert http_call(f"{http}/v1/health")[::2] == (503, {"status": "NOT_SERVING"})
        status, headers, body = http_call(f"{http}/v1/analyze", clip)
        assert (status, body["code"]) == (503, "TRITON_UNAVAILABLE") and int(headers["Retry-After"]) >= 1
        deadline = time.monotonic() + 30  # tried again, each failure logged with the wait before the next try
        while log.read_text().count("trying again in") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert gateway.poll() is None and health(address) == "NOT_SERVING"
        triton = EmbeddedTriton(repository, ports, log_path=tmp_path / "triton.log").start()
        wait_for_health(address, gateway, log, timeout=90)  # the backoff's cap (30 s) and then some
        with Client(address) as client:
            assert len(client.analyze(clip).segments) == 1
        assert http_call(f"{http}/v1/health")[::2] == (200, {"status": "SERVING"})
    finally:
        if triton is not None:
            triton.stop()
        assert stop_stack(gateway) == 0, log.read_text()


def test_sigterm_stops_a_gateway_still_waiting_for_triton_at_once(tmp_path):
    log = tmp_path / "gateway.log"
    gateway, address = gateway_without_triton(f"127.0.0.1:{free_port()}", log)
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("trying again in") < 2:  # asleep in the backoff
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        gateway.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert gateway.wait(15) == 0, log.read_text()
        assert time.monotonic() - started < 5, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()


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
