"""Tone (the emotion2vec+ distribution) and words (text sentiment) reconciled into one judgement.

The voice is reduced to a point on the valence/arousal plane; valence is then blended with
the text score. Where the voice has no opinion (its top class carries no affect, or the
model is unsure) it abstains and the words decide alone.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from toneserve.gateway.sentiment import label
from toneserve.gateway.thresholds import Thresholds
from toneserve.v1 import toneserve_pb2 as pb

# (valence in [-1, 1], arousal in [0, 1]) of each emotion2vec+ class, placed by the class's
# position on the circumplex model of affect (Russell, J. A. (1980). A circumplex model of
# affect. Journal of Personality and Social Psychology, 39(6), 1161-1178): valence is the
# horizontal axis (pleasant/unpleasant), arousal the vertical one (activated/deactivated).
AFFECT: dict[str, tuple[float, float]] = {
    "angry": (-0.8, 0.9),
    "disgusted": (-0.7, 0.5),
    "fearful": (-0.7, 0.8),
    "happy": (0.8, 0.7),
    "neutral": (0.0, 0.2),
    "sad": (-0.7, 0.2),
    "surprised": (0.3, 0.8),
}
# Classes emotion2vec+ emits that say nothing about affect: they never place the voice.
NO_AFFECT = ("other", "unknown")
# The emotion2vec+ label set; any other name in a distribution is ignored.
LABELS = (*AFFECT, *NO_AFFECT)

# How many of a speaker's earlier segments the escalation rise is measured against.
ESCALATION_HISTORY = 3


@dataclass(frozen=True)
class Tone:
    """The voice on the circumplex: valence and arousal over the affective classes."""
    valence: float
    arousal: float
    # Most probable emotion2vec+ class ("" when the distribution names none) and its probability.
    top: str
    confidence: float


def _clip(value: float) -> float:
    return max(-1.0, min(1.0, value))


def _probabilities(emotion: pb.Distribution) -> dict[str, float]:
    """Probability by label name: the model's label order is not part of the contract."""
    return {label: p for label, p in zip(emotion.labels, emotion.probabilities) if label in LABELS}


def tone(emotion: pb.Distribution) -> Tone:
    """Valence and arousal as the probability-weighted mean of the classes' circumplex places.

    `other` and `unknown` are left out and the rest renormalised, so that "80 % other, 20 %
    angry" reads as angry rather than as a diluted, near-neutral voice; whether the voice is
    trusted at all is `judge`'s call, from `top` and `confidence`. Ties for the top class go to
    the first in `LABELS`, so the result never depends on the model's label order.
    """
    probabilities = _probabilities(emotion)
    if not probabilities:
        return Tone(valence=0.0, arousal=0.0, top="", confidence=0.0)
    top = max((label for label in LABELS if label in probabilities), key=probabilities.__getitem__)
    mass = sum(probabilities.get(label, 0.0) for label in AFFECT)
    if mass <= 0:
        return Tone(valence=0.0, arousal=0.0, top=top, confidence=probabilities[top])
    valence = sum(probabilities.get(label, 0.0) * v for label, (v, _) in AFFECT.items()) / mass
    arousal = sum(probabilities.get(label, 0.0) * a for label, (_, a) in AFFECT.items()) / mass
    return Tone(valence=valence, arousal=arousal, top=top, confidence=probabilities[top])


def _abstains(voice: Tone, t: Thresholds) -> bool:
    """The voice gives no judgement when its best guess carries no affect or is too unsure."""
    return voice.top not in AFFECT or voice.confidence < t.min_confidence


def judge(emotion: pb.Distribution, text: pb.TextSentiment, t: Thresholds) -> pb.Judgement:
    """One judgement of a segment from its voice and its words.

    Both speak: score = text_weight * text + (1 - text_weight) * tone valence, agreement =
    1 - |text - tone| / 2, flagged TONE_TEXT_MISMATCH when |text - tone| >= mismatch_gap.
    One speaks: its score, agreement 1. Neither: 0 (neutral). The voice does not speak when it
    abstains (flag ABSTAINED); the words do not when no text model scored them. The text score
    is clipped to [-1, 1], so the score, a blend of values in that range, stays in it. tone_score
    and arousal are filled even when the voice abstains, so that clients can still plot them.
    """
    voice = tone(emotion)
    abstained = _abstains(voice, t)
    text_score = _clip(text.score)
    flags = [pb.ABSTAINED] if abstained else []
    agreement = 1.0
    if text.scored and not abstained:
        gap = abs(text_score - voice.valence)
        score = t.text_weight * text_score + (1 - t.text_weight) * voice.valence
        agreement = 1 - gap / 2
        if gap >= t.mismatch_gap:
            flags.append(pb.TONE_TEXT_MISMATCH)
    elif text.scored:
        score = text_score
    elif not abstained:
        score = voice.valence
    else:
        score = 0.0
    return pb.Judgement(sentiment=label(score, t.sentiment_break), score=score, tone_score=voice.valence,
                        arousal=voice.arousal, agreement=agreement, flags=flags)


def _negative_arousal(judgement: pb.Judgement) -> float:
    """Arousal of an unpleasant voice, in [0, 1]: an excited happy voice counts 0."""
    return judgement.arousal * max(0.0, -judgement.tone_score)


def mark_escalation(segments: list[pb.Segment], t: Thresholds) -> None:
    """Flag ESCALATION on segments where a speaker's voice turns sharply more upset.

    For each speaker separately, negative arousal na = arousal * max(0, -tone_score). A
    segment escalates when both
      * na - min(na of the speaker's previous 3 non-abstained segments) >= escalation_rise, and
      * its own na >= escalation_rise.
    The second follows from the first, as na is never below 0, so only the rise is tested.
    The minimum (not the last value) is the baseline so that a climb spread over a few
    segments still counts, while steady anger stops flagging once the calm segments have left
    the window. A speaker's first judged segment has no baseline and never escalates. Abstained segments
    never escalate and are not history: their tone_score is not a judgement of the voice.
    Other speakers' segments do not matter: escalation is one voice rising.

    `segments` are those of all speakers, each with its judgement filled in; they are taken
    in start order. The flag is appended in place, once.
    """
    history: dict[str, deque[float]] = {}
    for segment in sorted(segments, key=lambda s: s.start_ms):
        judgement = segment.judgement
        if pb.ABSTAINED in judgement.flags:
            continue
        na = _negative_arousal(judgement)
        previous = history.setdefault(segment.speaker, deque(maxlen=ESCALATION_HISTORY))
        rising = previous and na - min(previous) >= t.escalation_rise
        if rising and pb.ESCALATION not in judgement.flags:
            judgement.flags.append(pb.ESCALATION)
        previous.append(na)
