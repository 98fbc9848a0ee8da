"""Per-tenant audio quotas on a real gateway: failures are charged too, over quota is
RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with a retry hint, other tenants are untouched."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from tests.support import gateway_process, metric
from toneserve.samples import speechlike, wav_bytes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

ACME = "k-acme-quota-Zt7q8mXo2Lw1bV9cR4yPn6Ks3Ud0"
GLOBEX = "k-globex-quota-3f9a0c6e1b7d42a8e5f01c9b6d3a"


def analyze(stub, audio: bytes, key: str) -> tuple[str, dict]:
    try:
        stub.Analyze(pb.AnalyzeRequest(audio=audio), metadata=[("authorization", f"Bearer {key}")], timeout=60)
        return "OK", {}
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata())
        assert error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or trailers["toneserve-error-code"] == "QUOTA_EXCEEDED"
        return trailers["toneserve-error-code"], trailers


def charged(url: str, expected: float, within: float = 5.0) -> float:
    """acme's charged seconds once they reach `expected` (or whatever they are after `within` s): a failed
    request is answered before the gateway's bookkeeping after it runs, so the metric can lag the answer."""
    deadline = time.monotonic() + within
    while True:
        value = metric(url, "toneserve_tenant_audio_seconds_total", tenant="acme")
        if value == pytest.approx(expected) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_tenant_over_its_day_quota_is_refused_with_a_hint_and_failures_count(stack, tmp_path):
    keys = tmp_path / "keys.txt"
    # The day window: a minute's could roll over between two requests and reset the count.
    keys.write_text(f"{ACME} acme seconds_per_day=5\n{GLOBEX} globex\n")
    silence, speech = wav_bytes(np.zeros(48000, np.float32), 16000), wav_bytes(speechlike(3.0, seed=2), 16000)
    with gateway_process(stack.triton_grpc, tmp_path / "gateway.log", "--api-keys", str(keys)) as gateway, \
            grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        assert analyze(stub, silence, ACME)[0] == "NO_SPEECH"  # failed, yet 3 s decoded: charged
        assert charged(gateway.metrics, 3.0) == pytest.approx(3.0)
        assert analyze(stub, speech, ACME)[0] == "OK"  # 3 s used of 5: admitted, then charged in full
        code, trailers = analyze(stub, speech, ACME)
        assert code == "QUOTA_EXCEEDED"
        now = time.time()
        until_midnight_ms = (86400 - now % 86400) * 1000
        assert 0 < int(trailers["grpc-retry-pushback-ms"]) <= until_midnight_ms + 1000
        assert analyze(stub, speech, GLOBEX)[0] == "OK"  # no quota of its own, none by default
        assert charged(gateway.metrics, 6.0) == pytest.approx(6.0)
        assert metric(gateway.metrics, "toneserve_requests_total", rpc="Analyze", code="QUOTA_EXCEEDED",
                      tenant="acme") == 1
