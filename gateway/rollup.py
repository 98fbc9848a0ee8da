"""Per-speaker and per-call summaries of a call's finished segments.

Talk, overlap and interruptions come from interval arithmetic on sorted segment bounds (a
merge and a sweep over start/end events, O(n log n)): an hour-long call has thousands of
segments. Averages are weighted by segment duration, so a long utterance outweighs a
one-word reply.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from itertools import groupby

from toneserve.v1 import toneserve_pb2 as pb

QUARTERS = 4
# Flags that point a reviewer at a segment. ABSTAINED is not one: it says the voice model
# had no opinion, not that anything happened in the call.
REVIEW_FLAGS = (pb.TONE_TEXT_MISMATCH, pb.ESCALATION)


def _seconds(segment: pb.Segment) -> float:
    """Duration in seconds; a segment with end <= start takes no time."""
    return max(0, segment.end_ms - segment.start_ms) / 1000


def _weighted_mean(pairs: Iterable[tuple[float, float]]) -> float:
    """Mean of the values of (weight, value) pairs; 0 when there is no weight."""
    total = weighted = 0.0
    for weight, value in pairs:
        total += weight
        weighted += weight * value
    return weighted / total if total > 0 else 0.0


def _merge(segments: list[pb.Segment]) -> list[tuple[int, int]]:
    """The union of the segments as disjoint (start_ms, end_ms) intervals, in order."""
    merged: list[list[int]] = []
    for start, end in sorted((s.start_ms, s.end_ms) for s in segments if s.end_ms > s.start_ms):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _length_seconds(union: list[tuple[int, int]]) -> float:
    return sum(end - start for start, end in union) / 1000


def _overlap(start: float, end: float, low: float, high: float) -> float:
    return max(0.0, min(end, high) - max(start, low))


def _quarters(segments: list[pb.Segment], union: list[tuple[int, int]], duration: float) -> list[pb.Quarter]:
    """[0, duration) cut into 4 equal quarters.

    A segment counts in each quarter by the time it spends there, so one straddling a
    boundary is split. Talk time is that of the union (somebody talks), which for a single
    speaker is the sum of the segments' time.
    """
    quarters = []
    for index in range(QUARTERS):
        low, high = duration * index / QUARTERS, duration * (index + 1) / QUARTERS
        pairs = [(_overlap(s.start_ms / 1000, s.end_ms / 1000, low, high), s.judgement.score) for s in segments]
        talk = sum(_overlap(start / 1000, end / 1000, low, high) for start, end in union)
        quarters.append(pb.Quarter(index=index, has_speech=any(weight > 0 for weight, _ in pairs),
                                   sentiment=_weighted_mean(pairs), talk_seconds=talk))
    return quarters


def _timeline_point(segment: pb.Segment) -> pb.TimelinePoint:
    emotion = segment.emotion
    probability = dict(zip(emotion.labels, emotion.probabilities)).get(emotion.top, 0.0)
    return pb.TimelinePoint(speaker=segment.speaker, start_ms=segment.start_ms, end_ms=segment.end_ms,
                            emotion=emotion.top, probability=probability, sentiment=segment.judgement.score)


def _mean_emotion(segments: list[pb.Segment]) -> pb.Distribution:
    """Duration-weighted mean of the emotion distributions, by label name (first-seen order).

    A label missing from a segment counts 0 there. No duration at all: no labels.
    """
    sums: dict[str, float] = {}
    total = 0.0
    for segment in segments:
        weight = _seconds(segment)
        total += weight
        for label, p in zip(segment.emotion.labels, segment.emotion.probabilities):
            sums[label] = sums.get(label, 0.0) + weight * p
    if total <= 0:
        return pb.Distribution()
    return pb.Distribution(labels=list(sums), probabilities=[v / total for v in sums.values()],
                           top=max(sums, key=sums.__getitem__))


def _mean_loudness(segments: list[pb.Segment]) -> float:
    """Duration-weighted mean level in dBFS, averaged as power: 10 * log10(mean of 10^(dB/10)).

    Decibels are logarithmic, so their arithmetic mean understates loud passages: a second
    at -20 dB and one at -40 dB carry the energy of two seconds at -23 dB, not at -30 dB.
    0 when there is no speech; -inf when every segment is digital silence.
    """
    if not any(_seconds(s) > 0 for s in segments):
        return 0.0
    power = _weighted_mean((_seconds(s), 10 ** (s.prosody.loudness_dbfs / 10)) for s in segments)
    return 10 * math.log10(power) if power > 0 else -math.inf


def _shared(segments: list[pb.Segment], union: list[tuple[int, int]], duration: float) -> dict:
    """The fields SpeakerSummary and CallSummary share, over `segments` (in time order) and
    their union.

    Speaking rate is words per minute of speech (the sum of segment durations, not the union),
    so that two people talking at once are not counted as one fast talker.
    """
    speech = sum(_seconds(s) for s in segments)
    words = sum(s.prosody.words for s in segments)
    return dict(
        segments=len(segments),
        average_sentiment=_weighted_mean((_seconds(s), s.judgement.score) for s in segments),
        quarters=_quarters(segments, union, duration),
        emotion_timeline=[_timeline_point(s) for s in segments],
        emotion=_mean_emotion(segments),
        loudness_dbfs=_mean_loudness(segments),
        speaking_rate_wpm=words / (speech / 60) if speech > 0 else 0.0,
        flagged_segments=sum(any(f in REVIEW_FLAGS for f in s.judgement.flags) for s in segments),
    )


def _sweep(segments: list[pb.Segment]) -> tuple[float, dict[str, float], Counter]:
    """Overlap and interruptions from one pass over the segments' start/end events.

    Returns (seconds when 2+ speakers talk, each speaker's seconds talking while another does,
    each speaker's interruptions). A segment interrupts when it starts strictly inside another
    speaker's segment (other.start < start < other.end): at each instant ends are taken first
    and starts are checked before any of them is added, so back-to-back turns and two people
    starting together are not interruptions. A segment without duration is left out.
    """
    events = sorted((ms, is_start, s.speaker) for s in segments if s.end_ms > s.start_ms
                    for ms, is_start in ((s.start_ms, True), (s.end_ms, False)))
    active: Counter = Counter()  # speaker -> open segments; only speakers with some open
    call_overlap_ms = 0
    overlap_ms: Counter = Counter()
    interruptions: Counter = Counter()
    previous = None
    for ms, group in groupby(events, key=lambda e: e[0]):
        if previous is not None and len(active) >= 2:
            call_overlap_ms += ms - previous
            for speaker in active:
                overlap_ms[speaker] += ms - previous
        starts = []
        for _, is_start, speaker in group:  # False (end) sorts before True (start)
            if is_start:
                starts.append(speaker)
            else:
                active[speaker] -= 1
                if not active[speaker]:
                    del active[speaker]
        for speaker in starts:
            interruptions[speaker] += any(other != speaker for other in active)
        active.update(starts)
        previous = ms
    overlap = {speaker: ms / 1000 for speaker, ms in overlap_ms.items()}
    return call_overlap_ms / 1000, overlap, interruptions


def summarize(segments: list[pb.Segment], duration_seconds: float,
              speakers: list[tuple[str, int]]) -> tuple[list[pb.SpeakerSummary], pb.CallSummary]:
    """One summary per speaker of `speakers` ((name, channel), in that order) and one for the call.

    A speaker without segments gets a summary of zeros. Non-talk time is the duration minus
    talk time, never below 0 (segment bounds are rounded to the millisecond and may pass the
    end of the audio by a fraction of one). Flagged segments are those a reviewer should look
    at: TONE_TEXT_MISMATCH or ESCALATION. Every segment's speaker must be among `speakers`.
    """
    ordered = sorted(segments, key=lambda s: (s.start_ms, s.end_ms))
    by_speaker: dict[str, list[pb.Segment]] = {name: [] for name, _ in speakers}
    for segment in ordered:
        if segment.speaker not in by_speaker:
            raise ValueError(f"segment of speaker {segment.speaker!r} at {segment.start_ms} ms: not among "
                             f"the call's speakers {sorted(by_speaker)}")
        by_speaker[segment.speaker].append(segment)
    call_overlap, overlap, interruptions = _sweep(ordered)

    summaries = []
    for name, channel in speakers:
        own = by_speaker[name]
        union = _merge(own)
        talk = _length_seconds(union)
        summaries.append(pb.SpeakerSummary(
            speaker=name, channel=channel, talk_seconds=talk, non_talk_seconds=max(0.0, duration_seconds - talk),
            words=sum(s.prosody.words for s in own), overlap_seconds=overlap.get(name, 0.0),
            interruptions=interruptions[name], **_shared(own, union, duration_seconds)))

    union = _merge(ordered)
    talk = _length_seconds(union)
    call = pb.CallSummary(
        duration_seconds=duration_seconds, talk_seconds=talk, non_talk_seconds=max(0.0, duration_seconds - talk),
        overlap_seconds=call_overlap, interruptions=sum(interruptions.values()),
        **_shared(ordered, union, duration_seconds))
    return summaries, call
