"""Prosody of one utterance: pitch (Praat via parselmouth), loudness and speaking rate."""
from __future__ import annotations

import numpy as np
import parselmouth

from toneserve.gateway import words
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


def prosody(samples: np.ndarray, rate: int, transcript: str, language: str) -> pb.Prosody:
    """Prosody of float32 mono `samples` in [-1, 1] at `rate` Hz with its transcript."""
    seconds = len(samples) / rate
    count = words.count(transcript, language)
    pitch_hz, pitch_std, voiced_fraction = _pitch(samples, rate)
    return pb.Prosody(
        pitch_hz=pitch_hz,
        pitch_std_semitones=pitch_std,
        loudness_dbfs=_loudness_dbfs(samples),
        speaking_rate_wpm=count / seconds * 60.0 if seconds > 0 else 0.0,
        voiced_fraction=voiced_fraction,
        words=count,
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
