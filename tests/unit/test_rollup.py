"""Per-speaker and per-call summaries, checked against hand-computed values."""
from __future__ import annotations

import math

import pytest

from toneserve.gateway.rollup import summarize
from toneserve.v1 import toneserve_pb2 as pb

LABELS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
SPEAKERS = [("agent", 0), ("customer", 1)]
# Sentiments, probabilities and loudness are float32 in the messages.
approx = lambda value: pytest.approx(value, abs=1e-5)  # noqa: E731


def segment(speaker: str, start_s: float, end_s: float, score: float = 0.0, emotion: dict[str, float] | None = None,
            loudness: float = -20.0, words: int = 0, flags: tuple[int, ...] = ()) -> pb.Segment:
    emotion = emotion or {"neutral": 1.0}
    probabilities = [emotion.get(label, 0.0) for label in LABELS]
    return pb.Segment(
        speaker=speaker, channel=dict(SPEAKERS).get(speaker, 0),
        start_ms=round(start_s * 1000), end_ms=round(end_s * 1000),
        emotion=pb.Distribution(labels=LABELS, probabilities=probabilities, top=max(emotion, key=emotion.get)),
        prosody=pb.Prosody(loudness_dbfs=loudness, words=words),
        judgement=pb.Judgement(score=score, flags=flags))


def by_name(summaries: list[pb.SpeakerSummary]) -> dict[str, pb.SpeakerSummary]:
    return {s.speaker: s for s in summaries}


def distribution(message: pb.Distribution) -> dict[str, float]:
    return {label: p for label, p in zip(message.labels, message.probabilities) if p}


# --- talk, overlap, interruptions ----------------------------------------------------------

def test_one_interruption_with_overlap():
    speakers, call = summarize([segment("agent", 0, 10), segment("customer", 8, 12)], 20.0, SPEAKERS)
    agent, customer = speakers
    assert (agent.speaker, agent.channel, customer.speaker, customer.channel) == ("agent", 0, "customer", 1)
    assert (agent.talk_seconds, agent.non_talk_seconds) == (10.0, 10.0)
    assert (customer.talk_seconds, customer.non_talk_seconds) == (4.0, 16.0)
    assert agent.overlap_seconds == customer.overlap_seconds == call.overlap_seconds == 2.0
    assert (agent.interruptions, customer.interruptions, call.interruptions) == (0, 1, 1)
    assert (call.talk_seconds, call.non_talk_seconds, call.duration_seconds) == (12.0, 8.0, 20.0)
    assert (agent.segments, customer.segments, call.segments) == (1, 1, 2)


def test_back_to_back_turns_and_simultaneous_starts_are_not_interruptions():
    segments = [segment("agent", 0, 10), segment("customer", 8, 12), segment("agent", 12, 15),
                segment("agent", 16, 18), segment("customer", 16, 17)]
    speakers, call = summarize(segments, 20.0, SPEAKERS)
    agent, customer = speakers
    assert (agent.talk_seconds, customer.talk_seconds) == (15.0, 5.0)
    assert (agent.non_talk_seconds, customer.non_talk_seconds) == (5.0, 15.0)
    # 8-10 and 16-17.
    assert agent.overlap_seconds == customer.overlap_seconds == call.overlap_seconds == 3.0
    assert (agent.interruptions, customer.interruptions, call.interruptions) == (0, 1, 1)
    # Union: 0-15 and 16-18.
    assert (call.talk_seconds, call.non_talk_seconds) == (17.0, 3.0)


def test_three_speakers_overlap_counts_once_for_the_call():
    segments = [segment("a", 0, 10), segment("b", 2, 8), segment("c", 4, 6)]
    speakers, call = summarize(segments, 10.0, [("a", 0), ("b", 1), ("c", 2)])
    s = by_name(speakers)
    assert call.overlap_seconds == 6.0
    assert (s["a"].overlap_seconds, s["b"].overlap_seconds, s["c"].overlap_seconds) == (6.0, 6.0, 2.0)
    assert (s["a"].interruptions, s["b"].interruptions, s["c"].interruptions) == (0, 1, 1)
    assert call.interruptions == 2
    assert (call.talk_seconds, call.non_talk_seconds) == (10.0, 0.0)


def test_many_segments():
    # 2000 rounds: agent 0-1.5 s, customer 1-2 s of every 2 s.
    n = 2000
    segments = [segment("agent", 2 * i, 2 * i + 1.5) for i in range(n)]
    segments += [segment("customer", 2 * i + 1, 2 * i + 2) for i in range(n)]
    speakers, call = summarize(segments, 2.0 * n, SPEAKERS)
    agent, customer = speakers
    assert call.overlap_seconds == pytest.approx(0.5 * n)
    assert (agent.interruptions, customer.interruptions) == (0, n)
    assert call.talk_seconds == pytest.approx(2.0 * n)
    assert (agent.talk_seconds, customer.talk_seconds) == (pytest.approx(1.5 * n), pytest.approx(1.0 * n))
    assert [p.start_ms for p in call.emotion_timeline] == sorted(s.start_ms for s in segments)


# --- quarters and averages -----------------------------------------------------------------

def quartered_call() -> list[pb.Segment]:
    """A 20 s call: quarters 0-5, 5-10, 10-15, 15-20."""
    return [
        segment("agent", 3, 7, score=0.6, emotion={"happy": 1.0}, words=10),  # 2 s in q0, 2 s in q1
        segment("agent", 8, 10, score=-0.3, emotion={"angry": 0.5, "neutral": 0.5}, words=5),  # q1
        segment("customer", 9, 11, score=0.2, emotion={"sad": 1.0}, words=7),  # 1 s in q1, 1 s in q2
        segment("customer", 15, 20, score=-0.8, emotion={"angry": 1.0}, words=14),  # q3
    ]


def quarters(summary) -> list[tuple[int, bool, float, float]]:
    return [(q.index, q.has_speech, q.sentiment, q.talk_seconds) for q in summary.quarters]


def test_quarters_split_segments_by_overlap():
    speakers, call = summarize(quartered_call(), 20.0, SPEAKERS)
    agent, customer = speakers
    assert quarters(agent) == [(0, True, approx(0.6), approx(2.0)),
                               (1, True, approx((2 * 0.6 + 2 * -0.3) / 4), approx(4.0)),
                               (2, False, 0.0, 0.0),
                               (3, False, 0.0, 0.0)]
    assert quarters(customer) == [(0, False, 0.0, 0.0),
                                  (1, True, approx(0.2), approx(1.0)),
                                  (2, True, approx(0.2), approx(1.0)),
                                  (3, True, approx(-0.8), approx(5.0))]
    # The call's talk time in a quarter is somebody talking: 9-10 is counted once.
    assert quarters(call) == [(0, True, approx(0.6), approx(2.0)),
                              (1, True, approx((2 * 0.6 + 2 * -0.3 + 1 * 0.2) / 5), approx(4.0)),
                              (2, True, approx(0.2), approx(1.0)),
                              (3, True, approx(-0.8), approx(5.0))]
    assert sum(q.talk_seconds for q in call.quarters) == approx(call.talk_seconds)


def test_duration_weighted_averages():
    speakers, call = summarize(quartered_call(), 20.0, SPEAKERS)
    agent, customer = speakers
    assert agent.average_sentiment == approx((4 * 0.6 + 2 * -0.3) / 6)
    assert customer.average_sentiment == approx((2 * 0.2 + 5 * -0.8) / 7)
    assert call.average_sentiment == approx((4 * 0.6 + 2 * -0.3 + 2 * 0.2 + 5 * -0.8) / 13)
    assert distribution(agent.emotion) == {"happy": approx(4 / 6), "angry": approx(1 / 6), "neutral": approx(1 / 6)}
    assert agent.emotion.top == "happy"
    assert list(agent.emotion.labels) == LABELS
    assert distribution(call.emotion) == {"happy": approx(4 / 13), "angry": approx(6 / 13),
                                          "neutral": approx(1 / 13), "sad": approx(2 / 13)}
    assert call.emotion.top == "angry"


def test_words_and_speaking_rate():
    speakers, call = summarize(quartered_call(), 20.0, SPEAKERS)
    agent, customer = speakers
    assert (agent.words, customer.words) == (15, 21)
    assert agent.speaking_rate_wpm == approx(15 / (6 / 60))
    assert customer.speaking_rate_wpm == approx(21 / (7 / 60))
    # Per minute of speech (13 s), not of the union (12 s).
    assert call.speaking_rate_wpm == approx(36 / (13 / 60))


def test_emotion_timeline():
    segments = quartered_call()
    speakers, call = summarize(segments[::-1], 20.0, SPEAKERS)
    points = [(p.speaker, p.start_ms, p.end_ms, p.emotion, p.probability, p.sentiment) for p in call.emotion_timeline]
    assert points == [("agent", 3000, 7000, "happy", 1.0, approx(0.6)),
                      ("agent", 8000, 10000, "angry", 0.5, approx(-0.3)),
                      ("customer", 9000, 11000, "sad", 1.0, approx(0.2)),
                      ("customer", 15000, 20000, "angry", 1.0, approx(-0.8))]
    assert [p.start_ms for p in speakers[0].emotion_timeline] == [3000, 8000]
    assert [p.start_ms for p in speakers[1].emotion_timeline] == [9000, 15000]


def test_loudness_is_averaged_as_power():
    speakers, call = summarize([segment("agent", 0, 2, loudness=-20), segment("agent", 2, 4, loudness=-40)],
                               4.0, SPEAKERS)
    assert speakers[0].loudness_dbfs == approx(10 * math.log10((0.01 + 0.0001) / 2))
    assert speakers[0].loudness_dbfs == pytest.approx(-22.97, abs=0.005)  # not the -30 of the mean of dB
    assert call.loudness_dbfs == speakers[0].loudness_dbfs


def test_loudness_is_weighted_by_duration():
    speakers, _ = summarize([segment("agent", 0, 3, loudness=-20), segment("agent", 3, 4, loudness=-30)],
                            4.0, SPEAKERS)
    assert speakers[0].loudness_dbfs == approx(10 * math.log10((3 * 0.01 + 1 * 0.001) / 4))


def test_flagged_segments_are_mismatch_or_escalation():
    segments = [segment("agent", 0, 1, flags=(pb.TONE_TEXT_MISMATCH,)), segment("agent", 1, 2, flags=(pb.ABSTAINED,)),
                segment("customer", 2, 3, flags=(pb.ABSTAINED, pb.ESCALATION)), segment("customer", 3, 4),
                segment("customer", 4, 5, flags=(pb.TONE_TEXT_MISMATCH, pb.ESCALATION))]
    speakers, call = summarize(segments, 5.0, SPEAKERS)
    assert (speakers[0].flagged_segments, speakers[1].flagged_segments, call.flagged_segments) == (1, 2, 3)


# --- edge cases ----------------------------------------------------------------------------

def assert_silent_quarters(summary) -> None:
    assert quarters(summary) == [(i, False, 0.0, 0.0) for i in range(4)]


def test_speaker_without_segments():
    speakers, call = summarize([segment("agent", 0, 10, score=0.5, words=20)], 30.0,
                               [*SPEAKERS, ("supervisor", 2)])
    assert [s.speaker for s in speakers] == ["agent", "customer", "supervisor"]
    for quiet, channel in ((speakers[1], 1), (speakers[2], 2)):
        assert quiet.channel == channel
        assert (quiet.segments, quiet.talk_seconds, quiet.non_talk_seconds) == (0, 0.0, 30.0)
        assert (quiet.average_sentiment, quiet.loudness_dbfs, quiet.speaking_rate_wpm, quiet.words) == (0, 0, 0, 0)
        assert (quiet.overlap_seconds, quiet.interruptions, quiet.flagged_segments) == (0.0, 0, 0)
        assert list(quiet.emotion_timeline) == [] and list(quiet.emotion.labels) == []
        assert_silent_quarters(quiet)
    assert call.speaking_rate_wpm == approx(120.0)


def test_empty_call():
    speakers, call = summarize([], 30.0, SPEAKERS)
    assert [(s.speaker, s.segments, s.talk_seconds, s.non_talk_seconds) for s in speakers] == \
        [("agent", 0, 0.0, 30.0), ("customer", 0, 0.0, 30.0)]
    assert (call.duration_seconds, call.talk_seconds, call.non_talk_seconds, call.overlap_seconds) == \
        (30.0, 0.0, 30.0, 0.0)
    assert (call.segments, call.flagged_segments, call.interruptions) == (0, 0, 0)
    assert (call.average_sentiment, call.loudness_dbfs, call.speaking_rate_wpm) == (0, 0, 0)
    assert list(call.emotion.labels) == [] and call.emotion.top == ""
    assert list(call.emotion_timeline) == []
    assert_silent_quarters(call)
    for speaker in speakers:
        assert_silent_quarters(speaker)


def test_empty_call_without_duration_or_speakers():
    speakers, call = summarize([], 0.0, [])
    assert speakers == []
    assert (call.talk_seconds, call.non_talk_seconds) == (0.0, 0.0)
    assert_silent_quarters(call)


def test_segments_past_the_end_never_make_non_talk_negative():
    speakers, call = summarize([segment("agent", 0, 10.002)], 10.0, SPEAKERS)
    assert speakers[0].non_talk_seconds == call.non_talk_seconds == 0.0


def test_segment_of_an_unlisted_speaker_is_an_error():
    with pytest.raises(ValueError, match="stranger"):
        summarize([segment("stranger", 0, 1)], 5.0, SPEAKERS)
