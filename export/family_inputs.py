"""Inputs the families share: the padded batches their variants are judged on."""
from __future__ import annotations

import numpy as np

from toneserve.samples import speechlike


def padded_audio(seconds=(1.5, 2.5, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    """A realistic, mixed-length, padded batch of speech-like clips: (wav [B, S], wav_lens [B])."""
    clips = [speechlike(s, seed=i) for i, s in enumerate(seconds)]
    lens = np.array([len(c) for c in clips], np.int64)
    wav = np.zeros((len(clips), lens.max()), np.float32)
    for i, clip in enumerate(clips):
        wav[i, :len(clip)] = clip
    return wav, lens
