"""Diarization inside the analysis (gateway/speakers.py through gateway/pipeline.py), on fake models.

The fake speaker model hears a voice's pitch: synthetic voices of different fundamentals get
orthogonal embeddings, so what the pipeline does with them (which channels it diarizes, where it
cuts an utterance, how it names and counts speakers, what a live stream says first and last) can
be checked exactly. Clustering on real voices is tested in test_diarization.py.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.unit.test_pipeline import RATE, FakeBackend, analysis
from toneserve import contract
from toneserve.contract import Code, ToneserveError
from toneserve.gateway.backend import ModelInfo
from toneserve.gateway.settings import Settings
from toneserve.gateway.sources import InMessage
from toneserve.samples import wav_bytes
from toneserve.v1 import toneserve_pb2 as pb

DIM = 64
BIN_HZ = 25.0
VOICES = {"a": 125.0, "b": 225.0, "c": 325.0}  # fundamentals in Hz, each in its own embedding bin


def voice(f0: float, n: int, start: int = 0) -> np.ndarray:
    t = (start + np.arange(n)) / RATE
    return 0.05 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 4))


def conversation(seconds: float, turns: list[tuple[float, float, str]], channels: int = 1,
                 channel_of: dict[str, int] | None = None) -> bytes:
    """WAV bytes: each (start_s, end_s, voice) turn on its channel (0 by default), -70 dBFS noise elsewhere."""
    n = int(seconds * RATE)
    out = 10 ** (-70 / 20) * np.random.default_rng(0).standard_normal((n, channels))
    for start, end, name in turns:
        a, b = int(start * RATE), int(end * RATE)
        out[a:b, (channel_of or {}).get(name, 0)] += voice(VOICES[name], b - a, a)
    return wav_bytes(out.astype(np.float32), RATE)


def pitch_embedding(wav: np.ndarray) -> np.ndarray:
    """One-hot of the strongest spectral peak's 25 Hz bin: the same voice always gives the same vector."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    peak = np.fft.rfftfreq(len(wav), 1 / RATE)[int(np.argmax(spectrum))]
    out = np.zeros(DIM, np.float32)
    out[min(int(peak // BIN_HZ), DIM - 1)] = 1.0
    return out


class SpeakerBackend(FakeBackend):
    """FakeBackend with a speaker model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.models[contract.SPEAKER] = ModelInfo(name=contract.SPEAKER, version="1", family="fake-speaker",
                                                  preset="test", weights_origin="package", precision="fp32")
        self.speaker_clips: list[np.ndarray] = []

    async def speaker(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None) -> np.ndarray:
        self.speaker_clips.append(wav)
        await self._answer("speaker")
        return pitch_embedding(wav)


def run(backend: FakeBackend, audio: bytes, options: pb.AnalyzeRequest, on_segment=None,
        settings: Settings = Settings()) -> pb.AnalyzeResponse:
    return asyncio.run(analysis(backend, options, settings).run(InMessage(audio), on_segment=on_segment))


TWO_VOICES = [(0.5, 2.5, "a"), (3.0, 5.0, "b"), (5.6, 7.0, "a"), (7.6, 9.6, "b"), (10.2, 11.4, "a")]


def test_a_mono_call_of_two_voices_comes_back_as_two_speakers_in_order_of_first_speech():
    response = run(SpeakerBackend(), conversation(12.0, TWO_VOICES), pb.AnalyzeRequest())
    assert [s.speaker for s in response.segments] == ["speaker_1", "speaker_2", "speaker_1", "speaker_2", "speaker_1"]
    assert [s.speaker for s in response.speakers] == ["speaker_1", "speaker_2"]
    talk = {s.speaker: s.talk_seconds for s in response.speakers}
    # each segment within two 32 ms VAD frames of its turn at either end (silero pads 30 ms)
    assert talk["speaker_1"] == pytest.approx(2.0 + 1.4 + 1.2, abs=3 * 0.13)
    assert talk["speaker_2"] == pytest.approx(4.0, abs=2 * 0.13)
    assert all(not s.provisional_speaker for s in response.segments)  # not a live stream


def test_one_voice_keeps_the_channel_s_name():
    response = run(SpeakerBackend(), conversation(8.0, [(0.5, 2.5, "a"), (3.5, 6.0, "a")]), pb.AnalyzeRequest())
    assert {s.speaker for s in response.segments} == {"channel_0"}
    assert [s.speaker for s in response.speakers] == ["channel_0"]


def test_a_role_names_the_voices_of_its_channel():
    options = pb.AnalyzeRequest(channel_roles={0: "bridge"})
    response = run(SpeakerBackend(), conversation(12.0, TWO_VOICES), options)
    assert [s.speaker for s in response.speakers] == ["bridge_1", "bridge_2"]


def test_stereo_is_not_diarized_by_default_and_is_inside_each_channel_with_mode_on():
    turns = [(0.5, 2.5, "a"), (3.0, 5.0, "b"), (5.6, 7.0, "a"), (7.6, 9.6, "c")]
    audio = conversation(10.5, turns, channels=2, channel_of={"a": 0, "b": 0, "c": 1})
    roles = {0: "agent", 1: "customer"}
    backend = SpeakerBackend()
    auto = run(backend, audio, pb.AnalyzeRequest(channel_roles=roles))
    assert [s.speaker for s in auto.speakers] == ["agent", "customer"] and not backend.speaker_clips

    on = run(SpeakerBackend(), audio, pb.AnalyzeRequest(channel_roles=roles,
                                                        diarization=pb.Diarization(mode=pb.Diarization.ON)))
    assert [(s.speaker, s.channel) for s in on.speakers] == [("agent_1", 0), ("agent_2", 0), ("customer", 1)]
    assert [s.speaker for s in on.segments if s.channel == 0] == ["agent_1", "agent_2", "agent_1"]


def test_mode_off_and_a_server_without_a_speaker_model_keep_one_speaker():
    audio = conversation(12.0, TWO_VOICES)
    backend = SpeakerBackend()
    off = run(backend, audio, pb.AnalyzeRequest(diarization=pb.Diarization(mode=pb.Diarization.OFF)))
    assert {s.speaker for s in off.segments} == {"channel_0"} and not backend.speaker_clips
    older = run(FakeBackend(), audio, pb.AnalyzeRequest())
    assert {s.speaker for s in older.segments} == {"channel_0"}
    assert any("no speaker model" in w for w in older.metadata.warnings)


def test_the_expected_count_wins():
    options = pb.AnalyzeRequest(diarization=pb.Diarization(speakers_expected=1))
    response = run(SpeakerBackend(), conversation(12.0, TWO_VOICES), options)
    assert [s.speaker for s in response.speakers] == ["channel_0"]


def test_a_voice_change_without_a_pause_splits_the_utterance_before_it_is_transcribed():
    """a from 0.5 to 4.5 s, b from 4.5 to 8.5 s with no silence between: VAD gives one utterance, which is
    cut near 4.5 s; each piece is transcribed and judged on its own."""
    backend = SpeakerBackend()
    response = run(backend, conversation(9.5, [(0.5, 4.5, "a"), (4.5, 8.5, "b")]), pb.AnalyzeRequest())
    assert [s.speaker for s in response.segments] == ["speaker_1", "speaker_2"]
    first, second = response.segments
    assert first.end_ms == second.start_ms
    assert abs(first.end_ms - 4500) <= 750  # within a window shift of the true change
    assert len(backend.clips) == 2  # SenseVoice heard each piece, not the whole utterance


def test_a_live_stream_says_a_provisional_speaker_and_the_result_the_clustered_one():
    sent: list[pb.Segment] = []

    async def on_segment(segment: pb.Segment) -> None:
        sent.append(pb.Segment(speaker=segment.speaker, provisional_speaker=segment.provisional_speaker,
                               start_ms=segment.start_ms))

    response = run(SpeakerBackend(), conversation(12.0, TWO_VOICES), pb.AnalyzeRequest(), on_segment=on_segment)
    assert sent and all(s.speaker == s.provisional_speaker for s in sent)
    by_start = {s.start_ms: s for s in response.segments}
    for s in sent:
        assert by_start[s.start_ms].provisional_speaker == s.provisional_speaker
    assert [s.speaker for s in response.speakers] == ["speaker_1", "speaker_2"]
    assert {s.provisional_speaker for s in sent} <= {"channel_0", "speaker_1", "speaker_2"}


@pytest.mark.parametrize("hints,says", [
    (dict(min_speakers=3, max_speakers=2), "above max_speakers"),
    (dict(speakers_expected=4, max_speakers=3), "outside"),
    (dict(speakers_expected=1, min_speakers=2), "outside"),
    (dict(speakers_expected=-1), "must be positive"),
    (dict(max_speakers=31), "at most 30"),
    (dict(mode=pb.Diarization.OFF, speakers_expected=2), "mode OFF"),
])
def test_bad_hints_fail_before_any_work(hints, says):
    backend = SpeakerBackend()
    with pytest.raises(ToneserveError) as error:
        analysis(backend, pb.AnalyzeRequest(diarization=pb.Diarization(**hints)))
    assert error.value.code is Code.INVALID_ARGUMENT and says in str(error.value)
    assert not backend.vad_rows and not backend.speaker_clips


@pytest.mark.parametrize("kwargs,says", [
    (dict(diarization="maybe"), "diarization must be one of"),
    (dict(min_speakers=3, max_speakers=2), "above max_speakers"),
    (dict(speakers_expected=5, max_speakers=4), "outside"),
    (dict(speakers_expected=-1), "positive int"),
    (dict(diarization="off", speakers_expected=2), "diarization off"),
])
def test_the_sdk_checks_the_hints_before_sending(kwargs, says):
    from toneserve.client.sdk import _analyze_request

    base = dict(language="auto", window_seconds=0.0, use_itn=False, channel_roles=None, mix_channels=False,
                thresholds=None, request_id="")
    with pytest.raises(ValueError, match=says):
        _analyze_request(**base, **kwargs)
    request = _analyze_request(**base, diarization="on", speakers_expected=2)
    assert request.diarization.mode == pb.Diarization.ON and request.diarization.speakers_expected == 2


def test_voices_of_an_unnamed_channel_are_numbered_after_it():
    turns = [(0.5, 2.5, "a"), (3.0, 5.0, "b"), (5.6, 7.0, "a"), (7.6, 9.6, "c")]
    audio = conversation(10.5, turns, channels=2, channel_of={"a": 0, "b": 0, "c": 1})
    response = run(SpeakerBackend(), audio, pb.AnalyzeRequest(diarization=pb.Diarization(mode=pb.Diarization.ON)))
    assert [(s.speaker, s.channel) for s in response.speakers] == [("channel_0_1", 0), ("channel_0_2", 0),
                                                                  ("channel_1", 1)]


def test_live_provisional_speakers_keep_to_the_hints():
    sent: list[str] = []

    async def on_segment(segment: pb.Segment) -> None:
        sent.append(segment.provisional_speaker)

    options = pb.AnalyzeRequest(diarization=pb.Diarization(max_speakers=1))
    response = run(SpeakerBackend(), conversation(12.0, TWO_VOICES), options, on_segment=on_segment)
    assert sent and set(sent) == {"channel_0"}
    assert [s.speaker for s in response.speakers] == ["channel_0"]
