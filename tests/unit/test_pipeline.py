"""The analysis of a request (gateway/pipeline.py) and the service around it, on fake models.

`FakeBackend` stands in for Triton: its VAD hears speech in every frame louder than -40 dBFS,
its emotion2vec+ hears anger in proportion to loudness, its SenseVoice hears the same neutral
English sentence everywhere. The recordings are synthetic, with a known speech mask per channel,
so what the pipeline makes of them can be checked exactly: where the utterances are, how they
are cut into emotion windows, which segments escalate, what the rollups count, and what happens
when a model fails or the client goes away.
"""
from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest

from toneserve import contract
from toneserve.contract import ERROR_CODE_METADATA, VAD_FRAME, Code, ToneserveError
from toneserve.gateway import service as service_module
from toneserve.gateway.backend import AsrResult, ModelInfo
from toneserve.gateway.calls import TritonCalls
from toneserve.gateway.fair_queue import FairPools
from toneserve.gateway.live import LiveAudio
from toneserve.gateway.metrics import Metrics
from toneserve.gateway.pipeline import RANDOM_WEIGHTS_WARNING, Analysis
from toneserve.gateway.segmenter import BLOCK_FRAMES
from toneserve.gateway.service import AnalyzerService
from toneserve.gateway.settings import Limits, Settings
from toneserve.gateway.sources import InMessage
from toneserve.gateway.words import Piece
from toneserve.samples import wav_bytes
from toneserve.v1 import toneserve_pb2 as pb

RATE = contract.SAMPLE_RATE
EMOTIONS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
ASR_LABELS = {"language": ["en", "zh", "nospeech"], "emotion": ["NEUTRAL", "ANGRY"], "event": ["Speech", "BGM"],
              "itn": ["woitn", "withitn"]}
TRANSCRIPT = "I will check the account for you"  # the fake text model: neutral
TEXT_LABELS = ["positive", "neutral", "negative"]  # lxyuan's id2label order
POSITIVE_WORDS, NEGATIVE_WORDS = ("thank", "great", "谢谢", "好"), ("never", "angry", "差", "waiting")


def fake_text_probs(text: str) -> list[float]:
    """The fake text model: a word list (positive, negative), else neutral."""
    if any(w in text.lower() for w in NEGATIVE_WORDS):
        return [0.05, 0.15, 0.8]
    if any(w in text.lower() for w in POSITIVE_WORDS):
        return [0.9, 0.08, 0.02]
    return [0.1, 0.8, 0.1]
SPEECH_DBFS = -40.0  # the fake VAD's line between speech and silence
QUIET, LOUD = 0.05, 0.4  # voice amplitudes: a calm and an angry voice to the fake emotion model


def dbfs(x: np.ndarray, axis=None) -> np.ndarray:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64), axis=axis) + 1e-20)


EMBEDDING_DIM = 6


def fake_embedding(wav: np.ndarray) -> np.ndarray:
    """The fake emotion model's embedding of a window: its RMS, its length (s) and 1s."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    return np.array([rms, len(wav) / RATE, *[1.0] * (EMBEDDING_DIM - 2)], np.float32)


def fake_pieces(transcript: str, samples: int) -> tuple[Piece, ...]:
    """The fake SenseVoice's pieces: one per whitespace token ("▁" + token), spread evenly over the clip, each
    taking 80 % of its share (ms from the clip start)."""
    tokens = transcript.split()
    share = samples * 1000 // RATE // max(len(tokens), 1)
    return tuple(Piece("\u2581" + token, i * share, i * share + share * 4 // 5) for i, token in enumerate(tokens))


def fake_emotion(wav: np.ndarray) -> np.ndarray:
    """Anger grows with loudness: 5 % at silence, 95 % from 0.3 RMS up; the rest is neutral."""
    anger = float(np.clip(np.sqrt(np.mean(np.square(wav, dtype=np.float64))) / 0.3, 0.0, 1.0))
    probs = np.zeros(len(EMOTIONS), np.float32)
    probs[EMOTIONS.index("angry")] = 0.05 + 0.9 * anger
    probs[EMOTIONS.index("neutral")] = 0.95 - 0.9 * anger
    return probs


class FakeBackend:
    """A `Backend` without a model server; it records what it is asked."""

    def __init__(self, vad_batch: int = 0, asr_error: ToneserveError | None = None, hang: tuple[str, ...] = (),
                 transcript: str = TRANSCRIPT):
        self.transcript = transcript
        self.models = {name: ModelInfo(name=name, version="1", family=f"fake-{name}", preset="test",
                                       weights_origin="random" if name == contract.VAD else "trained",
                                       precision="fp32", max_batch_size=vad_batch if name == contract.VAD else 0)
                       for name in (contract.EMOTION, contract.ASR, contract.VAD, contract.TEXT_SENTIMENT)}
        self.texts: list[list[str]] = []  # each text-sentiment call's sentences
        self.asr_error = asr_error
        self.hang = hang  # calls that never answer (until cancelled)
        self.vad_rows: list[int] = []  # rows of each VAD call
        self.clips: list[np.ndarray] = []  # each ASR call's clip, in call order
        self.windows: list[np.ndarray] = []  # each emotion call's clip, in call order
        self.embedded = 0  # emotion calls that asked for the embedding too
        self.started = {"asr": asyncio.Event(), "vad": asyncio.Event()}
        self.cancelled: list[str] = []
        self.replicas = 1

    @property
    def emotion_labels(self) -> list[str]:
        return EMOTIONS

    def label_sets(self) -> dict[str, list[str]]:
        return {"emotion": EMOTIONS, "asr_emotion": ASR_LABELS["emotion"],
                **{name: ASR_LABELS[name] for name in ("language", "event", "itn")}}

    def language_query_id(self, language: str) -> int:
        known = ["auto", "en", "zh"]
        if language not in known:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"language {language!r} is not supported")
        return known.index(language)

    async def _answer(self, model: str) -> None:
        """Yield to the loop as a remote call would, or never answer."""
        try:
            await asyncio.sleep(0 if model not in self.hang else 3600)
        except asyncio.CancelledError:
            self.cancelled.append(model)
            raise

    async def vad(self, block: np.ndarray, request_id: str = "", timeout: float | None = None) -> np.ndarray:
        self.vad_rows.append(len(block))
        self.started["vad"].set()
        await self._answer("vad")
        frames = -(-block.shape[1] // VAD_FRAME)
        padded = np.zeros((len(block), frames * VAD_FRAME), np.float32)
        padded[:, :block.shape[1]] = block
        loud = dbfs(padded.reshape(len(block), frames, VAD_FRAME), axis=2) > SPEECH_DBFS
        return np.where(loud, 0.95, 0.02).astype(np.float32)

    async def emotion(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None):
        self.windows.append(wav)
        await self._answer("emotion")
        return EMOTIONS, fake_emotion(wav)

    async def emotion_embedding(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None):
        self.embedded += 1
        return await self.emotion(wav, request_id, timeout), fake_embedding(wav)

    async def asr(self, wav: np.ndarray, language: str = "auto", use_itn: bool = False,
                  request_id: str = "", timeout: float | None = None) -> AsrResult:
        self.language_query_id(language)
        self.clips.append(wav)
        self.started["asr"].set()
        await self._answer("asr")
        if self.asr_error is not None:
            raise self.asr_error
        first = {name: np.eye(len(labels), dtype=np.float32)[0] for name, labels in ASR_LABELS.items()}
        return AsrResult(text=self.transcript, distributions={name: (ASR_LABELS[name], first[name]) for name in ASR_LABELS},
                         pieces=fake_pieces(self.transcript, len(wav)))


    async def sentiment(self, texts, request_id: str = "", timeout: float | None = None):
        self.texts.append(list(texts))
        await self._answer("sentiment")
        return TEXT_LABELS, np.array([fake_text_probs(t) for t in texts], np.float32)


def recording(seconds: float, channels: list[list[tuple[float, float, float]]], seed: int = 0) -> np.ndarray:
    """float32 [n, channels]: a steady voice (150 Hz and 4 harmonics) where the mask says speech,
    (start_s, end_s, amplitude) per span, and -70 dBFS noise everywhere."""
    n = int(round(seconds * RATE))
    t = np.arange(n) / RATE
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    out = 10 ** (-70 / 20) * np.random.default_rng(seed).standard_normal((n, len(channels)))
    for channel, spans in enumerate(channels):
        for start, end, amplitude in spans:
            a, b = int(round(start * RATE)), int(round(end * RATE))
            envelope = np.full(b - a, amplitude) if np.isscalar(amplitude) else np.asarray(amplitude)
            out[a:b, channel] += envelope * voice[a:b]
    return out.astype(np.float32)


def calls(deadline: float | None = None) -> TritonCalls:
    """A request's calls with 64 slots per model and no bound on CPU work, for one tenant."""
    return TritonCalls(FairPools(lambda model: 64).tenant(""), "test", deadline)


def analysis(backend: FakeBackend, options: pb.AnalyzeRequest, settings: Settings = Settings()) -> Analysis:
    return Analysis(backend, settings, calls(), options)


def other_tasks() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def settle() -> None:
    """Give whatever is still running a moment to end (it should end on its own)."""
    if other_tasks():
        await asyncio.wait(other_tasks(), timeout=10)


# --- segmentation --------------------------------------------------------------------------------

SPANS = [[(0.50, 2.50, QUIET), (4.00, 6.00, QUIET)], [(2.80, 3.80, QUIET), (6.50, 8.20, QUIET)]]


@pytest.mark.parametrize("block_frames,vad_batch", [(BLOCK_FRAMES, 0), (32, 0), (32, 1)])
def test_utterances_follow_the_speech_mask_of_each_channel(block_frames, vad_batch):
    """Whether the recording comes in one block or in 1 s blocks (each run through VAD after the
    previous block's tail), each channel's utterances are where its voice is, within two frames
    (silero pads each side by 30 ms; a frame is 32 ms)."""
    backend = FakeBackend(vad_batch=vad_batch)
    audio = wav_bytes(recording(9.0, SPANS), RATE)
    options = pb.AnalyzeRequest(channel_roles={0: "agent", 1: "customer"})
    response = asyncio.run(analysis(backend, options).run(InMessage(audio), block_frames=block_frames))

    for channel, (speaker, spans) in enumerate(zip(["agent", "customer"], SPANS)):
        found = [s for s in response.segments if s.channel == channel]
        assert [s.speaker for s in found] == [speaker] * len(spans)
        assert len(found) == len(spans), [(s.start_ms, s.end_ms) for s in found]
        for segment, (start, end, _) in zip(found, spans):
            assert abs(segment.start_ms - start * 1000) <= 2 * 32, (segment.start_ms, start)
            assert abs(segment.end_ms - end * 1000) <= 2 * 32, (segment.end_ms, end)
    assert [s.start_ms for s in response.segments] == sorted(s.start_ms for s in response.segments)
    blocks = math.ceil(9.0 * RATE / (block_frames * VAD_FRAME))
    assert backend.vad_rows == ([1] * 2 * blocks if vad_batch == 1 else [2] * blocks)
    assert response.metadata.audio_seconds == pytest.approx(9.0)


def test_the_same_audio_on_both_channels_is_one_speaker():
    mono = recording(4.0, [[(0.5, 3.0, QUIET)]])
    audio = wav_bytes(np.repeat(mono, 2, axis=1), RATE)
    response = asyncio.run(analysis(FakeBackend(), pb.AnalyzeRequest()).run(InMessage(audio)))
    assert [(s.speaker, s.channel) for s in response.segments] == [("mix", -1)]
    assert any("carry the same audio" in w for w in response.metadata.warnings)


# --- emotion windows -----------------------------------------------------------------------------

def test_an_utterance_is_cut_into_equal_windows_and_their_emotions_are_averaged_by_duration():
    """7 s of speech growing louder, 2 s windows: ceil(N / 2 s) equal windows that together are
    the utterance, and the segment's emotion is the duration-weighted mean of theirs."""
    ramp = np.linspace(0.02, LOUD, 7 * RATE)
    audio = wav_bytes(recording(8.0, [[(0.5, 7.5, ramp)]]), RATE)
    backend = FakeBackend()
    response = asyncio.run(analysis(backend, pb.AnalyzeRequest(window_seconds=2.0)).run(InMessage(audio)))

    [segment] = response.segments
    [clip] = backend.clips
    count = math.ceil(len(clip) / (2.0 * RATE))
    assert count == 4 and segment.emotion_windows == count
    lengths = [len(w) for w in backend.windows]
    assert len(lengths) == count and max(lengths) - min(lengths) <= 1
    np.testing.assert_array_equal(np.concatenate(backend.windows), clip)  # in order, no gap, no overlap
    distributions = np.array([fake_emotion(w) for w in backend.windows], np.float64)
    angry = EMOTIONS.index("angry")
    assert distributions[-1, angry] - distributions[0, angry] > 0.5  # the windows disagree: the mean says something
    expected = np.average(distributions, axis=0, weights=lengths)
    assert list(segment.emotion.labels) == EMOTIONS
    np.testing.assert_allclose(segment.emotion.probabilities, expected, atol=1e-6)
    assert segment.emotion.top == EMOTIONS[int(np.argmax(expected))]


def test_embeddings_are_asked_only_when_the_request_wants_them_and_averaged_by_duration():
    """include_embeddings: each window's emotion call returns the embedding too, and the segment's is their
    duration-weighted mean; without it, no call asks for one and segments carry none."""
    ramp = np.linspace(0.02, LOUD, 7 * RATE)
    audio = wav_bytes(recording(8.0, [[(0.5, 7.5, ramp)]]), RATE)
    backend = FakeBackend()
    options = pb.AnalyzeRequest(window_seconds=2.0, include_embeddings=True)
    [segment] = asyncio.run(analysis(backend, options).run(InMessage(audio))).segments
    assert backend.embedded == len(backend.windows) == segment.emotion_windows == 4
    embeddings = np.array([fake_embedding(w) for w in backend.windows], np.float64)
    assert np.ptp(embeddings[:, 0]) > 0.05  # the windows differ: the mean says something
    expected = np.average(embeddings, axis=0, weights=[len(w) for w in backend.windows])
    assert len(segment.embedding) == EMBEDDING_DIM
    np.testing.assert_allclose(segment.embedding, expected, rtol=1e-6)

    backend = FakeBackend()
    [segment] = asyncio.run(analysis(backend, pb.AnalyzeRequest(window_seconds=2.0)).run(InMessage(audio))).segments
    assert backend.embedded == 0 and len(backend.windows) == 4
    assert len(segment.embedding) == 0


def test_segments_carry_the_transcripts_words_timed_inside_them():
    """Each segment's words are its transcript's (those its sentences' start_word / end_word count), timed by the
    fake pieces from the segment's start."""
    transcript = "Thank you. I will check the account for you"
    audio = wav_bytes(recording(6.0, [[(0.5, 2.5, QUIET), (3.5, 5.5, QUIET)]]), RATE)
    backend = FakeBackend(transcript=transcript)
    response = asyncio.run(analysis(backend, pb.AnalyzeRequest(language="en")).run(InMessage(audio)))
    assert len(response.segments) == len(backend.clips) == 2
    for segment, clip in zip(response.segments, backend.clips):
        expected = [(p.text[1:], min(segment.start_ms + p.start_ms, segment.end_ms),
                     min(segment.start_ms + p.end_ms, segment.end_ms)) for p in fake_pieces(transcript, len(clip))]
        assert [(w.text, w.start_ms, w.end_ms) for w in segment.words] == expected
        assert all(segment.start_ms <= w.start_ms <= w.end_ms <= segment.end_ms for w in segment.words)
        sentences = segment.text_sentiment.sentences
        assert [(s.start_word, s.end_word) for s in sentences] == [(0, 2), (2, 9)]
        for sentence in sentences:
            assert " ".join(w.text for w in segment.words[sentence.start_word:sentence.end_word]) == sentence.text


# --- the service: escalation, rollups, metadata ---------------------------------------------------

class Aborted(Exception):
    """What grpc's context.abort raises to end a call."""


class FakeContext:
    def __init__(self):
        self.trailing: dict[str, str] = {}
        self.status = None

    def invocation_metadata(self):
        return ()

    def time_remaining(self):
        return None

    def set_trailing_metadata(self, metadata):
        self.trailing = dict(metadata)

    async def abort(self, status, message):
        self.status = status
        raise Aborted(message)


def test_a_voice_turning_angry_escalates_and_the_rollups_count_it():
    """The agent is calm twice, then loud: the third segment escalates. The customer is loud
    from the start: no escalation (the first segment has no baseline, the second no rise)."""
    agent = [(0.5, 2.0, QUIET), (3.0, 4.5, QUIET), (6.0, 8.0, LOUD)]
    customer = [(4.8, 5.6, LOUD), (8.5, 9.5, LOUD)]
    audio = wav_bytes(recording(10.0, [agent, customer]), RATE)
    request = pb.AnalyzeRequest(audio=audio, channel_roles={0: "agent", 1: "customer"}, language="en")

    async def main():
        service = AnalyzerService(FakeBackend(), Settings(), Metrics())
        response = await service.Analyze(request, FakeContext())
        assert service.active == 0
        return response

    response = asyncio.run(main())
    segments = {(s.speaker, round(s.start_ms / 1000, 1)): s for s in response.segments}
    assert len(segments) == 5
    escalated = sorted(key for key, s in segments.items() if pb.ESCALATION in s.judgement.flags)
    assert escalated == [("agent", 6.0)]
    for (speaker, start), segment in segments.items():
        loud = speaker == "customer" or start == 6.0
        assert segment.emotion.top == ("angry" if loud else "neutral")
        assert segment.judgement.sentiment == ("negative" if loud else "neutral")
        assert segment.transcript == TRANSCRIPT and segment.text_sentiment.method == "fake-text_sentiment/test fp32"
        assert [(x.text, x.start_word, x.end_word, x.sentiment) for x in segment.text_sentiment.sentences] == [
            (TRANSCRIPT, 0, 7, "neutral")]

    agent_summary, customer_summary = response.speakers
    assert (agent_summary.speaker, agent_summary.channel, agent_summary.segments) == ("agent", 0, 3)
    assert (customer_summary.speaker, customer_summary.channel, customer_summary.segments) == ("customer", 1, 2)
    assert (agent_summary.flagged_segments, customer_summary.flagged_segments) == (1, 0)
    for summary, spans in ((agent_summary, agent), (customer_summary, customer)):
        durations = [(s.end_ms - s.start_ms) / 1000 for s in response.segments if s.speaker == summary.speaker]
        assert summary.talk_seconds == pytest.approx(sum(durations))  # one speaker's segments never overlap
        assert summary.talk_seconds == pytest.approx(sum(end - start for start, end, _ in spans),
                                                     abs=len(spans) * 4 * 0.032)
    assert agent_summary.average_sentiment > customer_summary.average_sentiment
    assert response.call.segments == 5 and response.call.flagged_segments == 1
    assert response.call.duration_seconds == pytest.approx(10.0)
    assert response.call.interruptions == 0 and response.call.overlap_seconds == 0

    metadata = response.metadata
    assert metadata.random_weights and metadata.warnings[0] == RANDOM_WEIGHTS_WARNING
    assert sorted(m.family for m in metadata.models) == ["fake-asr", "fake-emotion", "fake-text_sentiment", "fake-vad"]
    assert list(metadata.emotion_labels) == EMOTIONS
    assert {s.name: list(s.labels) for s in metadata.label_sets}["language"] == ASR_LABELS["language"]
    assert (metadata.channels_in, metadata.sample_rate_in, metadata.container) == (2, RATE, "wav")


# --- failures ------------------------------------------------------------------------------------

def test_a_failing_model_fails_the_request_with_its_code_and_cancels_the_rest():
    """SenseVoice is unavailable while emotion2vec+ is still busy: the analysis raises
    TRITON_UNAVAILABLE itself (not wrapped in a task group's ExceptionGroup), and nothing it
    started is left running."""
    audio = wav_bytes(recording(6.0, [[(0.5, 2.0, QUIET), (3.0, 5.0, QUIET)]]), RATE)
    backend = FakeBackend(asr_error=ToneserveError(Code.TRITON_UNAVAILABLE, "Triton: gone"), hang=("emotion",))

    async def main():
        with pytest.raises(ToneserveError) as raised:
            await analysis(backend, pb.AnalyzeRequest()).run(InMessage(audio))
        assert not other_tasks()
        return raised.value

    error = asyncio.run(main())
    assert error.code is Code.TRITON_UNAVAILABLE
    assert backend.windows and backend.cancelled == ["emotion"] * len(backend.windows)


def test_an_unknown_language_fails_before_any_decoding():
    with pytest.raises(ToneserveError) as raised:
        analysis(FakeBackend(), pb.AnalyzeRequest(language="xx"))
    assert raised.value.code is Code.INVALID_ARGUMENT


# --- AnalyzeStream and AnalyzeUpload: the client's side ------------------------------------------

class WatchedLiveAudio(LiveAudio):
    """LiveAudio that tells whether its decoder is inside `read` (and was when it was closed)."""
    made: list[WatchedLiveAudio] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading = 0
        self.reading_when_closed: int | None = None
        self.lock = threading.Lock()
        WatchedLiveAudio.made.append(self)

    def read(self, size: int = -1) -> bytes:
        with self.lock:
            self.reading += 1
        try:
            return super().read(size)
        finally:
            with self.lock:
                self.reading -= 1

    def close(self) -> None:
        if self.reading_when_closed is None:
            self.reading_when_closed = self.reading
        super().close()


def messages(options: pb.AnalyzeRequest, audio: bytes, chunk: int = 8192):
    return [pb.UploadRequest(options=options)] + [pb.UploadRequest(chunk=audio[i:i + chunk])
                                                  for i in range(0, len(audio), chunk)]


@pytest.mark.parametrize("ending", ["client gone", "loop shut down"])
def test_a_stream_cancelled_mid_analysis_stops_everything_and_closes_its_audio(monkeypatch, ending):
    """The client sends 7 s of a 10 s recording (FFmpeg reads about 4 s before it starts
    decoding) and goes quiet while an utterance is with SenseVoice. Then the client goes away
    (its call is cancelled), or the server stops (every task is cancelled at once, the one
    awaiting the decoder included). The decoder, blocked waiting for the client, is woken; the
    audio is closed only after it has returned; no task or reading thread is left behind."""
    WatchedLiveAudio.made.clear()
    monkeypatch.setattr(service_module, "LiveAudio", WatchedLiveAudio)
    audio = wav_bytes(recording(10.0, [[(0.3, 1.2, QUIET)]]), RATE)
    sent = audio[:44 + 7 * RATE * 2]  # the header (which says 10 s) and 7 s of 16-bit samples
    backend = FakeBackend(hang=("asr",))

    async def main():
        service = AnalyzerService(backend, Settings(live_block_frames=32), Metrics())
        stalled = asyncio.Event()

        async def client():
            for message in messages(pb.AnalyzeRequest(), sent):
                yield message
            stalled.set()
            await asyncio.Event().wait()  # neither more audio nor the end of it

        async def consume():
            return [event async for event in service.AnalyzeStream(client(), FakeContext())]

        call = asyncio.create_task(consume())
        await asyncio.wait_for(backend.started["asr"].wait(), 10)
        await asyncio.wait_for(stalled.wait(), 10)
        [source] = WatchedLiveAudio.made
        for _ in range(500):  # the decoder has taken every chunk and waits for the next
            if source.reading and source._chunks.empty():
                break
            await asyncio.sleep(0.01)
        assert source.reading == 1
        if ending == "loop shut down":
            return  # asyncio.run cancels what is left
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await settle()
        assert not other_tasks()
        assert service.active == 0

    asyncio.run(main())
    [source] = WatchedLiveAudio.made
    assert backend.cancelled == ["asr"]
    assert source.closed and source.reading_when_closed == 0 and source.reading == 0


@pytest.mark.parametrize("rpc", ["AnalyzeUpload", "AnalyzeStream"])
def test_a_second_options_message_is_the_answer(rpc):
    """A bad message mid-stream is answered INVALID_ARGUMENT, never with a result from the audio
    before it (for AnalyzeStream, that audio is already being analysed)."""
    audio = wav_bytes(recording(3.0, [[(0.3, 2.5, QUIET)]]), RATE)

    async def main():
        service = AnalyzerService(FakeBackend(), Settings(live_block_frames=32), Metrics())
        context = FakeContext()

        async def client():
            for message in messages(pb.AnalyzeRequest(), audio):
                yield message
            yield pb.UploadRequest(options=pb.AnalyzeRequest())

        with pytest.raises(Aborted):
            if rpc == "AnalyzeUpload":
                await service.AnalyzeUpload(client(), context)
            else:
                async for event in service.AnalyzeStream(client(), context):
                    assert event.WhichOneof("event") == "segment"
        await settle()
        assert not other_tasks()
        return context

    context = asyncio.run(main())
    assert context.trailing[ERROR_CODE_METADATA] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("rpc", ["AnalyzeUpload", "AnalyzeStream"])
def test_more_audio_than_the_limit_is_too_large(rpc):
    audio = wav_bytes(recording(3.0, [[(0.3, 2.5, QUIET)]]), RATE)

    async def main():
        service = AnalyzerService(FakeBackend(), Settings(limits=Limits(max_bytes=len(audio) - 1)), Metrics())
        context = FakeContext()

        async def client():
            for message in messages(pb.AnalyzeRequest(), audio):
                yield message

        with pytest.raises(Aborted):
            if rpc == "AnalyzeUpload":
                await service.AnalyzeUpload(client(), context)
            else:
                async for _ in service.AnalyzeStream(client(), context):
                    pass
        return context

    context = asyncio.run(main())
    assert context.trailing[ERROR_CODE_METADATA] == "AUDIO_TOO_LARGE"


# --- reconciliation with the words' new scores --------------------------------------------------------

@pytest.mark.parametrize("transcript, words, flagged", [
    # Sarcasm that the text model reads as negative (VADER read such lines as positive, +0.92, and flagged a
    # mismatch instead): tone and words agree on negative. (The fake model stands in for one that gets it.)
    ("Oh wonderful, another week of waiting.", "negative", False),
    # Polite words in an angry voice: the words are positive, the tone negative: a mismatch.
    ("Thank you so much.", "positive", True),
    # An agent's formula: neutral words; the angry tone alone makes it negative, no mismatch.
    ("I will check the account for you.", "neutral", False),
])
def test_sarcasm_and_polite_anger_with_sentence_scores(transcript, words, flagged):
    backend = FakeBackend(transcript=transcript)
    audio = wav_bytes(recording(3.0, [[(0.5, 2.5, LOUD)]]), RATE)
    response = asyncio.run(analysis(backend, pb.AnalyzeRequest(language="en")).run(InMessage(audio)))
    (segment,) = response.segments
    assert segment.emotion.top == "angry" and segment.text_sentiment.label == words
    assert (pb.TONE_TEXT_MISMATCH in segment.judgement.flags) == flagged
    assert segment.judgement.sentiment == ("neutral" if flagged else "negative")
    expected = sum((s.end_word - s.start_word) * s.sentiment_score for s in segment.text_sentiment.sentences)
    assert segment.text_sentiment.score == pytest.approx(expected / segment.prosody.words, abs=1e-6)


# --- the judge's verdict ----------------------------------------------------------------------------

class FakeJudge:
    """Answers a verdict citing the last segment after `delay` seconds."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    async def verdict(self, segments):
        await asyncio.sleep(self.delay)
        return pb.Verdict(sentiment="negative", score=-0.5, reason="upset", segment_ids=[len(segments) - 1],
                          model="judge"), None


@pytest.mark.parametrize("delay, deadline_s, verdict", [(0.0, None, True), (30.0, 3.0, False)])
def test_the_verdict_lands_in_the_call_and_never_outlasts_the_requests_deadline(delay, deadline_s, verdict):
    import time

    audio = wav_bytes(recording(3.0, [[(0.5, 2.5, LOUD)]]), RATE)

    async def main():
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        run = Analysis(FakeBackend(), Settings(), calls(deadline), pb.AnalyzeRequest(), judge=FakeJudge(delay))
        return await run.run(InMessage(audio))

    started = time.monotonic()
    response = asyncio.run(main())
    assert response.call.HasField("verdict") == verdict
    if verdict:
        assert list(response.call.verdict.segment_ids) == [len(response.segments) - 1]
    else:  # given up 0.5 s before the deadline: the answer (not an error) arrives in time
        assert time.monotonic() - started < deadline_s
        assert any("no call verdict" in w and "deadline" in w for w in response.metadata.warnings)


# --- live streams: an utterance analysed as soon as silence follows it ---------------------------

class LiveInMessage(InMessage):
    """A recording in memory that the pipeline treats as a live stream (as AnalyzeStream's audio)."""
    live = True


class PositionedBackend(FakeBackend):
    """Records how much of the recording was decoded when SenseVoice was asked for each clip."""

    def __init__(self):
        super().__init__()
        self.analysis: Analysis | None = None
        self.asked_at: list[int] = []

    async def asr(self, wav, *args, **kwargs):
        assert self.analysis is not None
        self.asked_at.append(self.analysis.samples)
        return await super().asr(wav, *args, **kwargs)


def live_run(spans, early: bool) -> tuple[pb.AnalyzeResponse, PositionedBackend]:
    backend = PositionedBackend()
    backend.analysis = analysis(backend, pb.AnalyzeRequest(), Settings(live_early=early))
    audio = wav_bytes(recording(10.0, [spans]), RATE)
    response = asyncio.run(backend.analysis.run(LiveInMessage(audio), block_frames=8))
    return response, backend


def comparable(response: pb.AnalyzeResponse) -> list[pb.Segment]:
    return sorted(response.segments, key=lambda s: s.start_ms)


def test_a_live_utterance_is_analysed_before_its_end_is_confirmed_with_the_same_segments():
    """Silence after an utterance must last min_silence_ms (300) to end it. A live stream asks the models
    for it as soon as its padded end has arrived, a block or more earlier, and the segments are those
    the stream gets when it waits."""
    spans = [(0.5, 2.5, QUIET), (4.0, 6.0, QUIET), (7.0, 9.0, QUIET)]
    early, early_backend = live_run(spans, early=True)
    late, late_backend = live_run(spans, early=False)
    assert comparable(early) == comparable(late)
    assert len(early.segments) == 3
    assert len(early_backend.asked_at) == len(late_backend.asked_at) == 3  # nothing analysed twice
    assert early_backend.analysis.early_analyses == {"used": 3, "dropped": 0}
    assert late_backend.analysis.early_analyses == {"used": 0, "dropped": 0}
    block = 8 * VAD_FRAME
    for segment, asked_early, asked_late in zip(comparable(early), early_backend.asked_at, late_backend.asked_at):
        end = segment.end_ms * RATE // 1000  # the padded end
        assert asked_early <= end + block  # as soon as a block held the padded end
        assert asked_late >= end + (300 - 30) * RATE // 1000  # once min_silence_ms less the pad had passed
        assert asked_early < asked_late


def test_speech_resuming_within_the_silence_drops_the_early_analysis():
    """A 250 ms pause inside a turn: the utterance pending at the pause is analysed early, then speech
    resumes and it is dropped; the segments are still those of waiting, each answered once."""
    spans = [(0.5, 2.5, QUIET), (2.75, 4.5, QUIET), (6.0, 8.0, QUIET)]
    early, early_backend = live_run(spans, early=True)
    late, late_backend = live_run(spans, early=False)
    assert comparable(early) == comparable(late)
    assert len(early.segments) == 2  # the pause does not end the first turn
    assert len(late_backend.asked_at) == 2
    assert len(early_backend.asked_at) == 3  # the first turn was asked for once at its pause, in vain
    assert early_backend.analysis.early_analyses == {"used": 2, "dropped": 1}
    assert sorted(s.start_ms for s in early.segments) == [s.start_ms for s in comparable(early)]
