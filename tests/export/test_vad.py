"""Silero VAD on numpy + ONNX Runtime (model_repository/runners/vad_core.py) and the gateway's port of
silero's segmentation (gateway/vad_segments.py), against silero-vad itself.

The reference is silero-vad itself (the wheel, with torch): its OnnxWrapper run one
chunk at a time for the probabilities, its get_speech_timestamps for the segments.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import RUNNERS, load_file, talk
from tests.support import VAD_WINDOW as WINDOW
from toneserve.gateway.vad_segments import speech_segments
from toneserve.samples import speechlike

# silero_vad.load_silero_vad uses importlib.resources.path, deprecated in Python 3.11+.
pytestmark = pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")

vad_core = load_file("vad_core", RUNNERS / "vad_core.py")


@pytest.fixture(scope="module")
def silero():
    silero_vad = pytest.importorskip("silero_vad")
    return silero_vad


@pytest.fixture(scope="module")
def onnx_path(silero) -> Path:
    path = Path(silero.__file__).parent / "data" / "silero_vad.onnx"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def vad(onnx_path):
    return vad_core.SileroVad(onnx_path)


@pytest.fixture(scope="module")
def wrapper(silero):
    return silero.load_silero_vad(onnx=True)


def reference_probs(wrapper, audio: np.ndarray) -> np.ndarray:
    """silero's own per-chunk loop (as get_speech_timestamps runs it): one stream, state reset first."""
    import torch
    wrapper.reset_states()
    out = []
    for start in range(0, len(audio), WINDOW):
        chunk = torch.from_numpy(np.ascontiguousarray(audio[start:start + WINDOW]))
        if len(chunk) < WINDOW:
            chunk = torch.nn.functional.pad(chunk, (0, WINDOW - len(chunk)))
        out.append(wrapper(chunk, 16000).item())
    return np.array(out, dtype=np.float32)


def reference_segments(silero, wrapper, audio: np.ndarray, **params) -> list[tuple[int, int]]:
    import torch
    return [(s["start"], s["end"]) for s in silero.get_speech_timestamps(torch.from_numpy(audio), wrapper, **params)]


def _ours(**params):
    """get_speech_timestamps parameter names -> speech_segments parameter names."""
    names = {"min_speech_duration_ms": "min_speech_ms", "min_silence_duration_ms": "min_silence_ms",
             "max_speech_duration_s": "max_speech_s", "min_silence_at_max_speech": "min_silence_at_max_speech_ms"}
    return {names.get(k, k): v for k, v in params.items()}


def test_one_stream_matches_silero_onnx_wrapper(vad, wrapper):
    audio = np.concatenate([speechlike(2.3, seed=1), np.zeros(16000, np.float32),
                            speechlike(1.7, seed=2, f0=200.0)[:-77]])  # partial last frame
    ref = reference_probs(wrapper, audio)
    probs, frames = vad.probabilities(audio[None], np.array([len(audio)]))
    assert frames.tolist() == [len(ref)] == [-(-len(audio) // WINDOW)]
    assert probs.shape == (1, len(ref)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[0], ref, atol=1e-5, rtol=0)
    assert ref.max() > 0.9 and ref.min() < 0.05  # the audio exercises both speech and silence


def test_funasr_sample_probs_and_segments_match_silero(vad, wrapper, silero, shared_speech):
    from toneserve.gateway.audio import decode
    audio = decode((shared_speech / "zh" / "funasr-sample.wav").read_bytes()).samples[0]
    ref = reference_probs(wrapper, audio)
    probs, frames = vad.probabilities(audio[None], np.array([len(audio)]))
    np.testing.assert_allclose(probs[0, :frames[0]], ref, atol=1e-5, rtol=0)

    ours = speech_segments(probs[0], frames[0], num_samples=len(audio))
    assert ours == reference_segments(silero, wrapper, audio)
    # MANIFEST: golden (FunASR fsmn-vad) speech span 770-5980 ms. Silero finds 1026-2270 and
    # 3650-6000 ms: the audio is silent (rms < 1e-3) until ~1050 ms and between 2.25 and 3.6 s,
    # so its span starts 256 ms after the golden one (fsmn-vad pads its onset) and ends 20 ms after it.
    start_ms, end_ms = ours[0][0] / 16, ours[-1][1] / 16
    assert abs(start_ms - 770) <= 300 and abs(end_ms - 5980) <= 50
    assert all(770 - 300 <= s / 16 < e / 16 <= 5980 + 50 for s, e in ours)


SEGMENT_PARAMS = [
    {},
    {"threshold": 0.3, "neg_threshold": 0.1},
    {"threshold": 0.7, "min_speech_duration_ms": 100, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"speech_pad_ms": 0, "min_silence_duration_ms": 0},
    {"max_speech_duration_s": 1.0},
    {"max_speech_duration_s": 1.2, "use_max_poss_sil_at_max_speech": False, "min_silence_at_max_speech": 50},
]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_speech_segments_equal_silero_get_speech_timestamps(vad, wrapper, silero, seed):
    audio = talk(seed, tail=seed * 37)
    probs, frames = vad.probabilities(audio[None], np.array([len(audio)]))
    for params in SEGMENT_PARAMS:
        expected = reference_segments(silero, wrapper, audio, **params)
        assert speech_segments(probs[0], frames[0], num_samples=len(audio), **_ours(**params)) == expected, params
    assert reference_segments(silero, wrapper, audio)  # there is speech to find


@pytest.mark.parametrize("seed", range(6))
def test_speech_segments_equal_silero_on_synthetic_probabilities(silero, seed):
    """Many state-machine paths quickly: smoothed random probabilities straight into silero's post-processing."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 1200))
    walk = np.convolve(rng.standard_normal(n + 8), np.ones(9) / 3, mode="valid")
    probs = (1 / (1 + np.exp(-3 * walk))).astype(np.float32)
    num_samples = n * WINDOW - int(rng.integers(0, WINDOW))
    for params in SEGMENT_PARAMS + [{"max_speech_duration_s": 0.5, "min_silence_at_max_speech": 20}]:
        expected = [(s["start"], s["end"]) for s in silero.get_speech_timestamps_from_probs(
            probs.tolist(), audio_length_samples=num_samples, **params)]
        assert speech_segments(probs, num_samples=num_samples, **_ours(**params)) == expected, params
    padded = np.concatenate([probs, np.ones(30, np.float32)])  # a batch row: frames cuts the padding off
    assert speech_segments(padded, n) == speech_segments(probs)
