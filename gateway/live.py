"""The audio of an AnalyzeStream call, readable by PyAV while the client is still sending it.

The decoder runs in a worker thread and reads a file object; the chunks arrive on the event
loop. `LiveAudio` joins the two: `feed()` (a task on the loop) takes each chunk from the
request stream and queues it; `read()` (the decoder's thread) blocks until a chunk or the end
is there. At most `max_chunks` wait in the queue: beyond that `feed()` stops reading the
stream, so gRPC's flow control holds the client back instead of the gateway buffering a fast
sender's audio without bound.

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

from toneserve.contract import ToneserveError
from toneserve.gateway.audio import Source
from toneserve.gateway.sources import chunks

_END = None


class LiveAudio(io.RawIOBase):
    def __init__(self, max_bytes: int, max_chunks: int = 16):
        super().__init__()
        self.max_bytes = max_bytes
        self.failure: ToneserveError | None = None
        self._chunks: queue.Queue = queue.Queue()  # bounded by _room, which the loop side awaits
        self._room = asyncio.Semaphore(max_chunks)
        self._loop = asyncio.get_running_loop()
        self._pending = b""
        self._ended = False
        self._feeder: asyncio.Task | None = None

    def start(self, request_iterator) -> "LiveAudio":
        self._feeder = asyncio.create_task(self.feed(request_iterator))
        return self

    async def feed(self, request_iterator) -> None:
        try:
            async with contextlib.aclosing(chunks(request_iterator, self.max_bytes)) as received:
                async for chunk in received:
                    await self._room.acquire()
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

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while not self._pending and not self._ended:
            chunk = self._chunks.get()
            if chunk is _END:
                self._ended = True
            else:
                self._loop.call_soon_threadsafe(self._room.release)
                self._pending = chunk
        data, self._pending = self._pending[:size], self._pending[size:]
        return data
