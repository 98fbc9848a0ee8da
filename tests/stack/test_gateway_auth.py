"""API keys per tenant, per-tenant limits and TLS, on real gateways against the session's Triton."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from tests.support import gateway_process, metric, self_signed
from toneserve.samples import call, wav_bytes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def audio() -> bytes:
    return wav_bytes(call(6.0, rate=16000, seed=3).samples, 16000)


# Keys fit to guard a gateway: printable ASCII, at least 128 bits (the gateway checks at load).
ACME = "k-acme-Zt7q8mXo2Lw1bV9cR4yPn6Ks3Ud0"
GLOBEX = "k-globex-3f9a0c6e1b7d42a8e5f01c9b6d3a"
INITECH = "k-initech-Qp4Rw7Ty1Ui9Oa2Sd5Fg8Hj3Kl6"


@pytest.fixture(scope="module")
def keyed(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    keys = folder / "keys.txt"
    # globex's key as its digest only: the file need not hold the key itself.
    keys.write_text(f"# key tenant\n{ACME} acme\nsha256:{hashlib.sha256(GLOBEX.encode()).hexdigest()} globex  # 2nd\n")
    with gateway_process(stack.triton_grpc, folder / "gateway.log", "--api-keys", str(keys),
                         "--max-requests-per-tenant", "1") as gateway:
        yield gateway


def analyze(address: str, audio: bytes, key: str | None = None, credentials=None):
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        metadata = [("authorization", f"Bearer {key}")] if key else None
        return pb_grpc.AnalyzerStub(channel).Analyze(pb.AnalyzeRequest(audio=audio), metadata=metadata, timeout=60)


@pytest.mark.parametrize("key", [None, "k-wrong", ACME[:-1], hashlib.sha256(GLOBEX.encode()).hexdigest()])
def test_a_missing_or_wrong_key_is_unauthenticated(keyed, audio, key):
    with pytest.raises(grpc.RpcError) as error:
        analyze(keyed.address, audio, key)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(error.value.trailing_metadata())["toneserve-error-code"] == "UNAUTHENTICATED"


def test_a_known_key_is_served_and_counted_for_its_tenant(keyed, audio):
    assert analyze(keyed.address, audio, GLOBEX).segments
    assert metric(keyed.metrics, "toneserve_requests_total", rpc="Analyze", code="OK", tenant="globex") >= 1
    assert metric(keyed.metrics, "toneserve_audio_seconds_total", rpc="Analyze", tenant="globex") >= 6.0


def test_one_tenant_at_its_limit_does_not_block_another(keyed, audio):
    """--max-requests-per-tenant 1: acme's second request is OVERLOADED while globex is still served."""
    release = threading.Event()

    def slow_upload():
        yield pb.UploadRequest(options=pb.AnalyzeRequest())
        release.wait(60)
        yield pb.UploadRequest(chunk=audio)

    with grpc.insecure_channel(keyed.address) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        first = stub.AnalyzeUpload.future(slow_upload(), metadata=[("authorization", f"Bearer {ACME}")], timeout=120)
        time.sleep(0.5)
        try:
            with pytest.raises(grpc.RpcError) as error:
                analyze(keyed.address, audio, ACME)
            assert analyze(keyed.address, audio, GLOBEX).segments
        finally:
            release.set()
        assert first.result().segments
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "acme" in error.value.details()


def test_health_stays_open_without_a_key(keyed):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(keyed.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_tls_serves_clients_that_trust_the_certificate_only(stack, tmp_path, audio):
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")
    with gateway_process(stack.triton_grpc, tmp_path / "gw.log", "--tls-cert", str(cert), "--tls-key", str(key),
                         root_certificates=cert.read_bytes()) as gateway:
        trusted = grpc.ssl_channel_credentials(cert.read_bytes())
        assert analyze(gateway.address, audio, credentials=trusted).segments
        for credentials in (None, grpc.ssl_channel_credentials(other.read_bytes())):  # plaintext; a stranger's root
            with pytest.raises(grpc.RpcError) as error:
                analyze(gateway.address, audio, credentials=credentials)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sighup_reloads_the_key_file_and_a_bad_file_keeps_the_old_keys(stack, tmp_path, audio):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ACME} acme\n")
    with gateway_process(stack.triton_grpc, tmp_path / "gateway.log", "--api-keys", str(keys)) as gateway:
        assert analyze(gateway.address, audio, ACME).segments
        keys.write_text(f"{INITECH} initech\n")
        gateway.process.send_signal(signal.SIGHUP)
        assert _eventually(lambda: _served(gateway.address, audio, INITECH)), "the new key is served"
        assert not _served(gateway.address, audio, ACME), "the removed key is refused"

        keys.write_text("too-short initech\n")
        gateway.process.send_signal(signal.SIGHUP)
        assert _eventually(lambda: "previous keys stay in use" in gateway.log.read_text()), gateway.log.read_text()
        assert "too-short" not in gateway.log.read_text(), "the log never quotes a key"
        assert _served(gateway.address, audio, INITECH) and gateway.process.poll() is None


def _served(address: str, audio: bytes, key: str) -> bool:
    try:
        return bool(analyze(address, audio, key).segments)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        return False


def _eventually(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_the_network_without_keys_is_refused_and_with_keys_served(stack, tmp_path, audio):
    """--host 0.0.0.0: no keys, the gateway exits at once with the reason; with keys it serves them."""
    result = subprocess.run([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", stack.triton_grpc,
                             "--host", "0.0.0.0", "--port", "0", "--metrics-port", "0"],
                            capture_output=True, text=True, timeout=120, env=_environment())
    assert result.returncode == 2 and "refusing to listen on 0.0.0.0 without API keys" in result.stderr, result

    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ACME} acme\n")
    with gateway_process(stack.triton_grpc, tmp_path / "gateway.log", "--host", "0.0.0.0",
                         "--api-keys", str(keys)) as gateway:
        assert analyze(gateway.address, audio, ACME).segments
        with pytest.raises(grpc.RpcError) as error:
            analyze(gateway.address, audio)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "plaintext" in gateway.log.read_text(), "the missing TLS is warned about"


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TONESERVE_API_KEYS")}
