"""The toneserve Python SDK: `Client` (blocking) and `AsyncClient` (asyncio), same methods.

    from toneserve.client import Client

    with Client("127.0.0.1:50051") as client:
        result = client.analyze("call.wav", channel_roles={0: "agent", 1: "customer"})
    for segment in result.segments:
        print(segment.speaker, segment.start, segment.transcript, segment.judgement.sentiment)

Live audio: `client.analyze_stream(chunks)` yields each Segment as soon as it is analysed,
then the Result (see `live_wav_header` for raw PCM).

Results are the typed dataclasses of client/results.py; failures raise AnalyzeError
(client/errors.py). Calls that fail with UNAVAILABLE or RESOURCE_EXHAUSTED are retried
(client/retry.py) within the call's timeout. Both clients are safe to share between
threads / tasks: one connection carries any number of concurrent calls.
"""
from __future__ import annotations

import abc
import asyncio
import dataclasses
import os
import struct
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import grpc

from toneserve.client.connection import Connection
from toneserve.client.errors import AnalyzeError
from toneserve.client.results import Result, Segment, TextResult, from_event
from toneserve.client.retry import Deadline, RetryPolicy
from toneserve.contract import DIARIZATION_MODES, TEXT_LANGUAGES, request_id_problem, role_problem
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

__all__ = ["Client", "AsyncClient", "AnalyzeError", "Result", "Segment", "TextResult", "RetryPolicy", "live_wav_header",
           "UPLOAD_ABOVE_BYTES", "CHUNK_BYTES"]

# Files above this go through AnalyzeUpload in CHUNK_BYTES pieces (the gateway's Analyze takes 64 MiB by
# default; streaming also keeps a large file out of the client's memory).
UPLOAD_ABOVE_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

Audio = bytes | str | os.PathLike


def _diarization(diarization: str, speakers_expected: int, min_speakers: int, max_speakers: int) -> pb.Diarization:
    """The request's diarization: mode "auto" (mono and mixed-down audio), "on" (every channel) or "off", and
    the speaker-count hints (0: not given), checked as the gateway checks them (it also caps them)."""
    if diarization not in DIARIZATION_MODES:
        raise ValueError(f"diarization must be one of {', '.join(DIARIZATION_MODES)}, got {diarization!r}")
    hints = {"speakers_expected": speakers_expected, "min_speakers": min_speakers, "max_speakers": max_speakers}
    for name, value in hints.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a positive int (0: not given), got {value!r}")
    if min_speakers and max_speakers and min_speakers > max_speakers:
        raise ValueError(f"min_speakers ({min_speakers}) is above max_speakers ({max_speakers})")
    if speakers_expected and ((min_speakers and speakers_expected < min_speakers)
                              or (max_speakers and speakers_expected > max_speakers)):
        raise ValueError(f"speakers_expected ({speakers_expected}) is outside [min_speakers, max_speakers]")
    if diarization == "off" and any(hints.values()):
        raise ValueError("speaker-count hints were given with diarization off")
    return pb.Diarization(mode=cast(Any, diarization.upper()), **hints)


def _analyze_request(*, language: str, window_seconds: float, use_itn: bool,
             channel_roles: Mapping[int, str] | Sequence[str] | None, mix_channels: bool,
             thresholds: Mapping[str, float] | None, request_id: str, diarization: str = "auto",
             speakers_expected: int = 0, min_speakers: int = 0, max_speakers: int = 0,
             include_embeddings: bool = False) -> pb.AnalyzeRequest:
    """The request without its audio. `channel_roles` may be a list: ["agent", "customer"] names channels 0, 1."""
    if channel_roles is not None and not isinstance(channel_roles, Mapping):
        channel_roles = dict(enumerate(channel_roles))
    known = {f.name for f in pb.Thresholds.DESCRIPTOR.fields}
    unknown = set(thresholds or {}) - known
    if unknown:
        raise ValueError(f"unknown threshold(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    # The gateway's own rules, checked here first: a bad option is a programming error, not worth a call.
    problem = request_id_problem(request_id) or next(filter(None, map(role_problem, (channel_roles or {}).values())),
                                                     None)
    if problem:
        raise ValueError(problem)
    speakers = _diarization(diarization, speakers_expected, min_speakers, max_speakers)
    return pb.AnalyzeRequest(language=language, window_seconds=window_seconds, use_itn=use_itn,
                             channel_roles=channel_roles or {}, mix_channels=mix_channels, diarization=speakers,
                             include_embeddings=include_embeddings,
                             # Field types are protobuf's to check (an int field refuses a float).
                             thresholds=pb.Thresholds(**cast(dict[str, Any], thresholds or {})),
                             request_id=request_id or uuid.uuid4().hex)


def _text_request(text: str, language: str, sentiment_break: float | None, request_id: str) -> pb.AnalyzeTextRequest:
    """AnalyzeText's request, checked as the gateway checks it (the length limit is the server's)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the text is empty")
    if language not in ("auto", *TEXT_LANGUAGES):
        raise ValueError(f"language must be auto or one of {', '.join(TEXT_LANGUAGES)}, got {language!r}")
    problem = request_id_problem(request_id)
    if problem:
        raise ValueError(problem)
    thresholds = pb.Thresholds() if sentiment_break is None else pb.Thresholds(sentiment_break=sentiment_break)
    return pb.AnalyzeTextRequest(text=text, language=language, thresholds=thresholds,
                                 request_id=request_id or uuid.uuid4().hex)


def _size(audio: Audio) -> int:
    return len(audio) if isinstance(audio, bytes) else Path(audio).stat().st_size


def _chunks(options: pb.AnalyzeRequest, audio: Audio):
    """AnalyzeUpload's messages: the options, then the audio in CHUNK_BYTES pieces, read as they are sent."""
    yield pb.UploadRequest(options=options)
    if isinstance(audio, bytes):
        for start in range(0, len(audio), CHUNK_BYTES):
            yield pb.UploadRequest(chunk=audio[start:start + CHUNK_BYTES])
        return
    with open(audio, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            yield pb.UploadRequest(chunk=chunk)


def _stream_messages(options: pb.AnalyzeRequest, chunks: Iterable[bytes]):
    """AnalyzeStream's messages: the options, then each chunk as the caller's iterable gives it."""
    yield pb.UploadRequest(options=options)
    for chunk in chunks:
        yield pb.UploadRequest(chunk=bytes(chunk))


def live_wav_header(sample_rate: int, channels: int = 1, sample_format: str = "s16") -> bytes:
    """A WAV header for PCM whose length is not known yet (a live capture): send it first, then the
    interleaved samples as they come (s16: little-endian int16; mulaw / alaw: G.711 bytes, as
    telephony media streams carry them). Its sizes say "unknown" (0xFFFFFFFF), which decoders read
    as "until the stream ends"."""
    formats = {"s16": (1, 16), "mulaw": (7, 8), "alaw": (6, 8)}
    if sample_format not in formats:
        raise ValueError(f"sample_format must be one of {', '.join(formats)}, not {sample_format!r}")
    tag, bits = formats[sample_format]
    block = channels * bits // 8
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, sample_rate, sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", unknown))


async def _chunks_async(options: pb.AnalyzeRequest, audio: Audio):
    """_chunks, with the file read in a thread so the event loop never waits on the disk."""
    chunks = _chunks(options, audio)
    try:
        while (message := await asyncio.to_thread(next, chunks, None)) is not None:
            yield message
    finally:
        chunks.close()


class _Base(abc.ABC):
    def __init__(self, address: str | None = None, *, api_key: str | None = None,
                 ca_cert: str | os.PathLike | None = None, tls: bool | None = None,
                 retry: RetryPolicy | None = None, max_attempts: int | None = None,
                 allow_plaintext_key: bool | None = None):
        """address "host:port", api_key and ca_cert (a PEM file) default to TONESERVE_ADDRESS,
        TONESERVE_API_KEY and TONESERVE_CA_CERT, then to a local plaintext gateway without a key.
        `tls=True` without a CA certificate trusts the system's roots. `max_attempts` is a shortcut
        for RetryPolicy(max_attempts=...). An API key is refused (ValueError) in plaintext to an address
        beyond this machine unless `allow_plaintext_key` (default: TONESERVE_ALLOW_PLAINTEXT_KEY=1)."""
        self.connection = Connection.resolve(address, api_key, ca_cert, tls, allow_plaintext_key)
        self.retry = retry or RetryPolicy()
        if max_attempts is not None:
            self.retry = dataclasses.replace(self.retry, max_attempts=max_attempts)
        self._open()

    @abc.abstractmethod
    def _open(self) -> None:
        """Set up the connection (the channel and the stub)."""

    @property
    def address(self) -> str:
        return self.connection.address

    def _request(self, audio: Audio, upload: bool | None, **options) -> tuple[pb.AnalyzeRequest, bool]:
        request = _analyze_request(**options)
        if upload is None:
            upload = _size(audio) > UPLOAD_ABOVE_BYTES
        return request, upload

    def _error(self, exc: grpc.RpcError, request: pb.AnalyzeRequest | pb.AnalyzeTextRequest,
               deadline: Deadline) -> AnalyzeError:
        return AnalyzeError.from_rpc_error(exc, self.address, request.request_id, deadline.timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection!r})"


class Client(_Base):
    """Blocking client. Use as a context manager, or call close()."""

    def _open(self) -> None:
        self._channel = self.connection.channel()
        self._stub = pb_grpc.AnalyzerStub(self._channel)

    def analyze(self, audio: Audio, *, language: str = "auto", window_seconds: float = 0.0, use_itn: bool = False,
                channel_roles: Mapping[int, str] | Sequence[str] | None = None, mix_channels: bool = False,
                thresholds: Mapping[str, float] | None = None, request_id: str = "", diarization: str = "auto",
                speakers_expected: int = 0, min_speakers: int = 0, max_speakers: int = 0,
                include_embeddings: bool = False, timeout: float | None = 300.0, upload: bool | None = None) -> Result:
        """Analyse a recording: a file path, or the encoded bytes of one (wav, flac, mp3, ogg/opus, m4a, webm...).

        language: "auto", zh, en, yue, ja or ko. window_seconds: longest emotion window (0: the server's).
        use_itn: punctuation and digits in transcripts. channel_roles: speaker names of the channels.
        mix_channels: one speaker for all channels. thresholds: e.g. {"min_silence_ms": 500} (README).
        diarization: "auto" (tell the voices of mono or mixed-down audio apart), "on" (inside every channel
        too) or "off"; speakers_expected / min_speakers / max_speakers: the speaker count, if known (0: not given).
        request_id: echoed in the metadata and the gateway's log (a random one when empty).
        include_embeddings: each Segment.embedding holds the segment's emotion2vec+ embedding (None when not asked
        for): 768 floats at base, 3 KB per segment in protobuf and 8-10 KB in JSON (1024 floats at large: 4 KB, 11-13 KB).
        timeout: seconds for the whole call, retries included (None: no limit).
        upload: stream through AnalyzeUpload; by default only recordings above 32 MiB are.
        """
        request, upload = self._request(audio, upload, language=language, window_seconds=window_seconds,
                                         use_itn=use_itn, channel_roles=channel_roles, mix_channels=mix_channels,
                                         thresholds=thresholds, request_id=request_id, diarization=diarization,
            speakers_expected=speakers_expected, min_speakers=min_speakers, max_speakers=max_speakers,
            include_embeddings=include_embeddings)
        if not upload:
            request.audio = audio if isinstance(audio, bytes) else Path(audio).read_bytes()

        def send(timeout: float | None) -> Result:
            if upload:
                return Result.from_proto(self._stub.AnalyzeUpload(_chunks(request, audio), timeout=timeout,
                                                                  metadata=self.connection.call_metadata()))
            return Result.from_proto(self._stub.Analyze(request, timeout=timeout,
                                                        metadata=self.connection.call_metadata()))
        return self._retrying(request, Deadline(timeout), send)

    def _retrying(self, request, deadline: Deadline, send):
        """`send(timeout)` until it answers, retried as the RetryPolicy says within the deadline."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return send(deadline.remaining())
            except grpc.RpcError as exc:
                error = self._error(exc, request, deadline)
            wait = self.retry.wait_before_retry(error, attempt, deadline)
            if wait is None:
                error.attempts = attempt
                raise error
            time.sleep(wait)

    def analyze_text(self, text: str, *, language: str = "auto", sentiment_break: float | None = None,
                     request_id: str = "", timeout: float | None = 60.0) -> TextResult:
        """The sentiment of a text (no audio): its sentences (segments with start_word / end_word) and their
        average, scored by the server's text-sentiment model. language: auto, zh, en, yue, ja or ko (how
        words and sentences are counted). sentiment_break: the label break points (None: the server's).
        The server takes up to 16000 characters by default. Retried as analyze() is."""
        request = _text_request(text, language, sentiment_break, request_id)
        return self._retrying(request, Deadline(timeout), lambda left: TextResult.from_proto(
            self._stub.AnalyzeText(request, timeout=left, metadata=self.connection.call_metadata())))

    def analyze_stream(self, chunks: Iterable[bytes], *, language: str = "auto", window_seconds: float = 0.0,
                       use_itn: bool = False, channel_roles: Mapping[int, str] | Sequence[str] | None = None,
                       mix_channels: bool = False, thresholds: Mapping[str, float] | None = None,
                       request_id: str = "", diarization: str = "auto",
                speakers_expected: int = 0, min_speakers: int = 0, max_speakers: int = 0, include_embeddings: bool = False,
                timeout: float | None = None) -> Iterator[Segment | Result]:
        """Analyse audio while it is being captured (a live call).

        chunks: the bytes of a recording that grows as it is captured, in order, as they come: a
        WAV header (`live_wav_header`) then PCM, or ogg/opus or webm pages. Yields each Segment as
        soon as the gateway has analysed it, then, once `chunks` is exhausted, the whole Result
        (every segment with escalation marked, speakers, call). The other options are analyze()'s;
        timeout: seconds for the whole stream (None: no limit). A live stream cannot be replayed,
        so nothing is retried: errors raise AnalyzeError.
        """
        request = _analyze_request(language=language, window_seconds=window_seconds, use_itn=use_itn,
                                   channel_roles=channel_roles, mix_channels=mix_channels, thresholds=thresholds,
                                   request_id=request_id, diarization=diarization,
            speakers_expected=speakers_expected, min_speakers=min_speakers, max_speakers=max_speakers,
            include_embeddings=include_embeddings)
        deadline = Deadline(timeout)
        call = self._stub.AnalyzeStream(_stream_messages(request, chunks), timeout=timeout,
                                        metadata=self.connection.call_metadata())
        try:
            for event in call:
                yield from_event(event)
        except grpc.RpcError as exc:
            raise self._error(exc, request, deadline) from None
        finally:
            call.cancel()  # the caller stopped early: end the call (no-op once it has ended)

    def close(self) -> None:
        """Closes the connection; calls still running end with CANCELLED."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client (grpc.aio): `async with AsyncClient(...) as client: await client.analyze(...)`.

    The connection opens on the first call, inside the running event loop."""

    def _open(self) -> None:
        # grpc.aio channels belong to the event loop they are made in: made on the first call.
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.AnalyzerStub | None = None

    def _analyzer(self) -> pb_grpc.AnalyzerStub:
        if self._stub is None:
            self._channel = self.connection.aio_channel()
            self._stub = pb_grpc.AnalyzerStub(self._channel)
        return self._stub

    async def analyze(self, audio: Audio, *, language: str = "auto", window_seconds: float = 0.0,
                      use_itn: bool = False, channel_roles: Mapping[int, str] | Sequence[str] | None = None,
                      mix_channels: bool = False, thresholds: Mapping[str, float] | None = None,
                      request_id: str = "", diarization: str = "auto",
                speakers_expected: int = 0, min_speakers: int = 0, max_speakers: int = 0, include_embeddings: bool = False,
                timeout: float | None = 300.0, upload: bool | None = None) -> Result:
        """As Client.analyze."""
        request, upload = self._request(audio, upload, language=language, window_seconds=window_seconds,
                                         use_itn=use_itn, channel_roles=channel_roles, mix_channels=mix_channels,
                                         thresholds=thresholds, request_id=request_id, diarization=diarization,
            speakers_expected=speakers_expected, min_speakers=min_speakers, max_speakers=max_speakers,
            include_embeddings=include_embeddings)
        if not upload:
            request.audio = audio if isinstance(audio, bytes) else await asyncio.to_thread(Path(audio).read_bytes)
        stub = self._analyzer()

        async def send(timeout: float | None) -> Result:
            if upload:
                return Result.from_proto(await stub.AnalyzeUpload(_chunks_async(request, audio), timeout=timeout,
                                                                  metadata=self.connection.call_metadata()))
            return Result.from_proto(await stub.Analyze(request, timeout=timeout,
                                                        metadata=self.connection.call_metadata()))
        return await self._retrying(request, Deadline(timeout), send)

    async def _retrying(self, request, deadline: Deadline, send):
        """As Client._retrying, awaiting `send(timeout)`."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await send(deadline.remaining())
            except grpc.RpcError as exc:
                error = self._error(exc, request, deadline)
            wait = self.retry.wait_before_retry(error, attempt, deadline)
            if wait is None:
                error.attempts = attempt
                raise error
            await asyncio.sleep(wait)

    async def analyze_text(self, text: str, *, language: str = "auto", sentiment_break: float | None = None,
                           request_id: str = "", timeout: float | None = 60.0) -> TextResult:
        """As Client.analyze_text."""
        request = _text_request(text, language, sentiment_break, request_id)
        stub = self._analyzer()

        async def send(timeout: float | None) -> TextResult:
            return TextResult.from_proto(await stub.AnalyzeText(request, timeout=timeout,
                                                                metadata=self.connection.call_metadata()))
        return await self._retrying(request, Deadline(timeout), send)

    async def analyze_stream(self, chunks: AsyncIterable[bytes] | Iterable[bytes], *, language: str = "auto",
                             window_seconds: float = 0.0, use_itn: bool = False,
                             channel_roles: Mapping[int, str] | Sequence[str] | None = None,
                             mix_channels: bool = False, thresholds: Mapping[str, float] | None = None,
                             request_id: str = "", diarization: str = "auto",
                speakers_expected: int = 0, min_speakers: int = 0, max_speakers: int = 0, include_embeddings: bool = False,
                timeout: float | None = None) -> AsyncIterator[Segment | Result]:
        """As Client.analyze_stream; `chunks` may be an async iterable."""
        request = _analyze_request(language=language, window_seconds=window_seconds, use_itn=use_itn,
                                   channel_roles=channel_roles, mix_channels=mix_channels, thresholds=thresholds,
                                   request_id=request_id, diarization=diarization,
            speakers_expected=speakers_expected, min_speakers=min_speakers, max_speakers=max_speakers,
            include_embeddings=include_embeddings)

        async def messages():
            yield pb.UploadRequest(options=request)
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    yield pb.UploadRequest(chunk=bytes(chunk))
            else:
                for chunk in chunks:
                    yield pb.UploadRequest(chunk=bytes(chunk))

        deadline = Deadline(timeout)
        call = self._analyzer().AnalyzeStream(messages(), timeout=timeout, metadata=self.connection.call_metadata())
        try:
            async for event in call:
                yield from_event(event)
        except grpc.RpcError as exc:
            raise self._error(exc, request, deadline) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
