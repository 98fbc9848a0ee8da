"""Prosody of one utterance: pitch (Praat via parselmouth), loudness and speaking rate."""
from __future__ import annotations

import re

import numpy as np
import parselmouth

from toneserve.gateway.sentiment import strip_tags
from toneserve.v1 import toneserve_pb2 as pb

# Speech F0 spans roughly 60-500 Hz, from low male voices to children and raised voices.
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 500.0
PITCH_STEP_S = 0.01
# Praat's autocorrelation method needs a window of 3 periods of the pitch floor (50 ms at 60 Hz)
# and raises PraatError on anything shorter.
_PERIODS_PER_WINDOW = 3
# Loudness of digital silence: -120 dBFS, below any real recording's noise floor.
SILENCE_DBFS = -120.0

# Languages written without spaces between words, where each character counts as a word.
CHARACTER_LANGUAGES = frozenset({"zh", "yue", "ja"})
# Han ideographs (basic, extension A, compatibility, supplementary planes) and kana;
# the kana ranges leave out the middle dot (U+30FB), which is punctuation.
_CJK = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
        "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d")
# One CJK character, or a run of other letters/digits (a latin word or number mixed in).
_CJK_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def count_words(text: str, language: str) -> int:
    """Words of a transcript: CJK characters plus mixed-in words for zh/yue/ja, else
    whitespace-separated tokens with a letter or digit (so a lone "-" or "..." is no word)."""
    text = strip_tags(text)
    if language in CHARACTER_LANGUAGES:
        return len(_CJK_WORD.findall(text))
    return sum(1 for token in text.split() if _LETTER_OR_DIGIT.search(token))


def prosody(samples: np.ndarray, rate: int, transcript: str, language: str) -> pb.Prosody:
    """Prosody of float32 mono `samples` in [-1, 1] at `rate` Hz with its transcript."""
    seconds = len(samples) / rate
    words = count_words(transcript, language)
    pitch_hz, pitch_std, voiced_fraction = _pitch(samples, rate)
    return pb.Prosody(
        pitch_hz=pitch_hz,
        pitch_std_semitones=pitch_std,
        loudness_dbfs=_loudness_dbfs(samples),
        speaking_rate_wpm=words / seconds * 60.0 if seconds > 0 else 0.0,
        voiced_fraction=voiced_fraction,
        words=words,
    )


def _loudness_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3.01), floored at SILENCE_DBFS."""
    if len(samples) == 0:
        return SILENCE_DBFS
    # float64: a float32 sum of squares over 30 s of audio loses digits.
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return float(20.0 * np.log10(max(rms, 10.0 ** (SILENCE_DBFS / 20.0))))


def _pitch(samples: np.ndarray, rate: int) -> tuple[float, float, float]:
    """(median F0 in Hz, F0 spread in semitones, voiced fraction of frames); zeros when the
    input is too short for one analysis window or has no voiced frame."""
    if len(samples) * PITCH_FLOOR_HZ < _PERIODS_PER_WINDOW * rate:
        return 0.0, 0.0, 0.0
    sound = parselmouth.Sound(samples.astype(np.float64), sampling_frequency=rate)
    # to_pitch without a method is Praat's "To Pitch (ac)"; unvoiced frames read 0 Hz.
    pitch = sound.to_pitch(time_step=PITCH_STEP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    if voiced.size == 0:
        return 0.0, 0.0, 0.0
    median = float(np.median(voiced))
    # A single voiced frame has a spread of 0, as it should.
    spread = float(np.std(12.0 * np.log2(voiced / median)))
    return median, spread, voiced.size / f0.size
