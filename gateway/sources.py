"""The audio of one request, whichever RPC brought it: `AudioSource`.

Analyze carries the audio in its one message (`InMessage`); AnalyzeUpload sends it as chunks,
spooled whole before decoding starts (`Spool`); AnalyzeStream sends chunks that are decoded as
they arrive (gateway/live.py, `LiveAudio`). The service creates the source and closes it once
the analysis has returned; the analysis only reads it, and interrupts it when it must stop
decoding early.
"""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncGenerator
from typing import Protocol

from toneserve.contract import Code, ToneserveError
from toneserve.gateway.audio import Source


class AudioSource(Protocol):
    @property
    def live(self) -> bool:
        """Whether reading waits for the client (AnalyzeStream): such reads are not CPU work, and hold no
        share of the gateway's CPU while they wait."""
        ...

    @property
    def failure(self) -> ToneserveError | None:
        """The client's stream was bad (a second `options`, too many bytes): this, not whatever
        the audio received before it gives, is the answer."""
        ...

    def audio(self) -> Source:
        """What the decoder reads (gateway/audio.py `open_audio`)."""
        ...

    def interrupt(self) -> None:
        """End the audio now, so that a decoder blocked waiting for the client returns."""
        ...

    def close(self) -> None:
        """Release what the source holds; called once its decoder has returned."""
        ...


async def next_message(request_iterator, timeout: float | None, waiting_for: str):
    """The call's next message (None at its end); DEADLINE_EXCEEDED after `timeout` seconds without one."""
    try:
        return await asyncio.wait_for(anext(request_iterator, None), timeout)
    except TimeoutError:
        raise ToneserveError(Code.DEADLINE_EXCEEDED, f"no {waiting_for} from the client within "
                                                     f"{max(timeout or 0, 0):g} s") from None


async def chunks(request_iterator, max_bytes: int, chunk_timeout: float | None = None,
                 until: float | None = None) -> AsyncGenerator[bytes, None]:
    """The audio chunks of an AnalyzeUpload or AnalyzeStream call after its `options`: a second
    `options` is INVALID_ARGUMENT, more than `max_bytes` in all AUDIO_TOO_LARGE; no chunk for
    `chunk_timeout` seconds, or the stream still open at time.monotonic() `until`, DEADLINE_EXCEEDED
    (a client that opens calls and sends nothing holds no gateway resource for long)."""
    size = 0
    while True:
        timeout, waiting_for = chunk_timeout, "audio chunk"
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                raise ToneserveError(Code.DEADLINE_EXCEEDED, "the upload did not end in the time it is allowed")
            if timeout is None or left < timeout:
                timeout, waiting_for = left, "end of the upload"
        message = await next_message(request_iterator, timeout, waiting_for)
        if message is None:
            return
        if message.WhichOneof("part") != "chunk":
            raise ToneserveError(Code.INVALID_ARGUMENT, "`options` may only be the first message")
        size += len(message.chunk)
        if size > max_bytes:
            raise ToneserveError(Code.AUDIO_TOO_LARGE, f"more than {max_bytes} bytes of audio sent")
        yield message.chunk


class InMessage:
    """Analyze's audio: the bytes of the request message, all there before decoding starts."""

    failure = None
    live = False

    def __init__(self, data: bytes):
        self.data = data

    def audio(self) -> Source:
        return self.data

    def interrupt(self) -> None:
        pass  # decoding from memory never waits

    def close(self) -> None:
        pass  # the bytes belong to the request message


class Spool:
    """AnalyzeUpload's audio, received whole before decoding starts: the first `memory_bytes` in
    memory, the rest in a temporary file."""

    failure = None
    live = False

    def __init__(self, memory_bytes: int):
        self.file = tempfile.SpooledTemporaryFile(max_size=memory_bytes)

    @classmethod
    async def receive(cls, request_iterator, max_bytes: int, memory_bytes: int, chunk_timeout: float | None = None,
                      until: float | None = None) -> Spool:
        """The rest of the call's messages, spooled (closed again if they are bad); `chunk_timeout`
        and `until` as `chunks` takes them."""
        spool = cls(memory_bytes)
        try:
            async with contextlib.aclosing(chunks(request_iterator, max_bytes, chunk_timeout, until)) as received:
                async for chunk in received:
                    spool.file.write(chunk)
            spool.file.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool

    def audio(self) -> Source:
        return self.file

    def interrupt(self) -> None:
        pass  # the upload is all there: decoding never waits

    def close(self) -> None:
        self.file.close()
