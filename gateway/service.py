"""The toneserve.v1.Analyzer service: admission, request ids, deadlines, errors and metrics.

The analysis itself is gateway/pipeline.py. Here: at most `max_requests` run at
once (one more is answered OVERLOADED with gRPC's retry-pushback hint instead of
queueing without bound); every request ends in exactly one answer or one error
with a code of toneserve.contract's `Code`; each RPC receives its audio as its own
AudioSource (gateway/sources.py), which the service closes once the analysis has
returned: Analyze's bytes; AnalyzeUpload's upload, spooled (memory up to
`spool_memory_bytes`, then a temporary file) before decoding it in blocks;
AnalyzeStream's, decoded while it arrives, each segment sent when it is ready.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import uuid
from typing import NoReturn

import grpc

from toneserve import contract
from toneserve.contract import (
    ERROR_CODE_METADATA,
    REQUEST_ID_METADATA,
    RETRY_PUSHBACK_METADATA,
    SAMPLE_RATE,
    Code,
    ToneserveError,
    request_id_problem,
)
from toneserve.gateway import sentiment, thresholds
from toneserve.gateway.auth import ApiKeys
from toneserve.gateway.backend import Backend, ModelInfo
from toneserve.gateway.calls import TritonCalls as Call
from toneserve.gateway.fair_queue import FairPools, FairSlots
from toneserve.gateway.live import LiveAudio
from toneserve.gateway.metrics import Metrics
from toneserve.gateway.options import check as check_options
from toneserve.gateway.pipeline import RANDOM_WEIGHTS_WARNING, Analysis
from toneserve.gateway.quota import Allowance, QuotaExceeded, Quotas, QuotaStore, SharedQuotas
from toneserve.gateway.settings import Settings, cores
from toneserve.gateway.sources import AudioSource, InMessage, Spool, next_message
from toneserve.gateway.verdict import Judge
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

log = logging.getLogger("toneserve.gateway")

# Calls in flight to a model whose config does not say what Triton computes of it at once (a Backend without
# `ModelInfo.concurrency`): two runs, the cpu profile's streams.
UNKNOWN_MODEL_SLOTS = 2

# The models whose Triton calls also share a budget of runs in flight (--max-triton-runs): the long audio models,
# whose runs each hold a core for as long as their audio lasts. On 2 cores their 2 + 2 runs at once shared the
# cores, and a tenant's call could wait for its model's slot while a flood's calls held them waiting for the
# other model; with the budget the fair queue decides whose run computes next across both (docs/BENCHMARKS.md,
# "A budget of runs across the audio models"). The short calls (vad, speaker, text sentiment) stay outside it.
BUDGET_MODELS = frozenset({contract.ASR, contract.EMOTION})


async def _options(request_iterator, rpc: str, timeout: float | None) -> pb.AnalyzeRequest:
    """The options that open an AnalyzeUpload or AnalyzeStream call."""
    first = await next_message(request_iterator, timeout, "options")
    if first is None or first.WhichOneof("part") != "options":
        raise ToneserveError(Code.INVALID_ARGUMENT, f"the first {rpc} message must carry `options`")
    if first.options.audio:
        raise ToneserveError(Code.INVALID_ARGUMENT,
                             f"{rpc} takes the audio as `chunk` messages; options.audio must be empty")
    return first.options


class AnalyzerService(pb_grpc.AnalyzerServicer):
    def __init__(self, inference: Backend, settings: Settings = Settings(), metrics: Metrics | None = None,
                 keys: ApiKeys = ApiKeys(), judge: Judge | None = None, quota_store: QuotaStore | None = None,
                 quota_store_name: str = "the quota store"):
        """`judge`: the LLM judge asked for each call's verdict (--judge-url); None: no verdicts.
        `quota_store`: where the replicas share the tenants' quota counters (--quota-store, gateway/quota.py);
        None: this replica counts alone. Its `shared_quotas.start()` is awaited before serving."""
        self.inference = inference
        self.judge = judge
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.keys = keys
        # Triton calls in flight per model, and the gateway's CPU work, shared between tenants by weight (the key
        # file's weight=). A model's pool is sized when its first call is made: after the models are loaded.
        weight = lambda tenant: self.keys.policy(tenant).weight  # noqa: E731
        self.triton_slots = FairPools(self._model_slots, weight, self._run_budget, BUDGET_MODELS.__contains__)
        self.cpu_slots = FairSlots(settings.cpu_slots or cores(), weight)
        self.metrics.triton_waiting.set_function(self.triton_slots.waiting)
        self.metrics.cpu_waiting.set_function(self.cpu_slots.waiting)
        self.quotas = Quotas(self._allowance)
        self.shared_quotas: SharedQuotas | None = None
        if quota_store is not None:
            self.metrics.quota_store()
            up, fallbacks = self.metrics.quota_store_up, self.metrics.quota_store_fallbacks
            self.shared_quotas = SharedQuotas(quota_store, self.quotas, quota_store_name,
                                              on_state=lambda ok: up.set(1 if ok else 0),
                                              on_fallback=lambda op: fallbacks.labels(op).inc())
        # Whether Triton is ready (the server's TritonWatch follows it); while not, requests are refused at once.
        self.triton_ready = lambda: True
        # The gateway drains (SIGTERM): new requests are refused SHUTTING_DOWN (gRPC's server refuses new RPCs
        # itself; the HTTP API's kept-alive connections reach here), those running go on until `end_drain()`.
        self.draining = False
        self._running: set[asyncio.Task] = set()  # the tasks running a request's work (`guarded`)
        self._ended: set[asyncio.Task] = set()  # those `end_drain` cancelled
        self.active = 0
        self.active_by_tenant: dict[str, int] = {}
        # Threads that open and read recordings, one per request the gateway admits: a request has at
        # most one read in progress, so none ever waits for a thread. A live stream's reads wait for
        # its client: they get threads of their own, never those of asyncio's small default pool,
        # which the other requests' CPU work (and the other RPCs' decoding) need.
        self.decoders = concurrent.futures.ThreadPoolExecutor(settings.max_requests, "toneserve-decode")
        self.live_decoders = concurrent.futures.ThreadPoolExecutor(settings.max_requests, "toneserve-live")

    def _model_slots(self, model: str) -> int:
        """The calls to `model` this gateway keeps in flight: --max-triton-calls, else what the Triton replicas
        compute of it at once (UNKNOWN_MODEL_SLOTS per replica where its config does not say)."""
        if self.settings.max_inflight is not None:
            return self.settings.max_inflight
        return self._at_once(self.inference.models.get(model))

    def _at_once(self, info: ModelInfo | None) -> int:
        """What the Triton replicas compute of a model at once (UNKNOWN_MODEL_SLOTS per replica where its config
        does not say)."""
        per_replica = info.concurrency if info is not None and info.concurrency > 0 else UNKNOWN_MODEL_SLOTS
        return per_replica * max(1, self.inference.replicas)

    def _run_budget(self) -> int | None:
        """The runs of BUDGET_MODELS this gateway keeps in flight together: --max-triton-runs (0: no budget),
        else, where they compute on CPUs, the runs the busiest of them computes at once (instances x streams: the
        cores it was tuned for) times the replicas; None (no budget) where one computes on a GPU."""
        if self.settings.max_triton_runs is not None:
            return self.settings.max_triton_runs or None
        infos = [info for name, info in self.inference.models.items() if name in BUDGET_MODELS]
        if not infos or any(info.gpu for info in infos):
            return None
        return max(self._at_once(info) for info in infos)

    def resize_slots(self) -> dict[str, int]:
        """Size every model's pool made so far again, and the budget (the Triton replicas changed); returns each
        served model's slots, and the budget's where there is one."""
        self.triton_slots.resize()
        sizes = {name: self._model_slots(name) for name in self.inference.models}
        for name, slots in sizes.items():
            self.metrics.triton_slots.labels(name).set(slots)
        budget = self._run_budget()
        self.metrics.triton_run_budget.set(budget or 0)
        if budget is not None:
            sizes[" + ".join(sorted(BUDGET_MODELS)) + " together"] = budget
        return sizes

    async def Analyze(self, request: pb.AnalyzeRequest, context) -> pb.AnalyzeResponse:
        async def options() -> pb.AnalyzeRequest:
            return request

        async def receive(deadline: float | None) -> AudioSource:
            if len(request.audio) > self.settings.max_message_bytes:
                raise ToneserveError(Code.AUDIO_TOO_LARGE, f"{len(request.audio)} bytes; Analyze takes up to "
                                     f"{self.settings.max_message_bytes}: send larger files with AnalyzeUpload")
            return InMessage(request.audio)
        return await self._serve("Analyze", context, options, receive, self.decoders)

    async def AnalyzeUpload(self, request_iterator, context) -> pb.AnalyzeResponse:
        async def options() -> pb.AnalyzeRequest:
            return await _options(request_iterator, "AnalyzeUpload", self.settings.chunk_timeout_seconds)
        return await self.upload("AnalyzeUpload", context, options, request_iterator)

    async def upload(self, rpc: str, context, options_of, request_iterator) -> pb.AnalyzeResponse:
        """An upload's analysis: `options_of()` the request's options, `request_iterator` its `chunk` messages,
        spooled before decoding. AnalyzeUpload's path, which the HTTP API's POST /v1/analyze takes too."""
        async def receive(deadline: float | None) -> AudioSource:
            until = time.monotonic() + self.settings.upload_timeout_seconds
            return await Spool.receive(request_iterator, self.settings.limits.max_bytes,
                                       self.settings.spool_memory_bytes, self.settings.chunk_timeout_seconds,
                                       until if deadline is None else min(until, deadline))
        return await self._serve(rpc, context, options_of, receive, self.decoders)

    async def AnalyzeStream(self, request_iterator, context):
        """AnalyzeUpload's messages, analysed as they arrive (gateway/live.py); each segment is sent
        as soon as it is analysed, then the whole response."""
        events: asyncio.Queue = asyncio.Queue()

        async def options() -> pb.AnalyzeRequest:
            return await _options(request_iterator, "AnalyzeStream", self.settings.chunk_timeout_seconds)

        async def receive(deadline: float | None) -> AudioSource:
            return LiveAudio(self.settings.limits.max_bytes, self.settings.live_buffer_bytes,
                             self.settings.chunk_timeout_seconds, deadline).start(request_iterator)

        async def send(segment: pb.Segment) -> None:
            events.put_nowait(pb.AnalyzeEvent(segment=segment))  # a copy: later flags go to `result` only

        serving = asyncio.create_task(self._serve("AnalyzeStream", context, options, receive, self.live_decoders,
                                                  on_segment=send, block_frames=self.settings.live_block_frames))
        serving.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            yield pb.AnalyzeEvent(result=await serving)  # or the error it aborted the call with
        finally:
            serving.cancel()  # the client went away: stop analysing

    async def AnalyzeText(self, request: pb.AnalyzeTextRequest, context) -> pb.AnalyzeTextResponse:
        """A text's sentences scored by the text-sentiment model, and their average (gateway/sentiment.py)."""
        async def run(tenant: str, call: Call) -> pb.AnalyzeTextResponse:
            return await self.analyze_text(request, tenant, call)
        # Text is not audio: the tenant's audio quota neither admits nor is charged for it.
        return await self.guarded("AnalyzeText", context, run, audio=False)

    async def analyze_text(self, request: pb.AnalyzeTextRequest, tenant: str, call: Call) -> pb.AnalyzeTextResponse:
        """AnalyzeText's work inside its frame (`guarded`); the HTTP API's POST /v1/text runs it too."""
        started = time.perf_counter()
        problem = request_id_problem(request.request_id)
        if problem:
            raise ToneserveError(Code.INVALID_ARGUMENT, problem)
        call.request_id = request.request_id or call.request_id
        language = sentiment.text_language(request.language)
        sentiment.check_text(request.text, self.settings.max_text_chars)
        limits = thresholds.from_proto(request.thresholds)
        scorer = sentiment.scorer(self.settings.text_sentiment, self.inference)
        if not sentiment.sentences(request.text, language):
            raise ToneserveError(Code.INVALID_ARGUMENT, "the text holds no word to score")
        # Nothing here scores the language (the lexicons: en and zh only; a server without the text model):
        # answered as the audio path answers, unscored (no segments, an empty average) with a warning.
        text = await sentiment.text_sentiment(request.text, language, scorer, limits.sentiment_break, call)
        models = [m for name, m in self.inference.models.items()  # what scored: the model, not the lexicons
                  if name == contract.TEXT_SENTIMENT and self.settings.text_sentiment == "model"]
        random = any(m.weights_origin == "random" for m in models)
        warnings = [RANDOM_WEIGHTS_WARNING] if random else []
        if not text.scored:
            warnings.append(scorer.warning(language))
        return pb.AnalyzeTextResponse(
            segments=text.sentences, language=language,
            average=pb.SentimentAverage(sentiment=text.label, sentiment_score=text.score),
            metadata=pb.Metadata(
                request_id=call.request_id, random_weights=random, warnings=warnings,
                models=[pb.ModelInfo(name=m.name, version=m.version, family=m.family, preset=m.preset,
                                     weights_origin=m.weights_origin, precision=m.precision, runtime=m.runtime)
                        for m in models],
                thresholds=thresholds.to_proto(limits),
                processing_ms=(time.perf_counter() - started) * 1000.0))

    async def _serve(self, rpc: str, context, options_of, receive, decoders: concurrent.futures.Executor,
                     **run) -> pb.AnalyzeResponse:
        """`options_of()`: the request's options; `receive(deadline)`: its AudioSource, called only once
        the options are known good, so a bad option is answered before any audio is read."""
        analysis: Analysis | None = None

        async def analyse(tenant: str, call: Call) -> pb.AnalyzeResponse:
            nonlocal analysis
            with contextlib.ExitStack() as cleanup:
                options = await options_of()
                check_options(options, self.settings)  # the request id is echoed only once it is known good
                call.request_id = options.request_id or call.request_id
                # Its constructor checks the language, window and thresholds: also before any audio.
                analysis = Analysis(self.inference, self.settings, call, options, executor=decoders, judge=self.judge)
                source = await receive(call.deadline)
                cleanup.callback(source.close)  # after the analysis, and so its decoder, has returned
                try:
                    response = await analysis.run(source, **run)
                finally:
                    for outcome, count in analysis.early_analyses.items():
                        if count:
                            self.metrics.live_early.labels(outcome).inc(count)
                    if source.failure is not None:  # the client's stream was bad: that is the answer
                        raise source.failure
            self.metrics.audio_seconds.labels(rpc, tenant).inc(response.metadata.audio_seconds)
            return response

        # Charged whatever the outcome: the audio decoded before a failure cost the models too.
        return await self.guarded(rpc, context, analyse,
                                   lambda: analysis.samples / SAMPLE_RATE if analysis is not None else 0.0)

    async def guarded(self, rpc: str, context, work, charged=lambda: 0.0, audio: bool = True):
        """Every RPC's frame (`context`: gRPC's ServicerContext, or gateway/http.py's HttpContext for the HTTP API):
        the key and admission checked (refused at once with a retry hint where a later try
        can pass), `work(tenant, call)` run with its Triton calls (the tenant's fair share, the deadline), its
        answer or exactly one error with a code returned, metrics counted and `charged()` audio seconds charged
        to the tenant whatever the outcome. `audio`: False for an RPC that takes no audio (no quota check)."""
        started = time.perf_counter()
        call = Call(self.triton_slots.tenant(""), uuid.uuid4().hex, None, self.metrics.triton_in_flight.inc,
                    self.cpu_slots.tenant(""))
        tenant = ""  # not known until the key is checked
        try:
            tenant = self.keys.tenant(context.invocation_metadata())
            shared = self.shared_quotas if audio else None
            self._admit(tenant, quota=audio and shared is None)
            if shared is not None:
                await shared.check(tenant)
                self._admit(tenant, quota=False)  # again: others may have been admitted while the store answered
        except ToneserveError as error:
            self.metrics.requests.labels(rpc, error.code.name, tenant).inc()
            await self._abort(context, error, call.request_id, self._retry_hint(error))
        call.slots, call.cpu = self.triton_slots.tenant(tenant), self.cpu_slots.tenant(tenant)
        call.deadline = self._deadline(context)
        code = "OK"
        self.active_by_tenant[tenant] = self.active_by_tenant.get(tenant, 0) + 1
        self.active += 1
        self.metrics.in_flight.inc()
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            return await work(tenant, call)
        except ToneserveError as error:
            code = error.code.name
            await self._abort(context, error, call.request_id, self._retry_hint(error))
        except Exception as exc:  # a bug: answer INTERNAL with the id to find it in the log
            log.error("request %s failed", call.request_id, exc_info=exc)
            code = Code.INTERNAL.name
            await self._abort(context, ToneserveError(
                Code.INTERNAL, f"internal error (request id {call.request_id})"), call.request_id)
        except asyncio.CancelledError:
            if task not in self._ended:  # the client went away or its deadline passed: gRPC answered already
                code = "CANCELLED"
                raise
            task.uncancel()  # the drain ran out (`end_drain`): the client is told to go to another replica
            code = Code.SHUTTING_DOWN.name
            await self._abort(context, ToneserveError(Code.SHUTTING_DOWN, "the gateway is shutting down and its "
                                                      "drain time ran out; retry on another replica"), call.request_id)
        finally:
            self._running.discard(task)
            self._ended.discard(task)
            self.active -= 1
            self.active_by_tenant[tenant] -= 1
            self.metrics.in_flight.dec()
            seconds = charged()
            (self.shared_quotas or self.quotas).charge(tenant, seconds)
            self.metrics.tenant_audio_seconds.labels(tenant).inc(seconds)
            self.metrics.requests.labels(rpc, code, tenant).inc()
            self.metrics.latency.labels(rpc).observe(time.perf_counter() - started)

    def end_drain(self) -> int:
        """The drain's time is over: every request still running ends now with SHUTTING_DOWN (a live stream after
        the segments already analysed). Returns how many were."""
        self.draining = True
        running = [task for task in self._running if not task.done()]
        for task in running:
            self._ended.add(task)
            task.cancel("the drain ran out")
        return len(running)

    def _allowance(self, tenant: str) -> Allowance:
        """The tenant's quotas: its key-file line's, else the gateway's defaults."""
        policy = self.keys.policy(tenant)
        per_minute, per_day = policy.audio_seconds_per_minute, policy.audio_seconds_per_day
        return Allowance(self.settings.tenant_audio_seconds_per_minute if per_minute is None else per_minute,
                         self.settings.tenant_audio_seconds_per_day if per_day is None else per_day)

    def _retry_hint(self, error: ToneserveError) -> tuple[tuple[str, str], ...]:
        """gRPC's retry-pushback trailer for the errors that a later try can get past."""
        if isinstance(error, QuotaExceeded):
            return ((RETRY_PUSHBACK_METADATA, str(error.retry_after_ms)),)
        if error.code in (Code.OVERLOADED, Code.TRITON_UNAVAILABLE):
            return ((RETRY_PUSHBACK_METADATA, str(self.settings.retry_after_ms)),)
        return ()

    def _admit(self, tenant: str, quota: bool = True) -> None:
        """SHUTTING_DOWN while the gateway drains; TRITON_UNAVAILABLE while Triton is not ready; OVERLOADED when
        the gateway, or this tenant's share of it, is at capacity; QUOTA_EXCEEDED when the tenant's audio quota is
        used up."""
        if self.draining:
            raise ToneserveError(Code.SHUTTING_DOWN)
        if not self.triton_ready():
            raise ToneserveError(Code.TRITON_UNAVAILABLE, f"Triton is not ready; retry in "
                                                          f"{self.settings.retry_after_ms} ms")
        if self.active >= self.settings.max_requests:
            raise ToneserveError(Code.OVERLOADED, f"{self.active} requests in progress; retry in "
                                                  f"{self.settings.retry_after_ms} ms")
        limit = self.settings.max_requests_per_tenant
        if limit is not None and self.active_by_tenant.get(tenant, 0) >= limit:
            raise ToneserveError(Code.OVERLOADED, f"tenant {tenant!r} has {limit} requests in progress, its limit; "
                                                  f"retry in {self.settings.retry_after_ms} ms")
        if quota:
            self.quotas.check(tenant)

    def _deadline(self, context) -> float | None:
        """time.monotonic() by which to answer: the client's deadline, capped by the server's."""
        limits = [t for t in (context.time_remaining(), self.settings.max_request_seconds) if t is not None]
        return time.monotonic() + min(limits) if limits else None

    @staticmethod
    async def _abort(context, error: ToneserveError, request_id: str, extra=()) -> NoReturn:
        log.info("request %s: %s", request_id, error.message)
        context.set_trailing_metadata(((ERROR_CODE_METADATA, error.code.name), (REQUEST_ID_METADATA, request_id),
                                       *extra))
        await context.abort(grpc.StatusCode[error.code.status], error.message)
        raise AssertionError("grpc's context.abort ends the call by raising")
