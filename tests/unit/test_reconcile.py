"""Tone and words reconciled into one judgement; escalation across a speaker's segments."""
from __future__ import annotations

import random

import pytest

from toneserve.gateway.reconcile import judge, mark_escalation, tone
from toneserve.gateway.sentiment import label
from toneserve.gateway.thresholds import Thresholds
from toneserve.v1 import toneserve_pb2 as pb

# emotion2vec+'s label order.
LABELS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
T = Thresholds()
NO_TEXT = pb.TextSentiment(scored=False)
# Judgement fields are float32.
approx = lambda value: pytest.approx(value, abs=1e-6)  # noqa: E731


def dist(labels: list[str] = LABELS, **probabilities: float) -> pb.Distribution:
    values = [probabilities.get(label, 0.0) for label in labels]
    return pb.Distribution(labels=labels, probabilities=values, top=labels[values.index(max(values))])


def text(score: float) -> pb.TextSentiment:
    return pb.TextSentiment(scored=True, score=score, method="vader")


# --- judge ---------------------------------------------------------------------------------

def test_angry_voice_with_positive_words_is_a_mismatch():
    # Tone valence (0.9 * -0.8 + 0.1 * 0) / 1 = -0.72, arousal 0.9 * 0.9 + 0.1 * 0.2 = 0.83.
    judgement = judge(dist(angry=0.9, neutral=0.1), text(0.8), T)
    assert list(judgement.flags) == [pb.TONE_TEXT_MISMATCH]
    assert judgement.tone_score == approx(-0.72)
    assert judgement.arousal == approx(0.83)
    assert judgement.score == approx(0.5 * 0.8 + 0.5 * -0.72)
    assert -0.72 < judgement.score < 0.8
    assert judgement.sentiment == "neutral"
    assert judgement.agreement == approx(1 - 1.52 / 2)
    assert judgement.agreement < 0.3


def test_happy_voice_with_positive_words_agrees():
    # Tone valence 0.8 * 0.8 = 0.64.
    judgement = judge(dist(happy=0.8, neutral=0.2), text(0.6), T)
    assert list(judgement.flags) == []
    assert judgement.score == approx(0.62)
    assert judgement.sentiment == "positive"
    assert judgement.agreement == approx(1 - 0.04 / 2)


def test_mismatch_gap_is_a_threshold():
    # |0.5 - (-0.8)| = 1.3.
    assert pb.TONE_TEXT_MISMATCH in judge(dist(angry=1.0), text(0.5), Thresholds(mismatch_gap=1.29)).flags
    assert pb.TONE_TEXT_MISMATCH not in judge(dist(angry=1.0), text(0.5), Thresholds(mismatch_gap=1.31)).flags


def test_top_other_abstains_and_the_words_decide():
    judgement = judge(dist(other=0.7, angry=0.3), text(0.5), T)
    assert list(judgement.flags) == [pb.ABSTAINED]  # no mismatch though the tone says -0.8
    assert judgement.score == approx(0.5)
    assert judgement.sentiment == "positive"
    assert judgement.agreement == 1.0
    # Still filled for plotting: other is left out, so the voice is all angry.
    assert judgement.tone_score == approx(-0.8)
    assert judgement.arousal == approx(0.9)


def test_top_unknown_abstains():
    judgement = judge(dist(unknown=0.6, happy=0.4), text(-0.5), T)
    assert list(judgement.flags) == [pb.ABSTAINED]
    assert judgement.score == approx(-0.5)


def test_flat_distribution_abstains():
    judgement = judge(dist(**{label: 1 / 9 for label in LABELS}), text(-0.6), T)
    assert list(judgement.flags) == [pb.ABSTAINED]
    assert judgement.score == approx(-0.6)
    assert judgement.sentiment == "negative"


def test_min_confidence_is_inclusive():
    emotion = dist(angry=0.5, sad=0.25, neutral=0.25)
    assert pb.ABSTAINED not in judge(emotion, NO_TEXT, Thresholds(min_confidence=0.5)).flags
    assert pb.ABSTAINED in judge(emotion, NO_TEXT, Thresholds(min_confidence=0.51)).flags


def test_only_the_voice_speaks():
    judgement = judge(dist(angry=1.0), NO_TEXT, T)
    assert judgement.score == approx(-0.8)
    assert judgement.sentiment == "negative"
    assert judgement.agreement == 1.0
    assert list(judgement.flags) == []


@pytest.mark.parametrize("emotion", [dist(other=1.0), pb.Distribution()])
def test_neither_speaks_is_neutral_zero(emotion):
    judgement = judge(emotion, NO_TEXT, T)
    assert judgement.score == 0.0
    assert judgement.sentiment == "neutral"
    assert judgement.agreement == 1.0
    assert list(judgement.flags) == [pb.ABSTAINED]


@pytest.mark.parametrize("weight, score", [(0.0, -0.72), (1.0, 0.8), (0.25, 0.25 * 0.8 + 0.75 * -0.72)])
def test_text_weight(weight, score):
    judgement = judge(dist(angry=0.9, neutral=0.1), text(0.8), Thresholds(text_weight=weight))
    assert judgement.score == approx(score)
    # Agreement and mismatch compare the two, whatever their weights.
    assert judgement.agreement == approx(0.24)
    assert pb.TONE_TEXT_MISMATCH in judgement.flags


def test_score_is_clipped():
    judgement = judge(pb.Distribution(), text(1.7), T)
    assert judgement.score == 1.0


@pytest.mark.parametrize("score, expected", [
    (1 / 3, "positive"), (0.3333, "neutral"), (0.0, "neutral"), (-0.3333, "neutral"), (-1 / 3, "negative"),
    (1.0, "positive"), (-1.0, "negative"),
])
def test_label_break_points(score, expected):
    assert label(score, 1 / 3) == expected


@pytest.mark.parametrize("score, expected", [(0.5, "positive"), (0.25, "neutral"), (-0.5, "negative")])
def test_judgement_label_uses_sentiment_break(score, expected):
    assert judge(pb.Distribution(), text(score), Thresholds(sentiment_break=0.5)).sentiment == expected


# --- tone ----------------------------------------------------------------------------------

def test_tone_renormalises_over_affective_classes():
    voice = tone(dist(angry=0.5, happy=0.25, other=0.25))
    assert voice.valence == pytest.approx((0.5 * -0.8 + 0.25 * 0.8) / 0.75)
    assert voice.arousal == pytest.approx((0.5 * 0.9 + 0.25 * 0.7) / 0.75)
    assert voice.top == "angry"
    assert voice.confidence == pytest.approx(0.5)


def test_unknown_label_names_are_ignored():
    labels = [*LABELS, "bored"]
    plain = judge(dist(angry=0.6, neutral=0.4), text(0.2), T)
    noisy = judge(dist(labels, angry=0.6, neutral=0.4, bored=0.9), text(0.2), T)
    assert noisy == plain
    assert tone(dist(labels, angry=0.6, neutral=0.4, bored=0.9)).top == "angry"


def test_distribution_of_unknown_names_only_abstains():
    judgement = judge(dist(["bored", "amused"], bored=0.9, amused=0.1), text(0.4), T)
    assert list(judgement.flags) == [pb.ABSTAINED]
    assert (judgement.score, judgement.tone_score, judgement.arousal) == (approx(0.4), 0.0, 0.0)


def test_labels_are_read_by_name_not_position():
    probabilities = dict(angry=0.55, disgusted=0.05, happy=0.1, neutral=0.2, other=0.05, sad=0.05)
    reference = judge(dist(**probabilities), text(0.7), T)
    shuffled = LABELS[:]
    random.Random(7).shuffle(shuffled)
    for labels in (shuffled, LABELS[::-1]):
        assert judge(dist(labels, **probabilities), text(0.7), T) == reference
    assert reference.tone_score == approx((0.55 * -0.8 + 0.05 * -0.7 + 0.1 * 0.8 + 0.05 * -0.7) / 0.95)


# --- escalation ----------------------------------------------------------------------------

CALM = dict(neutral=1.0)                    # negative arousal 0
FURIOUS = dict(angry=1.0)                   # negative arousal 0.9 * 0.8 = 0.72
MUTED_ANGER = dict(other=0.7, angry=0.3)    # abstains; its tone alone would read 0.72


def segment(speaker: str, start_s: float, emotion: dict[str, float]) -> pb.Segment:
    return pb.Segment(speaker=speaker, start_ms=int(start_s * 1000), end_ms=int(start_s * 1000) + 900,
                      judgement=judge(dist(**emotion), NO_TEXT, T))


def escalated(segments: list[pb.Segment]) -> list[bool]:
    return [pb.ESCALATION in s.judgement.flags for s in segments]


def test_rising_anger_escalates_on_the_later_segment():
    segments = [segment("customer", 0, CALM), segment("customer", 1, CALM), segment("customer", 2, FURIOUS)]
    mark_escalation(segments, T)
    assert escalated(segments) == [False, False, True]


def test_small_rise_does_not_escalate():
    # sad: negative arousal 0.2 * 0.7 = 0.14 < 0.25.
    segments = [segment("customer", 0, CALM), segment("customer", 1, dict(sad=1.0))]
    mark_escalation(segments, T)
    assert escalated(segments) == [False, False]
    mark_escalation(segments, Thresholds(escalation_rise=0.1))
    assert escalated(segments) == [False, True]


def test_first_segment_has_no_baseline():
    segments = [segment("customer", 0, FURIOUS)]
    mark_escalation(segments, T)
    assert escalated(segments) == [False]


def test_other_speakers_do_not_count_as_history():
    # Pooled history would flag the customer's second angry segment (calm agent in between)
    # and miss the rise after the calm customer segment (angry agent in between).
    steady = [segment("customer", 0, FURIOUS), segment("agent", 1, CALM), segment("agent", 2, CALM),
              segment("agent", 3, CALM), segment("customer", 4, FURIOUS)]
    rising = [segment("customer", 0, CALM), segment("agent", 1, FURIOUS), segment("agent", 2, FURIOUS),
              segment("agent", 3, FURIOUS), segment("customer", 4, FURIOUS)]
    mark_escalation(steady, T)
    mark_escalation(rising, T)
    assert escalated(steady) == [False] * 5
    assert escalated(rising) == [False, False, False, False, True]


def test_abstained_segments_neither_escalate_nor_count_as_history():
    segments = [segment("customer", 0, CALM), segment("customer", 1, MUTED_ANGER), segment("customer", 2, MUTED_ANGER),
                segment("customer", 3, MUTED_ANGER), segment("customer", 4, FURIOUS)]
    mark_escalation(segments, T)
    assert escalated(segments) == [False, False, False, False, True]


def test_steady_anger_stops_flagging_once_calm_leaves_the_window():
    segments = [segment("customer", 0, CALM)] + [segment("customer", i, FURIOUS) for i in range(1, 7)]
    mark_escalation(segments, T)
    # The calm segment is among the previous 3 for the first three angry segments only.
    assert escalated(segments) == [False, True, True, True, False, False, False]


def test_steady_anger_from_the_start_never_flags():
    segments = [segment("customer", i, FURIOUS) for i in range(5)]
    mark_escalation(segments, T)
    assert escalated(segments) == [False] * 5


def test_escalation_rise_is_measured_from_the_minimum_of_the_last_three():
    # Negative arousal 0 -> 0.14 -> 0.098 -> 0.257: no step from the one before reaches 0.25,
    # the climb from the lowest of the last three does.
    mild = dict(angry=0.3, neutral=0.7)  # valence -0.24, arousal 0.41
    segments = [segment("customer", 0, CALM), segment("customer", 1, dict(sad=1.0)),
                segment("customer", 2, mild), segment("customer", 3, dict(angry=0.55, neutral=0.45))]  # -0.44, 0.585
    mark_escalation(segments, T)
    assert escalated(segments) == [False, False, False, True]


def test_escalation_is_flagged_once():
    segments = [segment("customer", 0, CALM), segment("customer", 1, FURIOUS)]
    mark_escalation(segments, T)
    mark_escalation(segments, T)
    assert list(segments[1].judgement.flags) == [pb.ESCALATION]
