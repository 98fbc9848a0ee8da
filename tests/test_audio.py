"""Audio decoding and windowing in the gateway."""
from __future__ import annotations

import numpy as np
import pytest

from toneserve.gateway.audio import SAMPLE_RATE, Limits, decode, fixed_windows
from toneserve.gateway.errors import Code, ToneserveError
from toneserve.samples import speechlike, wav_bytes


def test_wav_round_trip_is_exact_to_16_bit():
    samples = speechlike(1.5, seed=4)
    decoded = decode(wav_bytes(samples, SAMPLE_RATE))
    assert decoded.source_rate == SAMPLE_RATE and decoded.source_channels == 1
    np.testing.assert_allclose(decoded.samples, samples, atol=2.0 / 32767)  # 16-bit rounding plus the 32767/32768 scale


def test_8khz_is_resampled_to_16khz_keeping_the_signal():
    t = np.arange(8000 * 2) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    decoded = decode(wav_bytes(tone, 8000))
    assert len(decoded.samples) == 2 * SAMPLE_RATE and decoded.source_rate == 8000
    spectrum = np.abs(np.fft.rfft(decoded.samples[4000:-4000]))
    assert np.fft.rfftfreq(len(decoded.samples) - 8000, 1 / SAMPLE_RATE)[np.argmax(spectrum)] == pytest.approx(440, abs=2)


def test_mp3_and_wav_of_the_same_clip_agree(shared_speech):
    wav = decode((shared_speech / "zh" / "funasr-asr-example.wav").read_bytes()).samples
    mp3 = decode((shared_speech / "zh" / "funasr-asr-example.mp3").read_bytes()).samples
    n = min(len(wav), len(mp3))
    assert abs(len(wav) - len(mp3)) < SAMPLE_RATE // 10
    a, b = wav[:n], mp3[:n]
    # MP3 is lossy and its decoder delay shifts the signal: compare by correlation at the best lag.
    corr = lambda x, y: np.corrcoef(x, y)[0, 1]
    best = max(max(corr(a[k:], b[:n - k]), corr(a[:n - k], b[k:])) for k in range(0, 2400))
    assert best > 0.9


@pytest.mark.parametrize("data, code", [(b"", Code.EMPTY_AUDIO), (b"garbage" * 50, Code.INVALID_AUDIO)])
def test_bad_bytes_get_their_code(data, code):
    with pytest.raises(ToneserveError) as error:
        decode(data)
    assert error.value.code is code


def test_limits_are_enforced():
    clip = wav_bytes(speechlike(3.0), SAMPLE_RATE)
    with pytest.raises(ToneserveError) as error:
        decode(clip, Limits(max_bytes=1000))
    assert error.value.code is Code.AUDIO_TOO_LARGE
    with pytest.raises(ToneserveError) as error:
        decode(clip, Limits(max_seconds=1.0))
    assert error.value.code is Code.AUDIO_TOO_LONG
    with pytest.raises(ToneserveError) as error:
        decode(wav_bytes(speechlike(0.05), SAMPLE_RATE))
    assert error.value.code is Code.AUDIO_TOO_SHORT
    stereo = wav_bytes(np.zeros((1600, 3), np.float32), SAMPLE_RATE)
    with pytest.raises(ToneserveError) as error:
        decode(stereo, Limits(max_channels=2))
    assert error.value.code is Code.TOO_MANY_CHANNELS


def test_windows_cover_everything_and_merge_a_short_tail():
    assert fixed_windows(10 * SAMPLE_RATE, 4.0) == [(0, 64000), (64000, 128000), (128000, 160000)]
    assert fixed_windows(8 * SAMPLE_RATE + 100, 4.0) == [(0, 64000), (64000, 128100)]
    assert fixed_windows(100, 4.0) == [(0, 100)]
