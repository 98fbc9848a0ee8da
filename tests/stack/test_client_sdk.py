"""The SDK against the real stack: typed results, sync and asyncio alike, and credentials (API key, TLS)
against a gateway that requires both."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from google.protobuf.json_format import MessageToDict

from tests.support import gateway_process, self_signed
from toneserve.client import (
    AnalyzeError,
    AsyncClient,
    CallSummary,
    Client,
    Distribution,
    Judgement,
    Metadata,
    Result,
    Segment,
    SpeakerSummary,
)
from toneserve.samples import call, wav_bytes

ROLES = {0: "agent", 1: "customer"}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdk") / "call.wav"
    path.write_bytes(wav_bytes(call(20.0, rate=16000, seed=3).samples, 16000))
    return path


@pytest.fixture(scope="module")
def result(stack, recording) -> Result:
    with Client(stack.gateway) as client:
        return client.analyze(recording, channel_roles=ROLES)


def test_results_are_typed_and_match_the_response(result):
    assert isinstance(result.call, CallSummary) and isinstance(result.metadata, Metadata)
    assert all(isinstance(s, Segment) for s in result.segments) and len(result.segments) >= 3
    assert [(s.speaker, s.channel) for s in result.speakers] == [("agent", 0), ("customer", 1)]
    assert all(isinstance(s, SpeakerSummary) for s in result.speakers)
    raw = MessageToDict(result.raw, preserving_proto_field_name=True)
    for ours, theirs in zip(result.segments, raw["segments"]):
        assert isinstance(ours.emotion, Distribution) and isinstance(ours.judgement, Judgement)
        assert (ours.start_ms, ours.end_ms, ours.speaker, ours.transcript) == (
            theirs["start_ms"], theirs["end_ms"], theirs["speaker"], theirs["transcript"])
        assert ours.judgement.flags == tuple(f.lower() for f in theirs["judgement"].get("flags", []))
        assert ours.emotion.top == max(ours.emotion.as_dict(), key=ours.emotion.as_dict().get)
        assert ours.emotion.labels == result.metadata.emotion_labels
    assert result.metadata.random_weights and result.metadata.thresholds.min_silence_ms == 300
    assert result.call.segments == len(result.segments)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()


def comparable(value, path=""):
    """to_dict() without what differs between two runs of the same request (ids, timings)."""
    if isinstance(value, dict):
        return {k: comparable(v, f"{path}.{k}") for k, v in value.items()
                if f"{path}.{k}" not in (".metadata.request_id", ".metadata.processing_ms")}
    if isinstance(value, list):
        return [comparable(v, path) for v in value]
    return value


def assert_same(a, b, where="result"):
    """Equal, numbers within 1e-4 (a request batched with others in Triton differs by ~1e-5)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-4), where
    else:
        assert a == b, where


def test_async_client_gives_what_the_client_gives(stack, recording, result):
    async def main():
        async with AsyncClient(stack.gateway) as client:
            # Concurrent calls on one connection: a path, the bytes, and the bytes streamed.
            return await asyncio.gather(client.analyze(recording, channel_roles=ROLES),
                                        client.analyze(recording.read_bytes(), channel_roles=["agent", "customer"]),
                                        client.analyze(recording, channel_roles=ROLES, upload=True))

    expected = comparable(result.to_dict())
    for other in asyncio.run(main()):
        assert isinstance(other, Result)
        assert_same(comparable(other.to_dict()), expected)


def test_errors_carry_status_code_and_request_id(stack):
    with Client(stack.gateway) as client, pytest.raises(AnalyzeError) as error:
        client.analyze(b"\x00\x01 not audio " * 100, request_id="my-request-7")
    assert (error.value.status, error.value.code, error.value.request_id) == (
        "INVALID_ARGUMENT", "INVALID_AUDIO", "my-request-7")
    assert error.value.attempts == 1 and str(error.value).startswith("INVALID_AUDIO: ")


# --- credentials: a gateway with API keys and TLS ---------------------------------------------------

@pytest.fixture(scope="module")
def secured(stack, tmp_path_factory):
    """A gateway that serves TLS only and wants an API key."""
    folder = tmp_path_factory.mktemp("secured")
    cert, key = self_signed(folder)
    keys = folder / "keys.txt"
    keys.write_text("k-sdk-test-Zt7q8mXo2Lw1bV9cR4yPn6Ks3 acme\n")
    with gateway_process(stack.triton_grpc, folder / "gateway.log", "--api-keys", str(keys), "--tls-cert", str(cert),
                         "--tls-key", str(key), root_certificates=cert.read_bytes()) as gateway:
        gateway.cert = cert
        yield gateway


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    path = tmp_path_factory.mktemp("short") / "short.wav"
    path.write_bytes(wav_bytes(call(6.0, rate=16000, seed=3).samples, 16000))
    return path


def test_api_key_and_ca_certificate_from_arguments(secured, short):
    with Client(secured.address, api_key="k-sdk-test-Zt7q8mXo2Lw1bV9cR4yPn6Ks3", ca_cert=secured.cert) as client:
        assert client.analyze(short).segments
    with Client(secured.address, ca_cert=secured.cert) as client, pytest.raises(AnalyzeError) as no_key:
        client.analyze(short)
    with Client(secured.address, api_key="k-wrong", ca_cert=secured.cert) as client, \
            pytest.raises(AnalyzeError) as wrong_key:
        client.analyze(short)
    for error in (no_key.value, wrong_key.value):
        assert (error.status, error.code, error.attempts) == ("UNAUTHENTICATED", "UNAUTHENTICATED", 1)
        assert "TONESERVE_API_KEY" in str(error)


def test_plaintext_against_tls_is_unreachable_not_a_hang(secured, short):
    with Client(secured.address, api_key="k-sdk-test-Zt7q8mXo2Lw1bV9cR4yPn6Ks3", max_attempts=1) as client, \
            pytest.raises(AnalyzeError) as error:
        client.analyze(short, timeout=20)
    assert error.value.unreachable and f"cannot reach the toneserve gateway at {secured.address}" in str(error.value)


def test_async_client_with_credentials_from_the_environment(secured, short, monkeypatch):
    monkeypatch.setenv("TONESERVE_ADDRESS", secured.address)
    monkeypatch.setenv("TONESERVE_API_KEY", "k-sdk-test-Zt7q8mXo2Lw1bV9cR4yPn6Ks3")
    monkeypatch.setenv("TONESERVE_CA_CERT", str(secured.cert))

    async def main():
        async with AsyncClient() as client:
            return await client.analyze(short)

    assert asyncio.run(main()).segments


def cli(*arguments, env):
    return subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", *arguments], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_cli_credentials_from_environment_and_flags_that_win(secured, short):
    env = {"TONESERVE_ADDRESS": secured.address, "TONESERVE_API_KEY": "k-sdk-test-Zt7q8mXo2Lw1bV9cR4yPn6Ks3",
           "TONESERVE_CA_CERT": str(secured.cert)}
    from_env = cli(str(short), "--format", "csv", env=env)
    assert from_env.returncode == 0, from_env.stderr
    wrong_env = {**env, "TONESERVE_API_KEY": "k-wrong"}
    refused = cli(str(short), env=wrong_env)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and "Traceback" not in refused.stderr
    flags_win = cli(str(short), "--api-key", "k-sdk-test-Zt7q8mXo2Lw1bV9cR4yPn6Ks3", "--ca-cert", str(secured.cert), "--address",
                    secured.address, env={**wrong_env, "TONESERVE_CA_CERT": "/nonexistent.pem",
                                          "TONESERVE_ADDRESS": "127.0.0.1:1"})
    assert flags_win.returncode == 0, flags_win.stderr
    assert json.loads(flags_win.stdout)["segments"]
