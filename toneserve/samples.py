"""Test and demo audio the project generates itself (no download, no licence question).

`speechlike` is not speech, but it has what the pipeline cares about: voiced
harmonics with a moving pitch, syllable-rate loudness, pauses and a little
noise, at any sample rate and channel count.
"""
from __future__ import annotations

import io
import wave

import numpy as np


def speechlike(seconds: float, rate: int = 16000, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6)) > -0.6).astype(float)
    signal = 0.25 * voiced * syllables * pauses + 0.003 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV; `samples` is [N] or [N, channels] in [-1, 1]."""
    frames = np.asarray(samples, dtype=np.float32)
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    pcm = np.round(np.clip(frames, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
