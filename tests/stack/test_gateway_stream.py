"""AnalyzeStream: live audio in, each segment out as soon as it is analysed, then the whole result.

Against the session's real gateway and tritonserver; a gateway of its own where a limit is tested.
"""
from __future__ import annotations

import asyncio
import io
import threading
import time

import grpc
import numpy as np
import pytest

from tests.support import gateway_process, metric
from toneserve.client import AsyncClient, Client, Result, Segment, live_wav_header
from toneserve.client.sdk import AnalyzeError
from toneserve.samples import call, wav_bytes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

ROLES = {0: "agent", 1: "customer"}
CHUNK = 3200  # 50 ms of 16 kHz 16-bit stereo per message, as a media stream sends it
CHUNK_TIMEOUT = 10  # the limited gateway's --chunk-timeout, seconds


@pytest.fixture(scope="module")
def conversation():
    return call(30.0, rate=16000, seed=11)


@pytest.fixture(scope="module")
def live_bytes(conversation) -> bytes:
    """The call as a live capture sends it: a WAV header whose sizes are unknown, then PCM."""
    return live_wav_header(16000, 2) + wav_bytes(conversation.samples, 16000)[44:]


def pieces(data: bytes, size: int = CHUNK):
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.fixture(scope="module")
def streamed(stack, live_bytes):
    with Client(stack.gateway) as client:
        return list(client.analyze_stream(pieces(live_bytes), channel_roles=ROLES, timeout=300))


def key(segment):
    return segment.channel, segment.start_ms, segment.end_ms


def test_segments_stream_then_the_result(stack, streamed):
    *segments, result = streamed
    assert isinstance(result, Result) and segments and all(isinstance(s, Segment) for s in segments)
    # Every streamed segment is in the result, as it was streamed but for the escalation flag.
    assert sorted(map(key, segments)) == [key(s) for s in sorted(result.segments, key=key)]
    final = {key(s): s for s in result.segments}
    for segment in segments:
        settled = final[key(segment)]
        assert segment.transcript == settled.transcript and segment.speaker == settled.speaker
        assert segment.emotion.probabilities == settled.emotion.probabilities
        assert "ESCALATION" not in segment.judgement.flags
        assert set(settled.judgement.flags) - {"ESCALATION"} == set(segment.judgement.flags)
    assert {s.speaker for s in result.speakers} == {"agent", "customer"}
    # Most utterances were analysed as soon as silence followed them (the counter is the session gateway's:
    # other streams may have added to it, never taken away).
    assert metric(stack.metrics, "toneserve_live_early_analyses_total", outcome="used") >= len(result.segments) / 2


def test_a_stream_gives_what_the_whole_file_gives(stack, streamed, conversation):
    """Live audio (1 s blocks, unknown length) and the whole file (30.72 s blocks) cut the same
    utterances, give or take a VAD frame (32 ms): silero restarts at every block with 0.5 s of
    warm-up, so its probabilities near a block seam differ a little. Segments cut alike get the
    same analysis."""
    result = streamed[-1]
    with Client(stack.gateway) as client:
        whole = client.analyze(wav_bytes(conversation.samples, 16000), channel_roles=ROLES, upload=True)
    assert len(result.segments) == len(whole.segments)
    alike = 0
    for live, file in zip(result.segments, whole.segments):
        assert live.channel == file.channel
        assert abs(live.start_ms - file.start_ms) <= 64 and abs(live.end_ms - file.end_ms) <= 64, (live, file)
        if key(live) == key(file):
            alike += 1
            assert live.transcript == file.transcript and live.judgement.flags == file.judgement.flags
            np.testing.assert_allclose(live.emotion.probabilities, file.emotion.probabilities, atol=1e-4)
    assert alike >= len(whole.segments) // 2
    assert result.metadata.audio_seconds == whole.metadata.audio_seconds
    assert result.call.talk_seconds == pytest.approx(whole.call.talk_seconds, abs=0.064 * len(whole.segments))


def test_segments_arrive_while_the_audio_is_still_coming(stack, live_bytes):
    """The first half of the call is sent, and then nothing more until a segment has come back: a
    gateway that waited for the end of the audio would never answer (the wait gives up after
    120 s, and the test fails)."""
    half = len(live_bytes) // 2
    first_segment = threading.Event()
    waited = []

    def chunks():
        yield from pieces(live_bytes[:half])
        waited.append(first_segment.wait(timeout=120))
        yield from pieces(live_bytes[half:])

    events = []
    with Client(stack.gateway) as client:
        for event in client.analyze_stream(chunks(), channel_roles=ROLES, timeout=300):
            events.append(event)
            first_segment.set()
    assert waited == [True], "no segment came back before the rest of the audio was sent"
    assert isinstance(events[-1], Result) and len(events) == len(events[-1].segments) + 1


def mulaw(samples: np.ndarray, rate: int) -> bytes:
    """G.711 mu-law bytes of float samples [N, channels], encoded by FFmpeg (through PyAV)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_mulaw", rate=rate, layout="stereo" if samples.shape[1] == 2 else "mono")
        pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    data = buffer.getvalue()
    return data[data.index(b"data") + 8:]


def test_telephone_mulaw_at_8khz(stack):
    """A G.711 mu-law 8 kHz stereo media stream (what telephony platforms send), behind a live WAV
    header: both speakers are found, in the turns the call has."""
    conversation = call(20.0, rate=8000, seed=4)
    live = live_wav_header(8000, 2, "mulaw") + mulaw(conversation.samples, 8000)
    with Client(stack.gateway) as client:
        *segments, result = client.analyze_stream(pieces(live, 800), channel_roles=ROLES, timeout=300)
    assert segments and {s.speaker for s in result.segments} == {"agent", "customer"}
    assert result.metadata.sample_rate_in == 8000 and result.metadata.codec == "pcm_mulaw"
    assert result.metadata.audio_seconds == pytest.approx(20.0, abs=0.01)


def test_async_client_streams_the_same(stack, live_bytes, streamed):
    async def run():
        async def chunks():
            for piece in pieces(live_bytes):
                yield piece
        async with AsyncClient(stack.gateway) as client:
            return [event async for event in client.analyze_stream(chunks(), channel_roles=ROLES, timeout=300)]

    events = asyncio.run(run())
    assert [key(s) for s in events[-1].segments] == [key(s) for s in streamed[-1].segments]
    assert sorted(map(key, events[:-1])) == sorted(map(key, streamed[:-1]))


def raw_stream(address: str, messages):
    with grpc.insecure_channel(address) as channel:
        return list(pb_grpc.AnalyzerStub(channel).AnalyzeStream(iter(messages), timeout=120))


def test_bad_streams_get_clear_errors_and_the_gateway_keeps_serving(stack, live_bytes):
    options = pb.UploadRequest(options=pb.AnalyzeRequest())
    cases = [
        ([pb.UploadRequest(chunk=b"RIFF")], grpc.StatusCode.INVALID_ARGUMENT, "first AnalyzeStream message"),
        ([options, pb.UploadRequest(chunk=live_bytes[:64000]), options], grpc.StatusCode.INVALID_ARGUMENT,
         "only be the first"),
        ([options, pb.UploadRequest(chunk=b"this is not audio at all " * 400)], grpc.StatusCode.INVALID_ARGUMENT,
         "not a recognised media container"),
        ([options], grpc.StatusCode.INVALID_ARGUMENT, "no bytes"),
    ]
    for messages, status, words in cases:
        with pytest.raises(grpc.RpcError) as error:
            raw_stream(stack.gateway, messages)
        assert error.value.code() == status and words in error.value.details(), error.value.details()
    with Client(stack.gateway) as client:
        assert list(client.analyze_stream(pieces(live_bytes[:16000 * 4 * 6])))[-1].segments


@pytest.fixture(scope="module")
def limited(stack, tmp_path_factory):
    with gateway_process(stack.triton_grpc, tmp_path_factory.mktemp("live") / "gateway.log",
                         "--max-upload-mb", "1", "--chunk-timeout", str(CHUNK_TIMEOUT)) as gateway:
        yield gateway


def test_a_stream_over_the_byte_limit_is_refused(limited, live_bytes):
    """More than --max-upload-mb streamed: AUDIO_TOO_LARGE, whatever was analysed of the part before."""
    with Client(limited.address) as client:
        with pytest.raises(AnalyzeError) as error:
            list(client.analyze_stream(pieces(live_bytes)))
    assert error.value.code == "AUDIO_TOO_LARGE"


def test_a_client_that_hangs_up_leaves_nothing_running(limited, live_bytes):
    """The caller stops reading after the first segment while its audio is still coming: the call
    ends, the gateway stops analysing it, and serves the next one."""
    stop = threading.Event()

    def chunks():
        for piece in pieces(live_bytes[:900_000]):
            yield piece
        stop.wait(timeout=120)  # a live source that has not ended

    with Client(limited.address) as client:
        events = client.analyze_stream(chunks())
        assert isinstance(next(events), Segment)
        events.close()  # hang up
        stop.set()
        def cancelled() -> float:
            return metric(limited.metrics, "toneserve_requests_total", rpc="AnalyzeStream", code="CANCELLED",
                          tenant="default")

        deadline = time.monotonic() + 30  # the metrics are read from another thread: wait for both to settle
        while (metric(limited.metrics, "toneserve_requests_in_flight") or not cancelled()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(limited.metrics, "toneserve_requests_in_flight") == 0
        assert metric(limited.metrics, "toneserve_triton_calls_in_flight") == 0
        assert cancelled() == 1
        assert list(client.analyze_stream(pieces(live_bytes[:16000 * 4 * 6])))[-1].segments


def idle_streams(address: str, count: int, release: threading.Event) -> list[threading.Thread]:
    """`count` AnalyzeStream calls that send their options, then nothing until `release`."""
    def one():
        def messages():
            yield pb.UploadRequest(options=pb.AnalyzeRequest())
            release.wait(120)

        with grpc.insecure_channel(address) as channel:
            try:
                list(pb_grpc.AnalyzerStub(channel).AnalyzeStream(messages(), timeout=120))
            except grpc.RpcError:
                pass  # released, they end with no audio

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_idle_streams_do_not_delay_a_unary_call(stack):
    """Before: ten streams that sent their options and then nothing took every thread of asyncio's
    default pool (their decoders waiting for audio), and a 2 s Analyze waited past its 20 s deadline."""
    release = threading.Event()
    threads = idle_streams(stack.gateway, 10, release)
    try:
        time.sleep(1.0)  # every stream is open and its decoder waiting for audio
        audio = wav_bytes(call(8.0, rate=16000, seed=2).samples, 16000)  # speech from its first seconds
        with Client(stack.gateway) as client:
            started = time.monotonic()
            result = client.analyze(audio, timeout=20)
            took = time.monotonic() - started
        assert result.segments and took < 10, took
    finally:
        release.set()
        for thread in threads:
            thread.join(30)


def test_a_stream_that_sends_nothing_is_ended_after_the_chunk_timeout(limited):
    release = threading.Event()

    def messages():
        yield pb.UploadRequest(options=pb.AnalyzeRequest())
        release.wait(60)

    started = time.monotonic()
    try:
        with pytest.raises(grpc.RpcError) as error, grpc.insecure_channel(limited.address) as channel:
            list(pb_grpc.AnalyzerStub(channel).AnalyzeStream(messages(), timeout=60))
    finally:
        release.set()
    took = time.monotonic() - started
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert dict(error.value.trailing_metadata())["toneserve-error-code"] == "DEADLINE_EXCEEDED"
    assert CHUNK_TIMEOUT - 1 < took < CHUNK_TIMEOUT + 10, took


def test_cli_streams_a_pipe_and_prints_segments_as_lines(stack, live_bytes, tmp_path):
    """`toneserve stream -` with the capture piped in: a JSON line per segment, the whole result in
    --result, exit 0; an unreadable source is a usage error (2), a stopped gateway an error (1)."""
    import json
    import subprocess
    import sys

    from toneserve.triton import free_port

    command = [sys.executable, "-m", "toneserve.cli", "stream", "-", "--address", stack.gateway,
               "--roles", "agent,customer", "--result", str(tmp_path / "result.json")]
    done = subprocess.run(command, input=live_bytes, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    result = json.loads((tmp_path / "result.json").read_text())
    assert lines and len(lines) == len(result["segments"]) and {line["file"] for line in lines} == {"stdin"}
    assert sorted((x["start_s"], x["speaker"]) for x in lines) == \
        sorted((s["start_ms"] / 1000, s["speaker"]) for s in result["segments"])
    missing = subprocess.run([*command[:4], str(tmp_path / "nothing.wav"), *command[5:]], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "nothing.wav" in missing.stderr
    nobody = subprocess.run([*command[:5], "--address", f"127.0.0.1:{free_port()}"], input=live_bytes[:64000],
                            capture_output=True, timeout=60)
    assert nobody.returncode == 1 and b"UNAVAILABLE" in nobody.stderr and b"Traceback" not in nobody.stderr
