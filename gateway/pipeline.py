"""One recording in, one AnalyzeResponse out.

The recording is decoded in blocks of about 30 s (never held whole). Each block
goes to silero VAD on Triton, one row per channel; each channel's segmenter
turns the probabilities into utterances as soon as they are finished; each
utterance is transcribed (SenseVoice) and cut into emotion2vec+ windows, all of
these Triton calls concurrent. A bounded number of utterances per request is in
flight: when Triton is slower than the decoder, decoding waits, so memory stays
bounded however long the recording. What is kept to the end is small: the
segments' results, for reconciliation (escalation looks back along a speaker's
segments) and the rollups. Channels that are diarized (gateway/speakers.py) also keep
each segment's speaker embedding, clustered into speakers once the recording has ended.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from toneserve import contract
from toneserve.contract import SAMPLE_RATE, VAD_FRAME, Code, ToneserveError
from toneserve.gateway import diarization, prosody, reconcile, rollup, sentiment, speakers, thresholds, words
from toneserve.gateway.audio import AudioStream, open_audio
from toneserve.gateway.backend import AsrResult, Backend, Distribution
from toneserve.gateway.calls import TritonCalls
from toneserve.gateway.segmenter import BLOCK_FRAMES, VAD_CELL_FRAMES, Segmentation, Utterance, block_seconds
from toneserve.gateway.settings import Settings
from toneserve.gateway.sources import AudioSource
from toneserve.gateway.verdict import Judge
from toneserve.v1 import toneserve_pb2 as pb

# The judge's verdict gives up this long before the request's deadline, so that the answer still arrives.
VERDICT_MARGIN_S = 0.5
# Hands out a finished segment and its speaker embedding (None where its channel is not diarized).
Emit = Callable[[pb.Segment, np.ndarray | None], Awaitable[None]]
RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: at least one model serving this request has untrained random "
                          "weights; transcripts, emotions and tags are meaningless")


@dataclass(frozen=True)
class Speaker:
    name: str
    channel: int  # -1: all channels mixed down


def distribution(dist: Distribution) -> pb.Distribution:
    labels, probs = dist
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    return pb.Distribution(labels=labels, probabilities=probs.tolist(), top=labels[int(np.argmax(probs))])


def _top(dist: Distribution) -> str:
    labels, probs = dist
    return labels[int(np.argmax(np.asarray(probs).reshape(-1)))]


def emotion_windows(n: int, window_seconds: float) -> list[tuple[int, int]]:
    """[0, n) cut into the fewest equal windows no longer than `window_seconds`. Bounded per
    utterance: max_utterance_seconds / min_window_seconds (60 by default), the window being checked
    against its range (Settings.window) and the utterance cut at its maximum (the segmenter)."""
    count = max(1, math.ceil(n / (window_seconds * SAMPLE_RATE)))
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def same_audio_on_every_channel(block: np.ndarray) -> bool:
    """True for "stereo" that is one recording copied to each channel (common in exported calls):
    analysing each copy as a speaker would double the work and report one voice as two
    speakers talking over each other all the time. -60 dBFS of difference is inaudible. Judged on
    the first block only when it holds sound: two silent channels (a call before pick-up) are
    equal without being one recording."""
    if len(block) < 2 or float(np.sqrt(np.mean(np.square(block[0], dtype=np.float64)))) < 10 ** (-50 / 20):
        return False
    return float(np.max(np.abs(block - block[0]))) < 1e-3


def speakers_of(channels: int, options: pb.AnalyzeRequest, mix: bool) -> list[Speaker]:
    roles = dict(options.channel_roles)
    if mix:
        if roles and options.mix_channels:
            raise ToneserveError(Code.INVALID_ARGUMENT,
                                 "channel_roles name channels, which mix_channels merges into one")
        return [Speaker("mix", -1)]
    unknown = sorted(c for c in roles if not 0 <= c < channels)
    if unknown:
        raise ToneserveError(Code.INVALID_ARGUMENT, f"channel_roles names channels {unknown}, but the audio has "
                                                    f"{channels} channel(s) (0-based)")
    names = [roles.get(c) or f"channel_{c}" for c in range(channels)]
    if len(set(names)) != len(names):
        raise ToneserveError(Code.INVALID_ARGUMENT, f"speakers must have distinct names, got {names}")
    return [Speaker(name, c) for c, name in enumerate(names)]


def _first_error(group: BaseExceptionGroup) -> ToneserveError | None:
    """The error a client should see from a failed task group: its first ToneserveError, if any."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    return next((e for e in leaves if isinstance(e, ToneserveError)), None)


class Analysis:
    """The analysis of one request; `run` is called once."""

    def __init__(self, inference: Backend, settings: Settings, calls: TritonCalls, options: pb.AnalyzeRequest,
                 executor: concurrent.futures.Executor | None = None, judge: Judge | None = None):
        """`calls`: the request's Triton calls and CPU work (its tenant's fair shares, its id and deadline).
        `executor`: the threads that open and read the recording (None: asyncio's default pool).
        A live recording's reads wait for the client, so the service gives those their own. `judge`: the
        LLM judge asked for the call's verdict once the segments are in (None: no verdict)."""
        self.executor = executor
        self.inference = inference
        self.settings = settings
        self._triton = calls
        self.text_scorer = sentiment.scorer(settings.text_sentiment, inference)
        self.options = options
        self.request_id = calls.request_id
        self.judge = judge
        self.language = options.language or "auto"
        inference.language_query_id(self.language)  # an unknown language fails before any decoding
        self.window_seconds = settings.window(options.window_seconds)
        self.thresholds = thresholds.from_proto(options.thresholds)
        self.diarization = speakers.plan(options, settings)  # bad hints fail before any decoding
        self.voices: dict[int, speakers.Voices] = {}  # diarized channel -> its pieces
        self.warnings: dict[str, None] = {}  # ordered set, filled from worker threads
        self.lock = threading.Lock()
        self.on_segment = None
        self.samples = 0  # decoded so far, per channel: what a request that fails is charged (quotas)
        self._decoder_idle = asyncio.Event()  # clear while a worker thread opens or reads the recording
        self._live = False  # the source's reads wait for the client (`run` sets it)
        # Live: utterances analysed as soon as silence followed them, by outcome (used: the utterance ended
        # there; dropped: speech resumed, or the stream ended first, and that compute was spent for nothing).
        self.early_analyses = {"used": 0, "dropped": 0}
        self._decoder_idle.set()

    # ------------------------------------------------------------------ helpers

    def _warn(self, message: str) -> None:
        with self.lock:
            self.warnings[message] = None

    # ------------------------------------------------------------------ the run

    async def run(self, source: AudioSource, block_frames: int = BLOCK_FRAMES, on_segment=None) -> pb.AnalyzeResponse:
        """`block_frames`: VAD frames decoded at a time (live audio takes short blocks, so an
        utterance is analysed soon after it ends). `on_segment`: a coroutine function called with
        each segment as soon as it is analysed. The source is the caller's to close, after this
        returns. A model's failure is raised as the first ToneserveError of the analysis (the
        other tasks are cancelled)."""
        try:
            return await self._run(source, block_frames, on_segment)
        except BaseExceptionGroup as group:  # of the task groups: one task failed, the rest were cancelled
            error = _first_error(group)
            if error is None:
                raise
            raise error from None

    async def _run(self, source: AudioSource, block_frames: int, on_segment) -> pb.AnalyzeResponse:
        started = time.perf_counter()
        self.on_segment = on_segment
        self._live = source.live
        stream: AudioStream | None = None
        try:
            stream = await self._decode(open_audio, source.audio(), self.settings.limits)
            blocks = stream.blocks(block_seconds(block_frames))
            # Whether the channels are copies is judged on the first VAD_CELL_FRAMES at least, whatever
            # the block size: short live blocks must not decide otherwise than 1 s blocks (that would change
            # the segments); the blocks read for it are then analysed one by one.
            first: list[np.ndarray] = []
            while sum(b.shape[1] for b in first) < VAD_CELL_FRAMES * VAD_FRAME:
                block = await self._decode(next, blocks, None)
                if block is None:
                    break
                first.append(block)
            mix = self.options.mix_channels
            if first and not mix and same_audio_on_every_channel(np.concatenate(first, axis=1)):
                mix = True
                self._warn(f"the {stream.channels} channels carry the same audio: analysed as one speaker (mix)")
            channel_speakers = speakers_of(stream.channels, self.options, mix)
            self._diarize(channel_speakers)
            segments, samples = await self._segments(first, blocks, channel_speakers, mix, block_frames)
        finally:
            # A cancelled or failed request may leave the recording being opened or read in a
            # worker thread: the container is closed only after that thread has returned, never
            # under it (cancelled again while waiting, it is left to the garbage collector).
            if not self._decoder_idle.is_set():
                source.interrupt()  # a decoder waiting for the client's next chunk returns at once
                await self._decoder_idle.wait()
            if stream is not None:
                stream.close()
        if not segments:
            raise ToneserveError(Code.NO_SPEECH, f"VAD found no speech in {samples / SAMPLE_RATE:.1f} s of audio "
                                                 f"(vad_threshold {self.thresholds.vad_threshold:g})")
        names = await self._triton.compute(self._speaker_names, channel_speakers)  # clustering: CPU work, off the loop
        segments.sort(key=lambda s: (s.start_ms, s.channel))
        reconcile.mark_escalation(segments, self.thresholds)
        duration = samples / SAMPLE_RATE
        summaries, call = rollup.summarize(segments, duration, names)
        if self.judge is not None:
            await self._verdict(segments, call)
        return pb.AnalyzeResponse(segments=segments, speakers=summaries, call=call,
                                  metadata=self._metadata(stream, duration, started))

    async def _verdict(self, segments: list[pb.Segment], call: pb.CallSummary) -> None:
        """The judge's verdict into `call`, or a warning: within the judge's own bound and, leaving the answer
        VERDICT_MARGIN_S to travel, the request's deadline; never an error."""
        assert self.judge is not None
        left = None if self._triton.deadline is None else self._triton.deadline - time.monotonic() - VERDICT_MARGIN_S
        if left is not None and left <= 0:
            self._warn("no call verdict: no time was left before the request's deadline")
            return
        try:
            async with asyncio.timeout(left):
                verdict, warning = await self.judge.verdict(segments)
        except TimeoutError:
            verdict, warning = None, "the request's deadline came before the judge's answer"
        if verdict is not None:
            call.verdict.CopyFrom(verdict)
        if warning:
            self._warn(f"no call verdict: {warning}")

    def _diarize(self, channel_speakers: list[Speaker]) -> None:
        """Which channels are told apart into speakers (`self.voices`), as the request asked."""
        diarized = self.diarization.diarized([s.channel for s in channel_speakers])
        if diarized and contract.SPEAKER not in self.inference.models:
            self._warn("diarization is off: this server has no speaker model (one speaker per channel)")
            return
        roles = dict(self.options.channel_roles)
        for voice in channel_speakers:
            if voice.channel in diarized:
                prefix = roles.get(voice.channel) or ("speaker" if len(channel_speakers) == 1 else voice.name)
                self.voices[voice.channel] = speakers.Voices(voice.name, prefix, self.diarization.hints,
                                                             self.diarization.limit)

    def _speaker_names(self, channel_speakers: list[Speaker]) -> list[tuple[str, int]]:
        """The call's speakers (name, channel) in channel order: a diarized channel's in order of first
        speech, its segments renamed to them."""
        names: list[tuple[str, int]] = []
        for voice in channel_speakers:
            found = self.voices[voice.channel].finish() if voice.channel in self.voices else [voice.name]
            names.extend((name, voice.channel) for name in found)
        return names

    async def _decode(self, function, *args):
        """`function(*args)` in a worker thread, holding a share of the gateway's CPU unless the reads wait for
        the client (a live stream). Shielded: a cancelled request stops waiting for it (and gives its CPU slot
        back), but the call, once submitted, always runs to its end, and `_decoder_idle` tells when
        it got there (see `_run`)."""
        async with contextlib.nullcontext() if self._live else self._triton.cpu_slot():
            return await self._decode_now(function, *args)

    async def _decode_now(self, function, *args):
        loop = asyncio.get_running_loop()
        idle = self._decoder_idle
        idle.clear()

        def work():
            try:
                return function(*args)
            finally:
                loop.call_soon_threadsafe(idle.set)

        return await asyncio.shield(loop.run_in_executor(self.executor, work))

    async def _segments(self, first: list[np.ndarray], blocks, channel_speakers: list[Speaker], mix: bool,
                        block_frames: int) -> tuple[list[pb.Segment], int]:
        """Decode, VAD and segment block by block (`first`: the blocks read already); analyse each
        utterance as soon as it is finished. A live stream analyses each channel's pending utterance as
        soon as silence follows it (`Segmenter.pending`), and keeps that analysis if the utterance then
        finished is the same: the wait for `min_silence_ms` to confirm the end overlaps the models' time."""
        t = self.thresholds
        segmentation = Segmentation([s.channel for s in channel_speakers], t.vad_threshold, t.min_silence_ms,
                                    self.settings.max_utterance_seconds, block_frames)
        names = {s.channel: s.name for s in channel_speakers}
        slots = asyncio.Semaphore(self.settings.utterances_per_request)
        results: list[pb.Segment] = []
        early: dict[int, tuple[Utterance, asyncio.Task]] = {}  # channel -> its pending utterance's analysis
        samples = 0

        async def emit(segment: pb.Segment, voice: np.ndarray | None) -> None:
            voices = self.voices.get(segment.channel)
            if voices is not None and voice is not None:
                voices.add(segment, voice, live=self.on_segment is not None)
            results.append(segment)
            if self.on_segment is not None:
                await self.on_segment(segment)

        async def confirmed(analysis: asyncio.Task) -> None:
            for segment, voice in await analysis:
                await emit(segment, voice)

        async with asyncio.TaskGroup() as group:
            async def launch(utterances: list[Utterance]) -> None:
                for utterance in utterances:
                    started = early.pop(utterance.channel, None)
                    if started is not None and started[0].same(utterance):
                        self.early_analyses["used"] += 1
                        group.create_task(confirmed(started[1]))
                        continue
                    if started is not None:
                        drop(started[1])
                    await slots.acquire()  # back-pressure: decoding waits for Triton
                    group.create_task(self._utterance(utterance, names[utterance.channel], slots, emit))

            def drop(analysis: asyncio.Task) -> None:
                self.early_analyses["dropped"] += 1
                analysis.cancel()

            async def start_early(pending: list[Utterance]) -> None:
                now = {utterance.channel: utterance for utterance in pending}
                for channel in list(early):
                    if channel not in now or not early[channel][0].same(now[channel]):
                        drop(early.pop(channel)[1])  # speech went on: the utterance will end later
                for channel, utterance in now.items():
                    if channel not in early and not slots.locked():  # only with a slot to spare, never waiting
                        await slots.acquire()
                        early[channel] = (utterance, group.create_task(
                            self._utterance(utterance, names[channel], slots, None)))

            read = iter(first)
            block = next(read, None)
            while block is not None:
                if mix:
                    block = block.mean(axis=0, keepdims=True)
                samples += block.shape[1]
                self.samples = samples
                probs = await self._vad(segmentation.vad_input(block))
                await launch(segmentation.feed(block, probs))
                if self._live and self.settings.live_early:
                    await start_early(segmentation.pending())
                block = next(read, None)
                if block is None:
                    block = await self._decode(next, blocks, None)
            await launch(segmentation.finish())
            for _, analysis in early.values():
                drop(analysis)
        return results, samples

    async def _vad(self, wav: np.ndarray) -> np.ndarray:
        """Frame probabilities of each row of `wav` [channels, n], in calls of at most the model's batch size."""
        rows = []
        batch = self.inference.models[contract.VAD].max_batch_size or len(wav)
        for first in range(0, len(wav), batch):
            rows.append(await self._triton(self.inference.vad, wav[first:first + batch]))
        return np.concatenate(rows, axis=0)

    async def _utterance(self, utterance: Utterance, speaker: str, slots: asyncio.Semaphore,
                         emit: Emit | None) -> list[tuple[pb.Segment, np.ndarray | None]]:
        """The segments of one utterance (its pieces, where its channel is diarized) with each one's speaker
        embedding (None where not diarized): each passed to `emit` as soon as it is ready, or, where `emit` is
        None, only returned (an analysis started before the utterance's end was confirmed). Gives its slot back."""
        try:
            diarized = utterance.channel in self.voices
            pieces = await self._pieces(utterance) if diarized else [utterance]
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._piece(piece, speaker, diarized, emit)) for piece in pieces]
            return [task.result() for task in tasks]
        finally:
            slots.release()

    async def _pieces(self, utterance: Utterance) -> list[Utterance]:
        """A diarized utterance cut where the voice changes (speakers.split), from embeddings of its windows."""
        if len(utterance.samples) < speakers.SPLIT_MIN_SECONDS * SAMPLE_RATE:
            return [utterance]
        spans = speakers.windows(len(utterance.samples))
        async with asyncio.TaskGroup() as group:
            calls = [group.create_task(self._triton(self.inference.speaker, utterance.samples[a:b])) for a, b in spans]
        changes = diarization.change_points(np.stack([c.result() for c in calls]))
        return speakers.split(utterance, spans, changes)

    async def _piece(self, utterance: Utterance, speaker: str, diarized: bool,
                     emit: Emit | None) -> tuple[pb.Segment, np.ndarray | None]:
        wav = utterance.samples
        windows = emotion_windows(len(wav), self.window_seconds)
        async with asyncio.TaskGroup() as group:
            asr = group.create_task(self._triton(self.inference.asr, wav, self.language, self.options.use_itn))
            emotions = [group.create_task(self._emotion(wav[a:b])) for a, b in windows]
            # Every piece, however short: clustering weighs its units by duration (diarization.RELIABLE_S).
            voice = group.create_task(self._triton(self.inference.speaker, wav)) if diarized else None
        language = self.language if self.language != "auto" else _top(asr.result().distributions["language"])
        text = await self._text_sentiment(asr.result().text, language)
        # Pitch and reconciliation are CPU work: off the event loop.
        answers = [e.result() for e in emotions]
        embeddings = [a[1] for a in answers if a[1] is not None] if self.options.include_embeddings else None
        segment = await self._triton.compute(self._segment, utterance, speaker, asr.result(), [a[0] for a in answers],
                                             windows, language, text, embeddings)
        result = (segment, None if voice is None else voice.result())
        if emit is not None:
            await emit(*result)
        return result

    async def _emotion(self, wav: np.ndarray) -> tuple[Distribution, np.ndarray | None]:
        """emotion2vec+ on one window: its distribution, and its embedding when the request asked for embeddings
        (else None: the embedding is asked of Triton only then)."""
        if self.options.include_embeddings:
            return await self._triton(self.inference.emotion_embedding, wav)
        return await self._triton(self.inference.emotion, wav), None

    async def _text_sentiment(self, transcript: str, language: str) -> pb.TextSentiment:
        """The transcript's sentences scored (gateway/sentiment.py); a warning where its language goes unscored."""
        if self.text_scorer.method(language) is None and language != "nospeech":
            self._warn(self.text_scorer.warning(language))
        return await sentiment.text_sentiment(transcript, language, self.text_scorer, self.thresholds.sentiment_break,
                                              self._triton)

    def _segment(self, utterance: Utterance, speaker: str, asr: AsrResult, emotions: list[Distribution],
                 windows: list[tuple[int, int]], language: str, text: pb.TextSentiment,
                 embeddings: list[np.ndarray] | None = None) -> pb.Segment:
        """The segment of one utterance; `embeddings`: its windows' emotion2vec+ embeddings, when the request asked
        for them (their duration-weighted mean, as the emotion's, is the segment's)."""
        weights = np.array([b - a for a, b in windows], np.float64)
        mean = sum(w * np.asarray(p, np.float64) for w, (_, p) in zip(weights, emotions)) / weights.sum()
        start_ms, end_ms = utterance.start * 1000 // SAMPLE_RATE, utterance.end * 1000 // SAMPLE_RATE
        segment = pb.Segment(
            start_ms=start_ms, end_ms=end_ms,
            channel=utterance.channel, speaker=speaker, transcript=asr.text,
            language=distribution(asr.distributions["language"]),
            asr_emotion=distribution(asr.distributions["emotion"]),
            event=distribution(asr.distributions["event"]),
            itn=distribution(asr.distributions["itn"]),
            emotion=distribution((emotions[0][0], mean)), emotion_windows=len(windows))
        segment.words.extend(words.timed(asr.text, language, asr.pieces, start_ms, end_ms))
        if embeddings:
            segment.embedding.extend(np.average(np.asarray(embeddings, np.float64), axis=0, weights=weights).tolist())
        segment.text_sentiment.CopyFrom(text)
        segment.prosody.CopyFrom(prosody.prosody(utterance.samples, SAMPLE_RATE, asr.text, language))
        segment.judgement.CopyFrom(reconcile.judge(segment.emotion, segment.text_sentiment, self.thresholds))
        return segment

    def _metadata(self, stream: AudioStream, duration: float, started: float) -> pb.Metadata:
        models = [pb.ModelInfo(name=m.name, version=m.version, family=m.family, preset=m.preset,
                               weights_origin=m.weights_origin, precision=m.precision, runtime=m.runtime)
                  for m in self.inference.models.values()]
        random = any(m.weights_origin == "random" for m in models)
        warnings = ([RANDOM_WEIGHTS_WARNING] if random else []) + list(self.warnings)
        return pb.Metadata(
            request_id=self.request_id, models=models, random_weights=random,
            audio_seconds=duration, sample_rate_in=stream.source_rate, channels_in=stream.channels,
            processing_ms=(time.perf_counter() - started) * 1000.0, warnings=warnings,
            emotion_labels=self.inference.emotion_labels,
            label_sets=[pb.LabelSet(name=k, labels=v) for k, v in self.inference.label_sets().items()],
            thresholds=thresholds.to_proto(self.thresholds), container=stream.container, codec=stream.codec)
