"""Audio bytes in, 16 kHz mono float32 out: PyAV decodes, soxr resamples."""
from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import soxr

from .errors import Code, ToneserveError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 4 * 3600.0
    max_channels: int = 8
    # Below this there is not one analysis frame of the models (25 ms fbank window, 400-sample
    # emotion2vec receptive field) with room to spare.
    min_seconds: float = 0.1


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 [N], mono, SAMPLE_RATE
    source_rate: int
    source_channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(data: bytes, limits: Limits = Limits()) -> Audio:
    """Decode any container/codec PyAV knows; mix channels down; resample to 16 kHz."""
    if len(data) > limits.max_bytes:
        raise ToneserveError(Code.AUDIO_TOO_LARGE, f"{len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise ToneserveError(Code.EMPTY_AUDIO, "the request carries no audio bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise ToneserveError(Code.INVALID_AUDIO, f"not a recognised audio container ({exc})") from None
    with container:
        if not container.streams.audio:
            raise ToneserveError(Code.NO_AUDIO_STREAM)
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        channels = stream.codec_context.channels
        if channels > limits.max_channels:
            raise ToneserveError(Code.TOO_MANY_CHANNELS, f"{channels} channels; the limit is {limits.max_channels}")
        # Planar float keeps each channel contiguous; the rate stays as decoded (soxr resamples better).
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        total = 0
        max_samples = int(limits.max_seconds * (rate or SAMPLE_RATE))
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(len(out.layout.channels), -1)
                    total += block.shape[1]
                    if total > max_samples:
                        raise ToneserveError(Code.AUDIO_TOO_LONG, f"longer than {limits.max_seconds:.0f} s")
                    chunks.append(block.mean(axis=0, dtype=np.float32))
        except av.FFmpegError as exc:
            raise ToneserveError(Code.INVALID_AUDIO, f"the audio stream is corrupt ({exc})") from None
    if not chunks or total == 0:
        raise ToneserveError(Code.EMPTY_AUDIO)
    mono = np.concatenate(chunks)
    if len(mono) < limits.min_seconds * rate:
        raise ToneserveError(Code.AUDIO_TOO_SHORT, f"{len(mono) / rate:.3f} s; at least {limits.min_seconds} s needed")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return Audio(samples=np.ascontiguousarray(mono, dtype=np.float32), source_rate=int(rate),
                 source_channels=int(channels))


def fixed_windows(n_samples: int, window_seconds: float, min_seconds: float = 0.2) -> list[tuple[int, int]]:
    """Cut [0, n) into windows of `window_seconds`; a tail shorter than `min_seconds` joins the window before it."""
    size = max(1, int(round(window_seconds * SAMPLE_RATE)))
    minimum = int(min_seconds * SAMPLE_RATE)
    bounds = [(start, min(start + size, n_samples)) for start in range(0, n_samples, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < minimum:
        bounds[-2] = (bounds[-2][0], bounds[-1][1])
        bounds.pop()
    return bounds
