"""Silero VAD on numpy + ONNX Runtime: batched frame probabilities and speech segments.

Copied next to the Triton model (``silero_vad.py`` becomes ``model.py``), so it
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
item's result. ``speech_segments`` is silero's ``get_speech_timestamps``
hysteresis, ported line for line, on precomputed probabilities.
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


def frame_count(num_samples: int, sampling_rate: int = SAMPLE_RATE) -> int:
    """Frames silero computes for ``num_samples`` samples (the partial tail is one frame)."""
    return -(-int(num_samples) // window_samples(sampling_rate))


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


def speech_segments(probs, frames: int | None = None, threshold: float = 0.5,
                    neg_threshold: float | None = None, min_speech_ms: float = 250,
                    min_silence_ms: float = 100, speech_pad_ms: float = 30,
                    max_speech_s: float = float("inf"), min_silence_at_max_speech_ms: float = 98,
                    use_max_poss_sil_at_max_speech: bool = True, num_samples: int | None = None,
                    sampling_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Speech segments (start_sample, end_sample) from one item's frame probabilities.

    A port of silero-vad 6.2.3 ``get_speech_timestamps_from_probs`` (what
    ``get_speech_timestamps`` runs after computing the probabilities), with the
    same defaults and results. ``frames`` keeps the first ``frames`` values of
    ``probs`` (a row of a padded batch). ``num_samples`` is the audio's length in
    samples: give it to match ``get_speech_timestamps`` exactly (it bounds the
    last segment's end); silero's default is ``frames * window``.
    """
    window = window_samples(sampling_rate)
    values = np.asarray(probs, dtype=np.float32).reshape(-1)
    if frames is not None:
        values = values[:int(frames)]
    speech_probs = values.tolist()  # float32 -> Python float, as silero's .item() does
    audio_length_samples = len(speech_probs) * window if num_samples is None else int(num_samples)

    min_speech_samples = sampling_rate * min_speech_ms / 1000
    speech_pad_samples = sampling_rate * speech_pad_ms / 1000
    max_speech_samples = sampling_rate * max_speech_s - window - 2 * speech_pad_samples
    min_silence_samples = sampling_rate * min_silence_ms / 1000
    min_silence_samples_at_max_speech = sampling_rate * min_silence_at_max_speech_ms / 1000

    triggered = False
    speeches = []
    current_speech = {}
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    temp_end = 0  # potential end of the current segment (silence tolerated so far)
    prev_end = next_start = 0  # limits to cut at when the maximum segment length is reached
    possible_ends = []

    for i, speech_prob in enumerate(speech_probs):
        cur_sample = window * i

        # speech again after a temp_end: remember that silence as a cut candidate
        if speech_prob >= threshold and temp_end:
            sil_dur = cur_sample - temp_end
            if sil_dur > min_silence_samples_at_max_speech:
                possible_ends.append((temp_end, sil_dur))
            temp_end = 0
            if next_start < prev_end:
                next_start = cur_sample

        if speech_prob >= threshold and not triggered:  # start of speech
            triggered = True
            current_speech["start"] = cur_sample
            continue

        if triggered and cur_sample - current_speech["start"] > max_speech_samples:  # too long: cut
            if use_max_poss_sil_at_max_speech and possible_ends:
                prev_end, dur = max(possible_ends, key=lambda x: x[1])  # the longest silence in it
                current_speech["end"] = prev_end
                speeches.append(current_speech)
                current_speech = {}
                next_start = prev_end + dur
                if next_start < prev_end + cur_sample:
                    current_speech["start"] = next_start
                else:
                    triggered = False
                prev_end = next_start = temp_end = 0
                possible_ends = []
            else:
                if prev_end:  # the last long-enough silence
                    current_speech["end"] = prev_end
                    speeches.append(current_speech)
                    current_speech = {}
                    if next_start < prev_end:
                        triggered = False
                    else:
                        current_speech["start"] = next_start
                    prev_end = next_start = temp_end = 0
                    possible_ends = []
                else:  # none: cut right here
                    current_speech["end"] = cur_sample
                    speeches.append(current_speech)
                    current_speech = {}
                    prev_end = next_start = temp_end = 0
                    triggered = False
                    possible_ends = []
                    continue

        if speech_prob < neg_threshold and triggered:  # silence inside speech
            if not temp_end:
                temp_end = cur_sample
            sil_dur_now = cur_sample - temp_end
            if not use_max_poss_sil_at_max_speech and sil_dur_now > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if sil_dur_now < min_silence_samples:
                continue
            current_speech["end"] = temp_end
            if current_speech["end"] - current_speech["start"] > min_speech_samples:
                speeches.append(current_speech)
            current_speech = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            possible_ends = []
            continue

    if current_speech and audio_length_samples - current_speech["start"] > min_speech_samples:
        current_speech["end"] = audio_length_samples
        speeches.append(current_speech)

    for i, speech in enumerate(speeches):  # pad each side, splitting short gaps between neighbours
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - speech_pad_samples))
        if i != len(speeches) - 1:
            silence_duration = speeches[i + 1]["start"] - speech["end"]
            if silence_duration < 2 * speech_pad_samples:
                speech["end"] += int(silence_duration // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence_duration // 2))
            else:
                speech["end"] = int(min(audio_length_samples, speech["end"] + speech_pad_samples))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - speech_pad_samples))
        else:
            speech["end"] = int(min(audio_length_samples, speech["end"] + speech_pad_samples))

    return [(int(s["start"]), int(s["end"])) for s in speeches]


__all__ = ["SAMPLE_RATE", "SileroVad", "frame_count", "speech_segments", "window_samples"]
