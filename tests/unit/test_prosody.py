"""Prosody on synthetic signals whose pitch, loudness and duration are known exactly."""
from __future__ import annotations

import numpy as np
import pytest

from toneserve.gateway.prosody import prosody
from toneserve.gateway.words import count as count_words

RATE = 16000


def harmonic(f0_hz: float, seconds: float = 1.0, harmonics: int = 5) -> np.ndarray:
    """A voice-like tone: f0 and its harmonics with falling amplitude."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(0.3 / k * np.sin(2 * np.pi * f0_hz * k * t) for k in range(1, harmonics + 1))
    return tone.astype(np.float32)


def glide(start_hz: float, end_hz: float, seconds: float = 2.0) -> np.ndarray:
    """A harmonic tone whose pitch rises exponentially (evenly in semitones) from start to end."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = start_hz * (end_hz / start_hz) ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    return sum(0.3 / k * np.sin(k * phase) for k in range(1, 6)).astype(np.float32)


@pytest.mark.parametrize("f0_hz", [150.0, 200.0])
def test_pitch_of_a_harmonic_tone(f0_hz):
    result = prosody(harmonic(f0_hz), RATE, "", "en")
    assert result.pitch_hz == pytest.approx(f0_hz, abs=3.0)
    assert result.voiced_fraction > 0.8
    assert result.pitch_std_semitones < 0.1


def test_a_glide_spreads_the_pitch():
    steady = prosody(harmonic(150.0, seconds=2.0), RATE, "", "en")
    rising = prosody(glide(120.0, 240.0), RATE, "", "en")
    # An octave spread evenly over time: std of a uniform 0..12 semitones is 12/sqrt(12) = 3.46.
    assert rising.pitch_std_semitones > 2.5
    assert rising.pitch_std_semitones > steady.pitch_std_semitones + 2.0
    assert 120.0 < rising.pitch_hz < 240.0


def test_half_voiced():
    signal = np.concatenate([harmonic(150.0), np.zeros(RATE, dtype=np.float32)])
    assert prosody(signal, RATE, "", "en").voiced_fraction == pytest.approx(0.5, abs=0.05)


def test_pitch_is_the_median_not_the_mean():
    # 70 % of the voiced frames at 150 Hz, 30 % an octave up: the mean would be ~195 Hz.
    signal = np.concatenate([harmonic(150.0, seconds=1.4), harmonic(300.0, seconds=0.6)])
    assert prosody(signal, RATE, "", "en").pitch_hz == pytest.approx(150.0, abs=3.0)


def test_silence():
    result = prosody(np.zeros(RATE, dtype=np.float32), RATE, "", "en")
    assert result.loudness_dbfs == -120.0
    assert result.voiced_fraction == 0.0
    assert result.pitch_hz == 0.0
    assert result.pitch_std_semitones == 0.0


def test_white_noise_is_not_voiced():
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, RATE).astype(np.float32)
    assert prosody(noise, RATE, "", "en").voiced_fraction < 0.2


def test_loudness_of_a_full_scale_sine():
    sine = np.sin(2 * np.pi * 440.0 * np.arange(RATE) / RATE).astype(np.float32)
    assert prosody(sine, RATE, "", "en").loudness_dbfs == pytest.approx(-3.0103, abs=0.05)


def test_loudness_halves_by_six_db():
    tone = harmonic(150.0)
    full = prosody(tone, RATE, "", "en").loudness_dbfs
    half = prosody(tone / 2, RATE, "", "en").loudness_dbfs
    assert full - half == pytest.approx(6.0206, abs=0.01)


def test_speaking_rate():
    # 5 words over 2 s: 150 words per minute.
    result = prosody(harmonic(150.0, seconds=2.0), RATE, "one two three four five", "en")
    assert result.words == 5
    assert result.speaking_rate_wpm == pytest.approx(150.0)
    # 6 characters over 1.5 s: 240 per minute.
    result = prosody(harmonic(150.0, seconds=1.5), RATE, "今天天气很好。", "zh")
    assert result.words == 6
    assert result.speaking_rate_wpm == pytest.approx(240.0)


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.02, 0.049])
def test_too_short_for_pitch_does_not_raise(seconds):
    result = prosody(harmonic(150.0, seconds=seconds), RATE, "hi", "en")
    assert result.pitch_hz == 0.0
    assert result.voiced_fraction == 0.0
    assert result.words == 1


def test_shortest_input_with_a_pitch():
    # Praat's lower limit: 3 periods of the 60 Hz floor, 50 ms.
    assert prosody(harmonic(150.0, seconds=0.05), RATE, "", "en").pitch_hz == pytest.approx(150.0, abs=3.0)


def test_empty_input_has_no_rate():
    result = prosody(np.zeros(0, dtype=np.float32), RATE, "hello there", "en")
    assert result.speaking_rate_wpm == 0.0
    assert result.loudness_dbfs == -120.0


@pytest.mark.parametrize("text, language, expected", [
    ("Hello, world!", "en", 2),
    ("i think it's fine - really ...", "en", 5),
    ("it is 3 pm", "en", 4),
    ("<|en|><|NEUTRAL|><|Speech|>hello there", "en", 2),
    ("", "en", 0),
    ("안녕하세요 여러분", "ko", 2),
    ("你好，世界。", "zh", 4),
    ("<|zh|><|NEUTRAL|>好", "zh", 1),
    ("我用iPhone 15拍照", "zh", 6),
    ("我们开会 meeting 吧", "zh", 6),
    ("係咪呀", "yue", 3),
    ("カタカナ・ひらがな、漢字。", "ja", 10),
    ("ラーメン", "ja", 4),
    ("。，！", "zh", 0),
])
def test_count_words(text, language, expected):
    assert count_words(text, language) == expected
