"""The SDK's retries, deadlines, metadata, upload choice and connection settings, against a real gRPC server
in this process whose Analyzer answers from a script (no Triton, no gateway)."""
from __future__ import annotations

import asyncio
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from toneserve.client import AnalyzeError, AsyncClient, Client, Result, RetryPolicy, sdk
from toneserve.contract import Code
from toneserve.triton import free_port
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

# Backoff far below the hints used here: a wait of at least the hint can only come from the hint.
QUICK = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)

RESPONSE = pb.AnalyzeResponse(
    segments=[pb.Segment(start_ms=100, end_ms=900, speaker="channel_0", transcript="hello",
                         judgement=pb.Judgement(sentiment="neutral", flags=[pb.ABSTAINED]))],
    speakers=[pb.SpeakerSummary(speaker="channel_0", segments=1)],
    metadata=pb.Metadata(request_id="from-server", thresholds=pb.Thresholds(min_silence_ms=300)))


@dataclass
class Received:
    at: float
    rpc: str
    metadata: dict
    options: pb.AnalyzeRequest
    chunks: list[bytes] = field(default_factory=list)


class ScriptedAnalyzer(pb_grpc.AnalyzerServicer):
    """Answers each call with the next (status, toneserve code, pushback ms) of its script, then succeeds."""

    def __init__(self):
        self.script: list[tuple[grpc.StatusCode, str, int | None]] = []
        self.received: list[Received] = []

    def Analyze(self, request, context):
        self.received.append(Received(time.monotonic(), "Analyze", dict(context.invocation_metadata()), request))
        return self._answer(context)

    def AnalyzeUpload(self, request_iterator, context):
        messages = list(request_iterator)
        self.received.append(Received(time.monotonic(), "AnalyzeUpload", dict(context.invocation_metadata()),
                                      messages[0].options, [m.chunk for m in messages[1:]]))
        return self._answer(context)

    def _answer(self, context):
        if not self.script:
            return RESPONSE
        status, code, pushback_ms = self.script.pop(0)
        trailers = [("toneserve-error-code", code), ("toneserve-request-id", "req-42")]
        if pushback_ms is not None:
            trailers.append(("grpc-retry-pushback-ms", str(pushback_ms)))
        context.set_trailing_metadata(tuple(trailers))
        context.abort(status, f"{code}: scripted refusal")


@pytest.fixture
def fake():
    analyzer = ScriptedAnalyzer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_AnalyzerServicer_to_server(analyzer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    analyzer.address = f"127.0.0.1:{port}"
    yield analyzer
    server.stop(grace=None)


def gaps(received: list[Received]) -> list[float]:
    return [b.at - a.at for a, b in zip(received, received[1:])]


def test_overloaded_is_retried_after_at_least_the_hint_then_succeeds(fake):
    fake.script = [(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", 400)] * 2
    with Client(fake.address, retry=QUICK) as client:
        result = client.analyze(b"audio", timeout=30)
    assert isinstance(result, Result) and result.segments[0].transcript == "hello"
    assert len(fake.received) == 3
    assert all(gap >= 0.4 for gap in gaps(fake.received)), gaps(fake.received)
    # Every attempt is the same request: one request id, chosen by the client.
    assert len({r.options.request_id for r in fake.received}) == 1 and fake.received[0].options.request_id


def test_async_client_honours_the_hint_too(fake):
    fake.script = [(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", 300)] * 2

    async def main():
        async with AsyncClient(fake.address, retry=QUICK) as client:
            return await client.analyze(b"audio", timeout=30)

    assert asyncio.run(main()).segments[0].transcript == "hello"
    assert len(fake.received) == 3 and all(gap >= 0.3 for gap in gaps(fake.received)), gaps(fake.received)


@pytest.mark.parametrize("status, code", [
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AUDIO"),
    (grpc.StatusCode.FAILED_PRECONDITION, "NO_SPEECH"),
    (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    (grpc.StatusCode.INTERNAL, "INTERNAL")])
def test_other_errors_are_not_retried(fake, status, code):
    fake.script = [(status, code, None)] * 4
    with Client(fake.address, retry=QUICK) as client, pytest.raises(AnalyzeError) as error:
        client.analyze(b"audio")
    assert len(fake.received) == 1
    assert (error.value.status, error.value.code, error.value.request_id) == (status.name, code, "req-42")
    assert error.value.attempts == 1 and str(error.value).startswith(f"{code}: scripted refusal")


def test_unavailable_is_retried_up_to_max_attempts(fake):
    fake.script = [(grpc.StatusCode.UNAVAILABLE, "TRITON_UNAVAILABLE", None)] * 10
    with Client(fake.address, retry=QUICK, max_attempts=3) as client, pytest.raises(AnalyzeError) as error:
        client.analyze(b"audio")
    assert len(fake.received) == 3 and error.value.attempts == 3
    assert (error.value.status, error.value.code) == ("UNAVAILABLE", "TRITON_UNAVAILABLE")
    # The gateway answered (its Triton is away): not an unreachable gateway.
    assert not error.value.unreachable and "cannot reach" not in str(error.value)


def test_a_draining_gateway_s_shutting_down_is_retried_then_succeeds(fake):
    """A request still running when a gateway's drain ended (or sent to it during the drain over HTTP) is answered
    SHUTTING_DOWN: the file analysis is tried again (round robin or a new connection reaches another replica)."""
    fake.script = [(grpc.StatusCode[Code.SHUTTING_DOWN.status], Code.SHUTTING_DOWN.name, None)] * 2
    with Client(fake.address, retry=QUICK) as client:
        result = client.analyze(b"audio", timeout=30)
    assert result.segments[0].transcript == "hello" and len(fake.received) == 3
    assert len({r.options.request_id for r in fake.received}) == 1


def test_no_retry_starts_after_the_callers_deadline(fake):
    """A hint longer than the time left: the call gives up with the gateway's answer instead of waiting."""
    fake.script = [(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", 60_000)] * 2
    with Client(fake.address, retry=QUICK) as client, pytest.raises(AnalyzeError) as error:
        client.analyze(b"audio", timeout=5)
    assert len(fake.received) == 1
    assert (error.value.code, error.value.retry_after) == ("OVERLOADED", 60.0)


def test_api_key_is_sent_as_a_bearer_token_and_the_argument_beats_the_environment(fake, monkeypatch):
    monkeypatch.setenv("TONESERVE_API_KEY", "from-env")
    with Client(fake.address) as client:
        client.analyze(b"audio")
    with Client(fake.address, api_key="from-arg") as client:
        client.analyze(b"audio")
    monkeypatch.setenv("TONESERVE_ADDRESS", fake.address)
    with Client() as client:  # the address from the environment too
        client.analyze(b"audio")
    assert [r.metadata.get("authorization") for r in fake.received] == [
        "Bearer from-env", "Bearer from-arg", "Bearer from-env"]


def test_connection_settings_from_arguments_and_environment(tmp_path, monkeypatch):
    from toneserve.client.connection import Connection

    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("TONESERVE_CA_CERT", str(pem))
    monkeypatch.setenv("TONESERVE_API_KEY", "secret-key")
    from_env = Connection.resolve()
    assert (from_env.address, from_env.tls, from_env.root_certificates) == ("127.0.0.1:50051", True, pem.read_bytes())
    with Client(api_key="secret-key") as client:
        assert "secret-key" not in repr(from_env) and "secret-key" not in repr(client)
    assert not Connection.resolve(tls=False).tls  # plaintext on purpose, whatever the environment says
    with pytest.raises(ValueError, match="tls=False"):
        Connection.resolve(ca_cert=pem, tls=False)
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        Connection.resolve(ca_cert=tmp_path / "key.pem")
    with pytest.raises(ValueError, match="cannot read the CA certificate"):
        Client(ca_cert=tmp_path / "missing.pem")


def test_request_options_reach_the_server(fake):
    with Client(fake.address) as client:
        client.analyze(b"audio", language="en", use_itn=True, channel_roles=["agent", "customer"],
                       thresholds={"min_silence_ms": 500, "mismatch_gap": 0.75}, request_id="mine", window_seconds=2.0)
        with pytest.raises(ValueError, match="unknown threshold"):
            client.analyze(b"audio", thresholds={"min_silence": 500})
    options = fake.received[0].options
    assert (options.language, options.use_itn, dict(options.channel_roles), options.request_id) == (
        "en", True, {0: "agent", 1: "customer"}, "mine")
    assert options.thresholds.min_silence_ms == 500 and options.thresholds.mismatch_gap == pytest.approx(0.75)
    assert not options.thresholds.HasField("vad_threshold") and options.window_seconds == 2.0


def test_large_files_are_streamed_in_chunks(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sdk, "UPLOAD_ABOVE_BYTES", 1000)
    monkeypatch.setattr(sdk, "CHUNK_BYTES", 256)
    small, large = tmp_path / "small.wav", tmp_path / "large.wav"
    small.write_bytes(b"s" * 1000)
    large.write_bytes(bytes(range(256)) * 5 + b"tail")
    with Client(fake.address) as client:
        client.analyze(small, language="en")
        client.analyze(large, language="en")
        client.analyze(b"forced", upload=True)
    assert [r.rpc for r in fake.received] == ["Analyze", "AnalyzeUpload", "AnalyzeUpload"]
    assert fake.received[0].options.audio == small.read_bytes()
    upload = fake.received[1]
    assert upload.options.language == "en" and not upload.options.audio
    assert [len(c) for c in upload.chunks] == [256] * 5 + [4] and b"".join(upload.chunks) == large.read_bytes()


def test_async_upload_streams_the_same_chunks(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sdk, "CHUNK_BYTES", 256)
    path = tmp_path / "large.wav"
    path.write_bytes(bytes(range(256)) * 3 + b"end")

    async def main():
        async with AsyncClient(fake.address) as client:
            await client.analyze(path, upload=True)

    asyncio.run(main())
    assert fake.received[0].rpc == "AnalyzeUpload" and b"".join(fake.received[0].chunks) == path.read_bytes()
    assert [len(c) for c in fake.received[0].chunks] == [256, 256, 256, 3]


def test_a_stopped_server_is_a_clear_error_after_the_retries():
    address = f"127.0.0.1:{free_port()}"
    with Client(address, retry=QUICK, max_attempts=2) as client, pytest.raises(AnalyzeError) as error:
        client.analyze(b"audio", timeout=10)
    assert (error.value.status, error.value.code, error.value.attempts) == ("UNAVAILABLE", "", 2)
    assert error.value.unreachable and f"cannot reach the toneserve gateway at {address}" in str(error.value)

