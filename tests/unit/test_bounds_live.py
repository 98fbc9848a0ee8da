"""AnalyzeStream's audio (gateway/live.py, sources.py): buffered in bounded bytes, and an idle client
ends it within the chunk timeout instead of holding a decoder thread for ever."""
from __future__ import annotations

import asyncio
import time

import pytest

from toneserve.contract import Code
from toneserve.gateway.live import LiveAudio
from toneserve.gateway.sources import Spool
from toneserve.v1 import toneserve_pb2 as pb

MIB = 1 << 20


class Client:
    """A client's request stream: `chunks` as fast as they are taken, then silence for `idle` seconds."""

    def __init__(self, chunks: list[bytes], idle: float = 0.0):
        self.chunks, self.idle, self.sent = chunks, idle, 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.sent < len(self.chunks):
            self.sent += 1
            return pb.UploadRequest(chunk=self.chunks[self.sent - 1])
        await asyncio.sleep(self.idle)
        raise StopAsyncIteration


def test_live_buffering_is_bounded_in_bytes_not_messages():
    async def main():
        client = Client([bytes(MIB)] * 64, idle=60)
        live = LiveAudio(max_bytes=1 << 30, buffer_bytes=4 * MIB, chunk_timeout=None).start(client)
        await asyncio.sleep(0.3)  # nobody reads: the feeder fills the buffer and stops
        held, sent = live._buffered, client.sent
        assert held <= 4 * MIB and sent <= 6, (held, sent)
        data = await asyncio.to_thread(live.read, 3 * MIB)  # the decoder takes some
        await asyncio.sleep(0.1)
        assert len(data) == MIB and client.sent > sent and live._buffered <= 4 * MIB
        # one message larger than the whole buffer is still taken, alone
        big = LiveAudio(max_bytes=1 << 30, buffer_bytes=MIB, chunk_timeout=None).start(Client([bytes(3 * MIB)] * 3, 60))
        await asyncio.sleep(0.2)
        assert big._buffered == 3 * MIB
        live.close()
        big.close()

    asyncio.run(main())


def test_an_idle_stream_ends_with_deadline_exceeded_and_frees_its_reader():
    async def main():
        live = LiveAudio(max_bytes=1 << 30, chunk_timeout=0.3).start(Client([b"RIFF"], idle=60))
        started = time.monotonic()
        first = await asyncio.to_thread(live.read, 100)
        rest = await asyncio.to_thread(live.read, 100)  # blocks until the timeout ends the audio
        waited = time.monotonic() - started
        assert (first, rest) == (b"RIFF", b"") and 0.25 < waited < 3
        assert live.failure is not None and live.failure.code is Code.DEADLINE_EXCEEDED
        live.close()

    asyncio.run(main())


def test_a_stream_is_ended_at_its_deadline_however_it_trickles():
    class Trickle(Client):
        async def __anext__(self):
            await asyncio.sleep(0.05)
            return pb.UploadRequest(chunk=b"x")

    async def main():
        live = LiveAudio(max_bytes=1 << 30, chunk_timeout=1.0, until=time.monotonic() + 0.4).start(Trickle([]))
        received = await asyncio.to_thread(lambda: b"".join(iter(lambda: live.read(1000), b"")))
        assert 0 < len(received) < 20
        assert live.failure is not None and live.failure.code is Code.DEADLINE_EXCEEDED
        live.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_an_upload_that_stops_sending_is_refused():
    async def main():
        with pytest.raises(Exception) as error:
            await Spool.receive(Client([b"abc"], idle=60), 1 << 30, MIB, chunk_timeout=0.2)
        assert getattr(error.value, "code", None) is Code.DEADLINE_EXCEEDED
        with pytest.raises(Exception) as error:
            await Spool.receive(Client([b"abc"] * 1000, idle=60), 1 << 30, MIB, chunk_timeout=5,
                                until=time.monotonic() + 0.2)
        assert getattr(error.value, "code", None) is Code.DEADLINE_EXCEEDED

    asyncio.run(asyncio.wait_for(main(), 10))
