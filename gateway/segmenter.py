"""Utterances from a channel's audio as it is decoded, in bounded memory.

silero's segmentation (``vad_segments.speech_segments``) needs the probabilities
of a whole recording; an hour-long call must not be held whole. ``Segmenter``
runs the same hysteresis over a moving *region*: the frames since the end of the
last finished utterance. After each block it re-segments the region and hands
out every utterance that later audio can no longer change:

* every segment but the region's last is closed (the hysteresis is causal);
* the last one is closed once the silence after it is longer than
  ``min_silence_ms`` (its padded end then lies at least ``min_silence - pad``
  before the region's end), otherwise it may still grow.

The region then restarts at a frame where silero's state is "not triggered", so
re-segmenting from there gives what one pass over the whole recording gives
(test_segmenter.py checks it against ``speech_segments`` on the whole).
Memory per channel: the open utterance (at most ``max_utterance_s``, silero's
``max_speech_duration_s`` split) plus one block.

``Segmentation`` walks a recording's blocks for all its channels: the VAD input of
each block (with the previous block's tail as context) and the frames of its output
that belong to the block. The gateway awaits VAD on Triton between the two steps;
the load tests' compute bound runs it in-process: both cut the same utterances.

silero's probabilities depend on where its state was restarted, so VAD restarts on a
fixed grid of *cells* (at least ``VAD_CELL_FRAMES``), not at each block: a block shorter
than a cell is run on VAD together with the cell's earlier blocks (silero is causal, so
their frames come out as they did before). Blocks of 8 frames then give the frames the
probabilities that blocks of 32 give them, bit for bit, and so the same utterances; an
utterance's end is seen within 0.26 s instead of 1 s, for VAD on 4.5 frames per frame of
audio instead of 1.5 (silero is the cheapest model by far).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from toneserve.contract import SAMPLE_RATE, VAD_FRAME
from toneserve.gateway.vad_segments import speech_segments

# silero's own defaults for what this module does not expose as a threshold.
SPEECH_PAD_MS = 30
MIN_SPEECH_MS = 250
# Blocks of a recording sent whole: 30.72 s, a whole number of VAD frames, so only the last
# block ends inside one.
BLOCK_FRAMES = 960
# silero restarts its recurrent state at every call; the last 0.5 s of the previous block is run
# again in front of each block so the state is warm at the seam (those frames are dropped).
VAD_CONTEXT = 16 * VAD_FRAME
# VAD's state restarts every this many frames (1.024 s), or every block where blocks are longer.
VAD_CELL_FRAMES = 32


def block_seconds(frames: int = BLOCK_FRAMES) -> float:
    """The length of a block of `frames` VAD frames, as `AudioStream.blocks()` takes it."""
    return frames * VAD_FRAME / SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    channel: int
    start: int  # first sample, in 16 kHz samples from the recording's start
    samples: np.ndarray  # float32 [n]

    @property
    def end(self) -> int:
        return self.start + len(self.samples)

    def same(self, other: Utterance) -> bool:
        """The same span of the same channel (of one recording: so the same samples)."""
        return (self.channel, self.start, self.end) == (other.channel, other.start, other.end)


class Segmenter:
    def __init__(self, channel: int, vad_threshold: float = 0.5, min_silence_ms: int = 300,
                 max_utterance_s: float = 30.0):
        self.channel = channel
        self.options: dict[str, Any] = dict(threshold=vad_threshold, min_silence_ms=min_silence_ms,
                                            min_speech_ms=MIN_SPEECH_MS, speech_pad_ms=SPEECH_PAD_MS,
                                            max_speech_s=max_utterance_s)
        # A closed segment's padded end lies at least this far before the region's end.
        self.closed_margin = (min_silence_ms - SPEECH_PAD_MS) * SAMPLE_RATE // 1000
        # Without speech in sight the region keeps only this much (more than a starting utterance
        # shorter than MIN_SPEECH_MS plus its padding needs).
        self.idle_keep = SAMPLE_RATE
        self.region = 0  # first sample of the region (a multiple of VAD_FRAME)
        self.audio = np.zeros(0, np.float32)  # the region's samples
        self.probs = np.zeros(0, np.float32)  # the region's frame probabilities
        self.handed_out = 0  # end of the last utterance handed out, relative to the region

    def feed(self, samples: np.ndarray, probs: np.ndarray) -> list[Utterance]:
        """Append a block (a whole number of frames, except at the very end) and its frame
        probabilities; return the utterances it finished."""
        if len(probs) != -(-len(samples) // VAD_FRAME):
            raise ValueError(f"{len(samples)} samples need {-(-len(samples) // VAD_FRAME)} probabilities, "
                             f"got {len(probs)}")
        if len(self.audio) % VAD_FRAME:
            raise ValueError("only the last block may end inside a frame")
        self.audio = np.concatenate([self.audio, np.asarray(samples, np.float32)])
        self.probs = np.concatenate([self.probs, np.asarray(probs, np.float32)])
        return self._cut(final=False)

    def finish(self) -> list[Utterance]:
        """The recording ended: every remaining segment is finished."""
        return self._cut(final=True)

    def pending(self) -> Utterance | None:
        """The open utterance as it will be finished if what follows is silence, once its padded end has
        arrived (some silence after it was seen already); None while speech goes on or none is open.

        The region is segmented with ``min_silence_ms`` of silent frames appended: silero's hysteresis
        is causal, so where the frames to come are indeed silent, the utterance a later ``feed`` finishes
        is this one, sample for sample. Where speech resumes first, it grows instead. A live stream
        analyses the pending utterance early, and keeps that analysis only if the utterance finished
        is the same (``Utterance.same``)."""
        length = len(self.audio)
        silence = math.ceil(self.options["min_silence_ms"] * SAMPLE_RATE / 1000 / VAD_FRAME) + 1
        probs = np.concatenate([self.probs, np.zeros(silence, np.float32)])
        segments = speech_segments(probs, num_samples=length + silence * VAD_FRAME, **self.options)
        if not segments or segments[-1][1] > length:
            return None
        start, end = max(segments[-1][0], self.handed_out), segments[-1][1]
        return Utterance(self.channel, self.region + start, self.audio[start:end].copy()) if end > start else None

    def _cut(self, final: bool) -> list[Utterance]:
        length = len(self.audio)
        segments = speech_segments(self.probs, num_samples=length, **self.options)
        if not final and segments and segments[-1][1] > length - self.closed_margin:
            open_start = segments.pop()[0]
        else:
            open_start = None
        # An utterance cut at max_utterance_s may be followed at once by the next one, which
        # must not start before the region (hence before the audio handed out already).
        segments = [(max(start, self.handed_out), end) for start, end in segments]
        done = [Utterance(self.channel, self.region + start, self.audio[start:end].copy())
                for start, end in segments if end > start]
        if final:
            restart = length
        elif open_start is not None:
            # At the open segment's padded start: silero is not triggered before its first speech frame.
            restart = open_start
        else:
            restart = length - self.idle_keep
        if segments:
            restart = max(restart, segments[-1][1])
        restart = min(max(restart, 0), length)
        handed_out = segments[-1][1] if segments else self.handed_out
        restart = restart // VAD_FRAME * VAD_FRAME  # the region starts on a frame
        self.handed_out = max(handed_out - restart, 0)
        self.region += restart
        self.audio = self.audio[restart:]
        self.probs = self.probs[restart // VAD_FRAME:]
        return done


class Segmentation:
    """The utterances of a recording's channels, block by block.

    Blocks are float32 [channels, n] at 16 kHz, all but the last `block_frames` VAD frames
    long. For each block, VAD runs on `vad_input(block)` (the current cell's earlier blocks and
    the previous cell's last VAD_CONTEXT samples in front) and `feed(block, probabilities)` takes
    its output, one row per channel, and returns the utterances that block finished; `finish()`
    returns the rest. A cell is the fewest whole blocks holding VAD_CELL_FRAMES: one block where
    blocks are that long or longer (then this is one block and its context, as ever).
    """

    def __init__(self, channels: Iterable[int], vad_threshold: float, min_silence_ms: int,
                 max_utterance_s: float, block_frames: int = BLOCK_FRAMES):
        """`channels`: the channel number of each row (reported in each Utterance)."""
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        self.segmenters = [Segmenter(channel, vad_threshold, min_silence_ms, max_utterance_s) for channel in channels]
        self.cell_samples = -(-VAD_CELL_FRAMES // block_frames) * block_frames * VAD_FRAME
        self.context: np.ndarray | None = None  # the previous cell's tail
        self.cell: list[np.ndarray] = []  # the current cell's blocks so far
        self.cell_length = 0

    def vad_input(self, block: np.ndarray) -> np.ndarray:
        parts = ([] if self.context is None else [self.context]) + self.cell + [block]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def feed(self, block: np.ndarray, probs: np.ndarray) -> list[Utterance]:
        """`probs`: VAD's frame probabilities of `vad_input(block)`, [channels, frames]."""
        if self.cell_length + block.shape[1] > self.cell_samples:
            raise ValueError(f"a block of {block.shape[1]} samples after {self.cell_length} overruns the "
                             f"VAD cell of {self.cell_samples}: blocks must be block_frames long")
        skip = (0 if self.context is None else self.context.shape[1]) // VAD_FRAME + self.cell_length // VAD_FRAME
        probs = probs[:, skip:skip + -(-block.shape[1] // VAD_FRAME)]
        self.cell.append(block)
        self.cell_length += block.shape[1]
        if self.cell_length == self.cell_samples:
            self.context = np.concatenate(self.cell, axis=1)[:, -VAD_CONTEXT:]
            self.cell, self.cell_length = [], 0
        return [utterance for row, segmenter in enumerate(self.segmenters)
                for utterance in segmenter.feed(block[row], probs[row])]

    def finish(self) -> list[Utterance]:
        return [utterance for segmenter in self.segmenters for utterance in segmenter.finish()]

    def pending(self) -> list[Utterance]:
        """Each channel's open utterance as it will be finished if silence follows (Segmenter.pending)."""
        return [utterance for segmenter in self.segmenters if (utterance := segmenter.pending()) is not None]
