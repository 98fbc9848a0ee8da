"""API keys per tenant, per-tenant limits and TLS, on real gateways against the session's Triton."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def keyed(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    keys = folder / "keys.txt"
    keys.write_text("# key tenant\nk-acme-123 acme\nk-globex-456 globex   # second tenant\n")
    with gateway_process(stack.triton_grpc, folder / "gateway.log", "--api-keys", str(keys),
                         "--max-requests-per-tenant", "1") as gateway:
        yield gateway


def analyze(address: str, audio: bytes, key: str | None = None, credentials=None):
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        metadata = [("authorization", f"Bearer {key}")] if key else None
        return pb_grpc.AnalyzerStub(channel).Analyze(pb.AnalyzeRequest(audio=audio), metadata=metadata, timeout=60)


@pytest.mark.parametrize("key", [None, "k-wrong", "k-acme-12"])
def test_a_missing_or_wrong_key_is_unauthenticated(keyed, audio, key):
    with pytest.raises(grpc.RpcError) as error:
        analyze(keyed.address, audio, key)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(error.value.trailing_metadata())["toneserve-error-code"] == "UNAUTHENTICATED"


def test_a_known_key_is_served_and_counted_for_its_tenant(keyed, audio):
    assert analyze(keyed.address, audio, "k-globex-456").segments
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
        first = stub.AnalyzeUpload.future(slow_upload(), metadata=[("authorization", "Bearer k-acme-123")], timeout=120)
        time.sleep(0.5)
        try:
            with pytest.raises(grpc.RpcError) as error:
                analyze(keyed.address, audio, "k-acme-123")
            assert analyze(keyed.address, audio, "k-globex-456").segments
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
