"""Silero VAD on numpy + ONNX Runtime: speech probabilities per frame for a padded batch.

Copied next to the Triton model (``vad_model.py``, which becomes ``model.py``), so it
imports nothing but numpy and onnxruntime: no torch, no package-relative imports.

``SileroVad.probabilities`` reproduces silero-vad's own ``OnnxWrapper.__call__`` /
``get_speech_timestamps`` framing for every item of a padded batch at once:

* the audio is cut into windows of 512 samples (256 at 8 kHz); the last, partial
  window is zero-padded to a full window, so an item of ``n`` samples has
  ``ceil(n / 512)`` frames;
* each window is fed with the 64 samples (32 at 8 kHz) that precede it prepended:
  zeros for the first window, then the last 64 samples of the previous window;
* the recurrent state ``[2, B, 128]`` and the context start at zero for every
  stream and are carried per row, so a row never sees another row's audio.

Samples past an item's own length are zeroed before anything runs (which is
exactly silero's tail padding), and frames past its own frame count are not
computed for it (their probabilities are 0): batching does not change any
item's result. The segmentation of these probabilities (silero's
``get_speech_timestamps`` hysteresis) is the gateway's: ``gateway/vad_segments.py``.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000


def window_samples(sampling_rate: int = SAMPLE_RATE) -> int:
    """Samples per VAD frame: 512 at 16 kHz (32 ms), 256 at 8 kHz."""
    if sampling_rate not in (8000, 16000):
        raise ValueError(f"silero VAD runs at 8000 or 16000 Hz, not {sampling_rate}")
    return 512 if sampling_rate == 16000 else 256


class SileroVad:
    """The standard silero VAD graph (``silero_vad.onnx``: input, state, sr -> output, stateN)."""

    def __init__(self, onnx_path: str, threads: int = 1, sampling_rate: int = SAMPLE_RATE):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{onnx_path} is not a silero VAD graph with inputs input/state/sr: {sorted(names)}")
        self.sampling_rate = int(sampling_rate)
        self.window = window_samples(self.sampling_rate)
        self.context = 64 if self.sampling_rate == 16000 else 32
        self._sr = np.array(self.sampling_rate, dtype=np.int64)

    def probabilities(self, wav: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame speech probabilities of a padded batch.

        wav: [B, S] float32, lens: [B] valid samples per row (<= S).
        Returns probs [B, F] float32 (F = the largest frame count; 0 past a row's
        own frames) and frames [B] int64 (ceil(len / window)).
        """
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2:
            raise ValueError(f"wav must be [batch, samples], got shape {wav.shape}")
        lens = np.asarray(lens).reshape(-1).astype(np.int64)
        batch, width = wav.shape
        if len(lens) != batch:
            raise ValueError(f"{len(lens)} lengths for {batch} rows")
        if np.any(lens < 0) or np.any(lens > width):
            raise ValueError(f"lengths must lie in [0, {width}], got {lens.tolist()}")

        win, ctx = self.window, self.context
        frames = -(-lens // win)
        total = int(frames.max()) if batch else 0
        probs = np.zeros((batch, total), dtype=np.float32)
        if total == 0:
            return probs, frames

        # Rows longest first: at step t the rows still running are a prefix, so
        # finished rows drop out of the batch instead of being computed and discarded.
        order = np.argsort(-frames, kind="stable")
        padded = np.zeros((batch, ctx + total * win), dtype=np.float32)
        for row, item in enumerate(order):
            padded[row, ctx:ctx + lens[item]] = wav[item, :lens[item]]  # zero tail = silero's padding
        # frames[order] is descending, so the rows with frames > t are the first n of them.
        active_per_step = (frames[None, :] > np.arange(total)[:, None]).sum(axis=1)

        state = np.zeros((2, batch, 128), dtype=np.float32)
        sorted_probs = np.zeros((batch, total), dtype=np.float32)
        for t in range(total):
            n = int(active_per_step[t])
            start = t * win  # the chunk's own samples sit at ctx + start; its context just before
            chunk = np.ascontiguousarray(padded[:n, start:start + ctx + win])
            out, new_state = self.session.run(
                None, {"input": chunk, "state": np.ascontiguousarray(state[:, :n]), "sr": self._sr})
            sorted_probs[:n, t] = out[:, 0]
            state[:, :n] = new_state
        probs[order] = sorted_probs
        return probs, frames


__all__ = ["SAMPLE_RATE", "SileroVad", "window_samples"]
