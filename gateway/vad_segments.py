"""silero-vad's speech segmentation on precomputed frame probabilities.

The gateway gets one speech probability per 512-sample frame from the ``vad``
model on Triton (model_repository/runners/vad_core.py) and cuts utterances here.
``speech_segments`` is silero-vad 6.2.3's ``get_speech_timestamps`` hysteresis
ported line for line (test_vad.py checks it gives identical segments), so
it stays in silero's own shape rather than ours. Pure Python and numpy: the
gateway image has no torch and no onnxruntime.
"""
from __future__ import annotations

import numpy as np

from toneserve.contract import SAMPLE_RATE, VAD_FRAME


def speech_segments(probs, frames: int | None = None, threshold: float = 0.5,
                    neg_threshold: float | None = None, min_speech_ms: float = 250,
                    min_silence_ms: float = 100, speech_pad_ms: float = 30,
                    max_speech_s: float = float("inf"), min_silence_at_max_speech_ms: float = 98,
                    use_max_poss_sil_at_max_speech: bool = True,
                    num_samples: int | None = None) -> list[tuple[int, int]]:
    """Speech segments (start_sample, end_sample) from one item's frame probabilities.

    A port of silero-vad 6.2.3 ``get_speech_timestamps_from_probs`` (what
    ``get_speech_timestamps`` runs after computing the probabilities), with the
    same defaults and results. ``frames`` keeps the first ``frames`` values of
    ``probs`` (a row of a padded batch). ``num_samples`` is the audio's length in
    samples: give it to match ``get_speech_timestamps`` exactly (it bounds the
    last segment's end); silero's default is ``frames * window``. 16 kHz only (silero's 8 kHz
    mode, with its 256-sample window, is not served).
    """
    sampling_rate = SAMPLE_RATE
    window = VAD_FRAME
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
