"""The audio of an AnalyzeStream call, readable by PyAV while the client is still sending it.

The decoder runs in a worker thread and reads a file object; the chunks arrive on the event
loop. `LiveAudio` joins the two: `feed()` (a task on the loop) takes each chunk from the
request stream and queues it; `read()` (the decoder's thread) blocks until a chunk or the end
is there. At most `buffer_bytes` wait in the queue (or one larger chunk alone): beyond that
`feed()` stops reading the stream, so gRPC's flow control holds the client back instead of the
gateway buffering a fast sender's audio without bound. Counted in bytes, not messages: a
message may be as large as gRPC's receive limit.

A client that sends nothing for `chunk_timeout` seconds (or is still sending at `until`) ends the
audio with DEADLINE_EXCEEDED; `read()` itself never waits longer than that either, so a worker
thread is never held by an idle client. The service runs these decoders on threads of their own
(gateway/service.py), so even while they wait, the unary calls' threads stay free.

A bad message (a second `options`, too many bytes) ends the audio and is kept in `failure`:
the decoder then sees an ordinary end of file (an exception inside FFmpeg's read callback can
be swallowed by a demuxer), and the service answers with `failure`, not with whatever the
analysis of the truncated audio gave.

`LiveAudio` is the AudioSource of AnalyzeStream (gateway/sources.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import queue

from toneserve.contract import Code, ToneserveError
from toneserve.gateway.audio import Source
from toneserve.gateway.sources import chunks

_END = None


class LiveAudio(io.RawIOBase):
    live = True  # reads wait for the client's next chunk

    def __init__(self, max_bytes: int, buffer_bytes: int = 4 * 1024 * 1024, chunk_timeout: float | None = 30.0,
                 until: float | None = None):
        super().__init__()
        self.max_bytes = max_bytes
        self.buffer_bytes = buffer_bytes
        self.chunk_timeout = chunk_timeout
        self.until = until  # time.monotonic() by which the stream must have ended
        self.failure: ToneserveError | None = None
        self._chunks: queue.Queue = queue.Queue()  # bounded by buffer_bytes, which the loop side awaits
        self._buffered = 0  # bytes in the queue (the loop's count)
        self._drained = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._pending = b""
        self._ended = False
        self._feeder: asyncio.Task | None = None

    def start(self, request_iterator) -> "LiveAudio":
        self._feeder = asyncio.create_task(self.feed(request_iterator))
        return self

    async def feed(self, request_iterator) -> None:
        try:
            async with contextlib.aclosing(chunks(request_iterator, self.max_bytes, self.chunk_timeout,
                                                  self.until)) as received:
                async for chunk in received:
                    while self._buffered and self._buffered + len(chunk) > self.buffer_bytes:
                        self._drained.clear()
                        await self._drained.wait()
                    self._buffered += len(chunk)
                    self._chunks.put(chunk)
        except ToneserveError as error:
            self.failure = error
        finally:
            self._chunks.put(_END)

    # --- the AudioSource -----------------------------------------------------------------------

    def audio(self) -> Source:
        return self

    def interrupt(self) -> None:
        """Stop reading the client and end the audio, so a decoder blocked in `read` returns."""
        if self._feeder is not None:
            self._feeder.cancel()
        self._chunks.put(_END)

    def close(self) -> None:
        self.interrupt()
        super().close()

    # --- the decoder's side (a worker thread) --------------------------------------------------

    def readable(self) -> bool:
        return True

    def _taken(self, size: int) -> None:
        """On the loop: the decoder took `size` bytes off the queue."""
        self._buffered -= size
        self._drained.set()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        # The feeder ends the audio when the client is idle too long; this bound is the decoder's own,
        # should the loop side fail to (a little later, so the feeder's clearer error comes first).
        timeout = None if self.chunk_timeout is None else self.chunk_timeout + 5.0
        while not self._pending and not self._ended:
            try:
                chunk = self._chunks.get(timeout=timeout)
            except queue.Empty:
                if self.failure is None:
                    self.failure = ToneserveError(Code.DEADLINE_EXCEEDED, "the client's audio stopped coming")
                chunk = _END
            if chunk is _END:
                self._ended = True
            else:
                self._loop.call_soon_threadsafe(self._taken, len(chunk))
                self._pending = chunk
        data, self._pending = self._pending[:size], self._pending[size:]
        return data
