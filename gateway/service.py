"""The toneserve.v1.Analyzer service: decode, cut windows, call both ensembles, assemble the answer."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc
import numpy as np

from ..v1 import toneserve_pb2 as pb
from ..v1 import toneserve_pb2_grpc as pb_grpc
from .audio import SAMPLE_RATE, Limits, decode, fixed_windows
from .errors import ERROR_CODE_METADATA, Code, ToneserveError
from .inference import Distribution, Inference

log = logging.getLogger("toneserve.gateway")

RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: at least one model serving this request has untrained random "
                          "weights; transcripts, emotions and tags are meaningless")


@dataclass(frozen=True)
class Settings:
    limits: Limits = field(default_factory=Limits)
    window_seconds: float = 5.0
    min_window_seconds: float = 0.5
    max_window_seconds: float = 30.0
    # Bound on Triton calls in flight from this gateway, across all requests.
    max_inflight: int = 64


def distribution(dist: Distribution) -> pb.Distribution:
    labels, probs = dist
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    return pb.Distribution(labels=labels, probabilities=probs.tolist(), top=labels[int(np.argmax(probs))])


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error a client should see from a failed task group: a ToneserveError if any."""
    leaves = []
    stack = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        else:
            leaves.append(error)
    return next((e for e in leaves if isinstance(e, ToneserveError)), leaves[0])


class AnalyzerService(pb_grpc.AnalyzerServicer):
    def __init__(self, inference: Inference, settings: Settings = Settings()):
        self.inference = inference
        self.settings = settings
        self.inflight = asyncio.Semaphore(settings.max_inflight)

    async def Analyze(self, request: pb.AnalyzeRequest, context: grpc.aio.ServicerContext) -> pb.AnalyzeResponse:
        request_id = request.request_id or uuid.uuid4().hex
        try:
            return await self._analyze(request, request_id, context)
        except ToneserveError as exc:
            await self._abort(context, exc, request_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: answer INTERNAL with the id to find it in the log
            log.exception("request %s failed", request_id)
            await self._abort(context, ToneserveError(Code.INTERNAL, f"internal error (request id {request_id})"),
                              request_id)

    async def _abort(self, context, exc: ToneserveError, request_id: str):
        log.info("request %s: %s", request_id, exc.message)
        context.set_trailing_metadata(((ERROR_CODE_METADATA, exc.code.name), ("toneserve-request-id", request_id)))
        await context.abort(exc.code.status, exc.message)

    def _window_seconds(self, requested: float) -> float:
        if requested == 0:
            return self.settings.window_seconds
        lo, hi = self.settings.min_window_seconds, self.settings.max_window_seconds
        if not lo <= requested <= hi:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"window_seconds must be in [{lo}, {hi}], got {requested}")
        return requested

    async def _analyze(self, request, request_id, context) -> pb.AnalyzeResponse:
        started = time.perf_counter()
        window_seconds = self._window_seconds(request.window_seconds)
        language = request.language or "auto"
        self.inference.language_query_id(language)  # reject an unknown language before decoding
        # Decoding is CPU work in C; a thread keeps the event loop answering other requests.
        audio = await asyncio.to_thread(decode, request.audio, self.settings.limits)
        timeout = context.time_remaining()

        async def bounded(call):
            async with self.inflight:
                return await call

        windows = fixed_windows(len(audio.samples), window_seconds)
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the rest
                tasks = [(start, end,
                          group.create_task(bounded(self.inference.asr(audio.samples[start:end], language,
                                                                       request.use_itn, request_id, timeout))),
                          group.create_task(bounded(self.inference.emotion(audio.samples[start:end],
                                                                           request_id, timeout))))
                         for start, end in windows]
        except ExceptionGroup as group_error:
            raise _first_error(group_error) from None

        segments = []
        for start, end, asr_task, emotion_task in tasks:
            asr = asr_task.result()
            segments.append(pb.Segment(
                start_ms=start * 1000 // SAMPLE_RATE, end_ms=end * 1000 // SAMPLE_RATE, channel=-1,
                transcript=asr.text,
                language=distribution(asr.distributions["language"]),
                asr_emotion=distribution(asr.distributions["emotion"]),
                event=distribution(asr.distributions["event"]),
                itn=distribution(asr.distributions["itn"]),
                emotion=distribution(emotion_task.result())))
        return pb.AnalyzeResponse(segments=segments, metadata=self._metadata(
            request_id, audio, started))

    def _metadata(self, request_id, audio, started) -> pb.Metadata:
        models = [pb.ModelInfo(name=m.name, version=m.version, family=m.family, preset=m.preset,
                               weights_origin=m.weights_origin, precision=m.precision)
                  for m in self.inference.models.values()]
        random = any(m.weights_origin == "random" for m in models)
        return pb.Metadata(
            request_id=request_id, models=models, random_weights=random,
            audio_seconds=audio.seconds, sample_rate_in=audio.source_rate, channels_in=audio.source_channels,
            processing_ms=(time.perf_counter() - started) * 1000.0,
            warnings=[RANDOM_WEIGHTS_WARNING] if random else [],
            emotion_labels=self.inference.emotion_labels)
