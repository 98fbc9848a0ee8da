"""Who speaks when inside a channel: the pipeline's side of diarization.

The analysis asks its `Backend` for a speaker embedding of each utterance (`Backend.speaker`); an
utterance long enough to hold two voices is first embedded in windows, and cut where the voice
changes (`diarization.change_points`), so that each piece is transcribed and judged as a segment
of its own. Each piece's embedding is kept (256 floats), and once the recording has ended the
pieces of each diarized channel are clustered (`diarization.cluster`) and the segments renamed.
Live streams get a provisional speaker as each segment is sent (`diarization.OnlineClusters`).

Which channels are diarized (`Diarization.mode`), the hints and the names follow the API
(proto `Diarization`): a channel where one voice is found keeps its usual name.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from toneserve.contract import SAMPLE_RATE, Code, ToneserveError
from toneserve.gateway import diarization
from toneserve.gateway.segmenter import Utterance
from toneserve.gateway.settings import Settings
from toneserve.v1 import toneserve_pb2 as pb

Mode = pb.Diarization.Mode

# Utterances at least this long are embedded in windows and cut where the voice changes; shorter
# ones get one embedding. Two windows are needed to see a change.
WINDOW_SECONDS = 1.5
WINDOW_SHIFT_SECONDS = 0.75
SPLIT_MIN_SECONDS = 3.0


@dataclass(frozen=True)
class Plan:
    """What a request asked of diarization, checked before any audio is read."""

    mode: int  # pb.Diarization.Mode
    hints: diarization.Hints
    limit: int  # the server's cap on speakers per channel

    def diarized(self, channels: list[int]) -> set[int]:
        """Which of the analysed channels (-1: mixed down) are diarized."""
        if self.mode == Mode.OFF:
            return set()
        if self.mode == Mode.ON or len(channels) == 1:
            return set(channels)
        return set()


def plan(options: pb.AnalyzeRequest, settings: Settings) -> Plan:
    """The request's diarization options; INVALID_ARGUMENT for hints that cannot hold."""
    d = options.diarization
    if d.mode not in Mode.values():
        raise ToneserveError(Code.INVALID_ARGUMENT, f"diarization.mode {d.mode} is not one of AUTO, ON, OFF")
    limit = settings.max_speakers
    named = {"speakers_expected": d.speakers_expected, "min_speakers": d.min_speakers,
             "max_speakers": d.max_speakers}
    for name, value in named.items():
        if value < 0:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"diarization.{name} must be positive (0: not given), "
                                                        f"got {value}")
        if value > limit:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"diarization.{name} is {value}; this server tells apart "
                                                        f"at most {limit} speakers per channel")
    low, high = d.min_speakers, d.max_speakers
    if low and high and low > high:
        raise ToneserveError(Code.INVALID_ARGUMENT, f"diarization.min_speakers ({low}) is above "
                                                    f"max_speakers ({high})")
    expected = d.speakers_expected
    if expected and ((low and expected < low) or (high and expected > high)):
        raise ToneserveError(Code.INVALID_ARGUMENT, f"diarization.speakers_expected ({expected}) is outside "
                                                    f"[min_speakers, max_speakers] = [{low or 1}, {high or limit}]")
    if d.mode == Mode.OFF and any(named.values()):
        raise ToneserveError(Code.INVALID_ARGUMENT, "diarization hints were given with mode OFF")
    return Plan(d.mode, diarization.Hints(expected=expected, min_speakers=low, max_speakers=high), limit)


def windows(n: int) -> list[tuple[int, int]]:
    """[0, n) as WINDOW_SECONDS windows every WINDOW_SHIFT_SECONDS, the last one ending at n."""
    size, shift = int(WINDOW_SECONDS * SAMPLE_RATE), int(WINDOW_SHIFT_SECONDS * SAMPLE_RATE)
    if n <= size:
        return [(0, n)]
    starts = list(range(0, n - size, shift)) + [n - size]
    return [(a, a + size) for a in starts]


def split(utterance: Utterance, spans: list[tuple[int, int]], changes: list[int]) -> list[Utterance]:
    """`utterance` cut before each window index in `changes`, at the start of the window where the new
    voice is found (diarization.change_points; measured there against cuts further into the overlap)."""
    cuts = [0]
    for index in sorted(set(changes)):
        if 0 < index < len(spans):
            cut = spans[index][0]
            if cut > cuts[-1]:
                cuts.append(cut)
    cuts.append(len(utterance.samples))
    return [Utterance(utterance.channel, utterance.start + a, utterance.samples[a:b])
            for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


@dataclass
class Voices:
    """The diarized pieces of one channel: each segment and its embedding, and live provisional labels."""

    base: str  # the channel's usual name (its role, "channel_<c>", "mix")
    prefix: str  # the numbered names' stem: the role, or "speaker" (one analysed channel), or "channel_<c>"
    hints: diarization.Hints
    limit: int
    segments: list[pb.Segment] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    online: diarization.OnlineClusters = field(init=False)  # live labels, under the same hints and cap
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.online = diarization.OnlineClusters(self.hints, limit=self.limit)

    def name(self, label: int, count: int) -> str:
        return self.base if count <= 1 else f"{self.prefix}_{label + 1}"

    def add(self, segment: pb.Segment, embedding: np.ndarray, live: bool) -> None:
        """Keep a finished piece and its embedding. Live: the segment gets its provisional speaker now."""
        with self.lock:
            self.segments.append(segment)
            self.embeddings.append(embedding)
            if live:
                label = self.online.add(embedding, (segment.end_ms - segment.start_ms) / 1000)
                # the voices told apart so far: one centroid each
                segment.speaker = segment.provisional_speaker = self.name(label, len(self.online.sums))

    def finish(self) -> list[str]:
        """Cluster the channel's pieces (in time order: the labels come numbered in order of first speech)
        and rename its segments; returns the speakers' names in that order (the base name alone when one
        voice was found, or when the channel had no speech)."""
        order = sorted(range(len(self.segments)), key=lambda i: (self.segments[i].start_ms, i))
        if not order:
            return [self.base]
        vectors = np.stack([self.embeddings[i] for i in order])
        seconds = np.array([(self.segments[i].end_ms - self.segments[i].start_ms) / 1000 for i in order])
        labels = diarization.cluster(vectors, seconds, self.hints, limit=self.limit)
        count = int(labels.max()) + 1
        for i, label in zip(order, labels):
            self.segments[i].speaker = self.name(int(label), count)
        return [self.name(k, count) for k in range(count)]
