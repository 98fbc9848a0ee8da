"""How long after an utterance ends its segment arrives, for a call streamed at real time.

    python -m toneserve.loadtest.live_lag --address HOST:PORT --audio FILE [--chunk-ms 20] [--roles agent,customer]

The recording (any format the gateway reads) is decoded here to 16 kHz and sent through
AnalyzeStream as a live WAV (`live_wav_header` then s16 PCM), one `--chunk-ms` chunk at its
real-time instant, as a telephony bridge sends a call. Each chunk's send time is kept; each
segment's lag is the wall time it arrived minus the wall time the chunk holding its end (the
segment's end in audio time, silero's padded end) was sent. So the lag holds everything the
caller waits for: the block the gateway decodes at a time, the silence that closes an utterance
(min_silence_ms), VAD, the models and the trip back.

The benchmark (benchmark.py --live-calls) runs this per system after its throughput runs, one
call at a time while nothing else loads the system.
"""
from __future__ import annotations

import argparse
import bisect
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from toneserve.contract import SAMPLE_RATE, ToneserveError

DEFAULT_CHUNK_MS = 20.0


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def lags(sent: list[tuple[float, float]], arrived: list[tuple[float, float]]) -> list[float]:
    """`sent`: (audio seconds sent so far, wall time) after each chunk, in order; `arrived`:
    (segment end in audio seconds, wall time it arrived) per segment. Each segment's lag: its
    arrival minus the send time of the first chunk that completed its end."""
    ends = [audio for audio, _ in sent]
    out = []
    for end, wall in arrived:
        index = bisect.bisect_left(ends, end - 1e-9)  # a segment ending on a chunk's edge needs that chunk only
        if index == len(ends):
            raise ValueError(f"a segment ends at {end:.3f} s, after the {ends[-1] if ends else 0:.3f} s sent")
        out.append(wall - sent[index][1])
    return out


def summary(values: list[float]) -> dict:
    """p50 / p95 / max of lags in seconds (None where there are none)."""
    return {"segments": len(values), "p50_s": percentile(values, 50), "p95_s": percentile(values, 95),
            "max_s": max(values) if values else None, "mean_s": float(np.mean(values)) if values else None}


def pcm_chunks(path: Path, chunk_ms: float) -> tuple[int, Iterator[bytes]]:
    """The recording decoded to 16 kHz s16, interleaved: (channels, chunks of `chunk_ms`)."""
    from toneserve.gateway.audio import open_audio

    with open_audio(path) as stream:
        audio = np.concatenate(list(stream.blocks(60.0)), axis=1)
    pcm = (np.clip(audio.T, -1.0, 1.0) * 32767).round().astype("<i2")  # [n, channels]
    step = max(1, int(round(chunk_ms * SAMPLE_RATE / 1000)))
    return audio.shape[0], (pcm[i:i + step].tobytes() for i in range(0, len(pcm), step))


def paced(header: bytes, chunks: Iterable[bytes], bytes_per_second: float, sent: list[tuple[float, float]],
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Iterator[bytes]:
    """`header`, then each chunk at the instant its last sample is due (real time from the first
    chunk), recording (audio seconds sent, wall time) in `sent` as each is handed over."""
    yield header
    started = clock()
    total = 0
    for chunk in chunks:
        total += len(chunk)
        due = started + total / bytes_per_second
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        sent.append((total / bytes_per_second, clock()))
        yield chunk


def live_wav_header(sample_rate: int, channels: int) -> bytes:
    """A 16-bit PCM WAV header whose sizes say "unknown" (a live capture's), as the SDK's
    `live_wav_header` writes it (loadtest/ speaks gRPC itself: it does not import the client)."""
    unknown = 0xFFFFFFFF
    block = channels * 2
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
            + b"data" + struct.pack("<I", unknown))


def measure(address: str, audio: Path, chunk_ms: float = DEFAULT_CHUNK_MS, timeout: float | None = None) -> dict:
    """Stream one recording at real time through AnalyzeStream; its segments' lags."""
    import grpc

    from toneserve.v1 import toneserve_pb2 as pb
    from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

    channels, chunks = pcm_chunks(Path(audio), chunk_ms)
    sent: list[tuple[float, float]] = []  # appended by gRPC's sending thread, read once the call has ended
    arrived: list[tuple[float, float]] = []

    def messages():
        yield pb.UploadRequest(options=pb.AnalyzeRequest())
        for chunk in paced(live_wav_header(SAMPLE_RATE, channels), chunks, SAMPLE_RATE * channels * 2, sent):
            yield pb.UploadRequest(chunk=chunk)

    segments = None
    with grpc.insecure_channel(address) as channel:
        for event in pb_grpc.AnalyzerStub(channel).AnalyzeStream(messages(), timeout=timeout):
            now = time.monotonic()
            if event.HasField("result"):
                segments = len(event.result.segments)
            else:
                arrived.append((event.segment.end_ms / 1000.0, now))
    values = lags(sent, arrived)
    return {**summary(values), "file": str(audio), "audio_seconds": sent[-1][0] if sent else 0.0,
            "channels": channels, "chunk_ms": chunk_ms, "result_segments": segments, "lags_s": values}


def measure_calls(address: str, files: list[Path], chunk_ms: float = DEFAULT_CHUNK_MS, progress=None) -> dict:
    """`measure` on each file in turn (one call at a time); the figures of all their segments together."""
    calls = []
    for path in files:
        calls.append(measure(address, path, chunk_ms))
        if progress:
            progress(calls[-1])
    values = [lag for call in calls for lag in call["lags_s"]]
    return {**summary(values), "calls": calls, "audio_seconds": sum(c["audio_seconds"] for c in calls)}


def describe(figures: dict) -> str:
    def s(value):
        return "–" if value is None else f"{value:.2f} s"
    return (f"{figures['segments']} segments: lag p50 {s(figures['p50_s'])}, p95 {s(figures['p95_s'])}, "
            f"max {s(figures['max_s'])}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.live_lag", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", required=True, help="the gateway, HOST:PORT")
    p.add_argument("--audio", type=Path, nargs="+", required=True, help="recordings, streamed one after the other")
    p.add_argument("--chunk-ms", type=float, default=DEFAULT_CHUNK_MS, help="audio per message (default 20 ms)")
    return p


def main(argv: list[str] | None = None) -> int:
    import grpc

    args = parser().parse_args(argv)
    try:
        figures = measure_calls(args.address, args.audio, args.chunk_ms,
                                progress=lambda call: print(f"{call['file']}: {describe(call)}", flush=True))
    except (OSError, ValueError, ToneserveError) as exc:  # an unreadable file; the gateway's error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:  # the gateway's answer
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"all: {describe(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
