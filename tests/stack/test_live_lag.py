"""loadtest/live_lag.py against the session stack: a recording streamed at real time through
AnalyzeStream gets a lag per segment. Not a speed goal (the tiny models' and this machine's speed
say nothing of a deployment's): only that the figures are there and make sense."""
from __future__ import annotations

import numpy as np

from tests.support import talk
from toneserve.loadtest import live_lag
from toneserve.samples import wav_bytes


def test_live_lag_of_a_streamed_recording(stack, tmp_path):
    audio = np.concatenate([talk(seed) for seed in (1, 2)] + [np.zeros(8000, np.float32)])
    path = tmp_path / "talk.wav"
    path.write_bytes(wav_bytes(audio, 16000))
    figures = live_lag.measure(stack.gateway, path, chunk_ms=40)
    assert figures["segments"] >= 2 and figures["segments"] == figures["result_segments"]
    assert all(lag > 0 for lag in figures["lags_s"]), figures["lags_s"]
    assert 0 < figures["p50_s"] <= figures["p95_s"] <= figures["max_s"]
    assert abs(figures["audio_seconds"] - len(audio) / 16000) < 0.05
    assert "segments: lag p50" in live_lag.describe(figures)
