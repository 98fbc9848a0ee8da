"""Audio in, 16 kHz float32 out, one channel kept apart from the next, a block at a time.

PyAV demuxes and decodes any container/codec FFmpeg knows; soxr resamples to 16 kHz.

Why streaming: a call recording can be hours long (4 h at 48 kHz stereo is 5.5 GB of float32),
so nothing here holds a recording whole. `AudioStream.blocks()` reads the container a packet at
a time and hands out fixed-size blocks; memory is about two blocks (the one being filled and the
one handed out), a decoded frame, FFmpeg's read buffer and soxr's filter state, whatever the
length (measured: 12 MB peak for an hour of 16 kHz stereo WAV in 30 s blocks). Only `decode()`,
the convenience for short clips, joins the blocks.

Why per channel: in a call recording each party is often on its own channel. Mixing them down
would throw away the cleanest speaker separation there is, so channels stay separate and the
caller decides what to do with them.

Why a streaming soxr resampler: resampling each block on its own would restart the filter at
every block edge (a click and a phase jump, and a length that depends on where the edges fall).
`soxr.ResampleStream` carries its filter state from one decoded frame to the next and is flushed
once at the end, and it is fed per decoded frame, never per block: the output is one continuous
signal, and the blocks, joined, are the same samples bit for bit whatever the block size.
"""
from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Iterator, Union

import av
import numpy as np
import soxr

from toneserve.contract import SAMPLE_RATE, Code, ToneserveError
from toneserve.gateway.settings import Limits

# A binary file object: an open file, a spool, or a reader of the client's stream (RawIOBase).
BinaryFile = Union[IO[bytes], io.RawIOBase]
Source = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryFile]

log = logging.getLogger("toneserve.gateway")

# FFmpeg may open further files or URLs named inside an input (an ffconcat script names the
# files to join; playlists name segments). Everything here reads through Python file objects, so
# no FFmpeg protocol is needed at all: allowing none makes such inputs fail instead of reading
# files of the server's.
_CONTAINER_OPTIONS = {"protocol_whitelist": "none"}


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 [channels, N] at SAMPLE_RATE
    source_rate: int
    source_channels: int
    container: str
    codec: str

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE


class _LimitedReader(io.RawIOBase):
    """Reads a file object that cannot tell its size, counting bytes against `limit`.

    Past the limit it reports end of file (demuxers handle that well) and sets `exceeded`,
    which the decode loop turns into AUDIO_TOO_LARGE; an exception raised inside FFmpeg's
    read callback could be swallowed by a demuxer.
    """

    def __init__(self, raw: BinaryFile, limit: int):
        super().__init__()
        self.raw, self.limit, self.count, self.exceeded = raw, limit, 0, False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.exceeded:
            return b""
        data = self.raw.read(size if size is not None and size >= 0 else self.limit + 1 - self.count)
        self.count += len(data)
        if self.count > self.limit:
            self.exceeded = True
            return b""
        return data


class _FromHere(io.RawIOBase):
    """A seekable file object seen from its current position on: FFmpeg's seeks are absolute, and
    offset 0 must be where the audio starts, not where the file does."""

    def __init__(self, raw: BinaryFile, start: int):
        super().__init__()
        self.raw, self.start = raw, start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self.start
        return self.raw.seek(offset, whence) - self.start

    def tell(self) -> int:
        return self.raw.tell() - self.start


def _too_large(size: int, limits: Limits) -> ToneserveError:
    return ToneserveError(Code.AUDIO_TOO_LARGE, f"{size} bytes; the limit is {limits.max_bytes}")


def _input(source: Source, limits: Limits) -> tuple[BinaryFile, bool, _LimitedReader | None]:
    """(file object for PyAV, whether we opened it and so must close it, the limited reader if any).

    Sizes are checked before anything is parsed: a path by its file size, a seekable file object
    by seeking to its end, bytes by their length.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        if size > limits.max_bytes:
            raise _too_large(size, limits)
        if size == 0:
            raise ToneserveError(Code.EMPTY_AUDIO, "the input holds no bytes")
        return io.BytesIO(source), True, None  # BytesIO over bytes shares their buffer: no copy
    if isinstance(source, (str, os.PathLike)):
        # Opened here, not by FFmpeg: no protocol prefix ("concat:", "http:") is ever interpreted.
        size = os.stat(source).st_size
        if size > limits.max_bytes:
            raise _too_large(size, limits)
        if size == 0:  # the path is the server's own business: not in the message
            raise ToneserveError(Code.EMPTY_AUDIO, "the input holds no bytes")
        return open(source, "rb"), True, None
    if not hasattr(source, "read"):
        raise TypeError(f"audio source must be bytes, a path or a binary file object, not {type(source).__name__}")
    seekable = getattr(source, "seekable", None)
    if seekable is not None and seekable():
        position = source.tell()
        source.seek(0, io.SEEK_END)
        size = source.tell() - position
        source.seek(position)
        if size > limits.max_bytes:
            raise _too_large(size, limits)
        if size <= 0:
            raise ToneserveError(Code.EMPTY_AUDIO, "the input holds no bytes")
        return (_FromHere(source, position) if position else source), False, None
    reader = _LimitedReader(source, limits.max_bytes)
    return reader, False, reader


class AudioStream:
    """One open recording: its properties at once, its samples block by block via `blocks()`.

    Use as a context manager (or call `close()`). `source_rate` and `channels` come from the
    stream's header; should the first decoded frame disagree (HE-AAC signals half its real rate),
    they are corrected before the first block is handed out.
    """

    def __init__(self, source: Source, limits: Limits = Limits()):
        self.limits = limits
        self._container: av.container.InputContainer | None = None
        self._started = False
        self._file, self._owns_file, self._reader = _input(source, limits)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            container = av.open(self._file, mode="r", container_options=_CONTAINER_OPTIONS,
                                metadata_errors="replace")
        except (av.FFmpegError, ValueError, UnicodeDecodeError, EOFError) as exc:
            if self._reader is not None and self._reader.exceeded:
                raise _too_large(self._reader.count, self.limits) from None
            if self._reader is not None and self._reader.count == 0:
                raise ToneserveError(Code.EMPTY_AUDIO, "the input holds no bytes") from None
            # FFmpeg's text can name the server's files: the log has it, the client gets the code.
            log.info("audio not opened: %s", exc)
            raise ToneserveError(Code.INVALID_AUDIO, "not a recognised media container") from None
        self._container = container  # closed by close(), even when its header is refused below
        self._opened(container)

    def _opened(self, container: av.container.InputContainer) -> None:
        """The stream's properties from the open container's header."""
        self.container: str = container.format.name
        audio = list(container.streams.audio)
        if not audio:
            kinds = ", ".join(sorted({stream.type for stream in container.streams})) or "nothing"
            raise ToneserveError(Code.NO_AUDIO_STREAM, f"the {self.container} input holds {kinds}, no audio stream")
        # The first audio stream FFmpeg has a decoder for; if none has one, the first is reported.
        decodable = [stream for stream in audio if stream.codec_context is not None]
        if not decodable:
            raise ToneserveError(Code.UNSUPPORTED_CODEC,
                                 f"the {self.container} input's audio uses a codec FFmpeg has no decoder for")
        stream = decodable[0]
        self._stream = stream
        context = stream.codec_context
        self.codec: str = context.codec.canonical_name  # "mp3", not the decoder's name "mp3float"
        self.channels: int = int(context.channels or 0)
        self.source_rate: int = int(context.sample_rate or 0)
        if self.channels <= 0:
            raise ToneserveError(Code.INVALID_AUDIO, f"the {self.codec} stream has no known channel count")
        if self.source_rate <= 0:
            raise ToneserveError(Code.INVALID_AUDIO, f"the {self.codec} stream has no known sample rate")
        self._check_channels(self.channels)
        self._check_rate(self.source_rate)
        if stream.duration is not None and stream.time_base:
            self.duration_hint: float | None = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.duration_hint = container.duration / av.time_base
        else:
            self.duration_hint = None  # a live stream's header says "unknown"
        if self.duration_hint is not None:
            # Refused before any decoding: a header may declare hours that would cost minutes of CPU.
            self._check_length(self.duration_hint * self.source_rate, self.source_rate, self.channels, "declares")

    def _check_channels(self, channels: int) -> None:
        if channels > self.limits.max_channels:
            raise ToneserveError(Code.TOO_MANY_CHANNELS,
                                 f"{channels} channels; the limit is {self.limits.max_channels}")

    def _check_rate(self, rate: int) -> None:
        low, high = self.limits.min_rate, self.limits.max_rate
        if not low <= rate <= high:
            raise ToneserveError(Code.INVALID_AUDIO, f"a sample rate of {rate} Hz; from {low} to {high} Hz is accepted")

    def _samples_allowed(self, rate: int, channels: int) -> float:
        """Source-rate samples per channel a recording may hold: the length limit, and the sample
        budget (the rate counted as at least SAMPLE_RATE, what the models are given)."""
        budget = self.limits.max_samples / (max(rate, SAMPLE_RATE) * channels) * rate
        return min(self.limits.max_seconds * rate, budget)

    def _check_length(self, samples: float, rate: int, channels: int, verb: str) -> None:
        """AUDIO_TOO_LONG when `samples` (per channel, at `rate`) exceed the length limit or the budget."""
        if samples <= self._samples_allowed(rate, channels):
            return
        limit = self.limits.max_seconds
        if samples > limit * rate:
            raise ToneserveError(Code.AUDIO_TOO_LONG, f"the audio {verb} {samples / rate:.6g} s; the limit is {limit:g} s")
        raise ToneserveError(Code.AUDIO_TOO_LONG,
                             f"the audio {verb} {samples / rate:.6g} s of {channels} channel(s) at {rate} Hz: more "
                             f"than the {self.limits.max_samples:.3g} samples (rate x channels x seconds) a request "
                             "may hold")

    # --- context manager ----------------------------------------------------------------------

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- samples ------------------------------------------------------------------------------

    def blocks(self, seconds: float = 30.0) -> Iterator[np.ndarray]:
        """Yield float32 [channels, n] blocks at 16 kHz, n = round(seconds * 16000) for all but
        the last (shorter, possibly the only one). The container is read as the blocks are
        taken, so this can run once per stream.

        Raises ToneserveError: AUDIO_TOO_LONG as soon as more than `limits.max_seconds` has
        been decoded; INVALID_AUDIO / UNSUPPORTED_CODEC where decoding fails; EMPTY_AUDIO /
        AUDIO_TOO_SHORT when the stream ends (blocks handed out before then stay valid).
        """
        size = int(round(seconds * SAMPLE_RATE))
        if size < 1:
            raise ValueError(f"a block of {seconds} s holds no sample at {SAMPLE_RATE} Hz")
        if self._started:
            raise RuntimeError("blocks() reads the container as it goes: it can run once per AudioStream")
        if self._container is None:
            raise RuntimeError("the AudioStream is closed")
        self._started = True
        pending: list[np.ndarray] = []  # decoded pieces (a frame's worth each) not yet handed out
        held = 0
        for chunk in self._chunks():
            if chunk.shape[1] == 0:
                continue
            pending.append(chunk)
            held += chunk.shape[1]
            while held >= size:
                block, pending = _take(pending, size)
                held -= size
                yield block
        if held:
            yield _take(pending, held)[0]

    def _chunks(self) -> Iterator[np.ndarray]:
        """16 kHz float32 [channels, n] pieces, one per decoded frame (plus the resampler's tail)."""
        stream = self._stream
        # Interleaved float at the source rate and layout (nothing mixed): [n, channels] C-order
        # is what soxr takes without a copy. Not planar "fltp": PyAV's to_ndarray reads planes
        # past the 8th from the wrong place (a crash with 9+ channels).
        converter = av.AudioResampler(format="flt")
        resampler: soxr.ResampleStream | None = None
        rate = channels = 0
        decoded = 0  # source-rate samples so far, per channel
        too_long = float("inf")  # set from the first frame's rate
        declared_end: Fraction | None = None  # end of the last packet, in seconds
        tail: list[av.AudioFrame] = []  # frames decoded from the last packet seen

        def interleaved(frame: av.AudioFrame | None) -> np.ndarray:
            """The frame as float32 [n, channels]."""
            nonlocal rate, channels, resampler, too_long
            if frame is not None:
                if not rate:
                    rate, channels = int(frame.sample_rate), int(frame.layout.nb_channels)
                    if channels <= 0:
                        raise ToneserveError(Code.INVALID_AUDIO, "a decoded frame has no channels")
                    self._check_channels(channels)
                    self._check_rate(rate)
                    self.source_rate, self.channels = rate, channels
                    too_long = self._samples_allowed(rate, channels)
                    if rate != SAMPLE_RATE:
                        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, channels, dtype="float32", quality="HQ")
                elif frame.sample_rate != rate or frame.layout.nb_channels != channels:
                    raise ToneserveError(Code.INVALID_AUDIO,
                                         f"the stream changes from {rate} Hz x {channels} to "
                                         f"{frame.sample_rate} Hz x {frame.layout.nb_channels} mid-way")
            pieces = [out.to_ndarray().reshape(-1, channels) for out in converter.resample(frame) if out is not None]
            if not pieces:
                return np.zeros((0, channels), np.float32)
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

        def to_16k(block: np.ndarray, last: bool = False) -> np.ndarray:
            """[n, channels] at the source rate -> [channels, m] at 16 kHz (a transposed view)."""
            nonlocal decoded
            decoded += block.shape[0]
            if decoded > too_long:
                self._check_length(decoded, rate, channels, "holds more than")
            # Refused, not cleaned: a float file holding NaN or Inf is corrupt, and one such sample
            # would spread through the resampler's filter into every model's input.
            if not np.isfinite(block).all():
                raise ToneserveError(Code.INVALID_AUDIO, "the audio holds NaN or infinite samples")
            if resampler is None:
                return block.T
            return resampler.resample_chunk(np.ascontiguousarray(block, dtype=np.float32), last=last).T

        def trimmed(frame: av.AudioFrame) -> np.ndarray:
            """The frame's samples, less any that lie past the end the container declares for
            the last packet. That cuts the zero padding of a fixed-size last frame (AAC's 1024
            samples) that MP4 marks by the last packet's duration but the decoder still outputs."""
            block = interleaved(frame)
            if declared_end is None or frame.pts is None or frame.time_base is None or not frame.sample_rate:
                return block
            keep = int(round((declared_end - frame.pts * frame.time_base) * frame.sample_rate))
            # Timestamps are only as fine as the time base (WebM: 1 ms): within one tick of the
            # frame's end is rounding, not padding, and is kept.
            tick = math.ceil(frame.time_base * frame.sample_rate) + 1
            if len(block) - keep <= tick:
                return block
            return block[:max(0, keep)]

        try:
            container = self._container
            if container is None:
                raise ValueError("the recording is closed")
            for packet in container.demux(stream):
                if self._reader is not None and self._reader.exceeded:
                    raise _too_large(self._reader.count, self.limits)
                flushing = packet.size == 0
                if not flushing:
                    for frame in tail:  # not from the last packet after all
                        yield to_16k(interleaved(frame))
                    tail = []
                    if packet.pts is not None and packet.duration and packet.time_base is not None:
                        end = (packet.pts + packet.duration) * packet.time_base
                        declared_end = end if declared_end is None else max(declared_end, end)
                    else:
                        declared_end = None
                tail.extend(packet.decode())
            if self._reader is not None and self._reader.exceeded:
                raise _too_large(self._reader.count, self.limits)
            for frame in tail:
                yield to_16k(trimmed(frame))
            if rate:
                flushed = interleaved(None)
                if decoded + len(flushed) == 0:
                    raise ToneserveError(Code.EMPTY_AUDIO, f"the {self.codec} stream decodes to no samples")
                if decoded + len(flushed) < self.limits.min_seconds * rate:
                    raise ToneserveError(Code.AUDIO_TOO_SHORT,
                                         f"{(decoded + len(flushed)) / rate:.3g} s; "
                                         f"at least {self.limits.min_seconds:g} s is needed")
                yield to_16k(flushed, last=True)
            else:
                raise ToneserveError(Code.EMPTY_AUDIO, f"the {self.codec} stream decodes to no samples")
        # FFmpeg's and PyAV's own text goes to the log, not to the client (it can name the server's files).
        except (av.DecoderNotFoundError, av.PatchWelcomeError) as exc:
            log.info("%s not decoded: %s", self.codec, exc)
            raise ToneserveError(Code.UNSUPPORTED_CODEC, f"FFmpeg cannot decode this {self.codec} stream") from None
        except av.FFmpegError as exc:
            log.info("%s stream corrupt: %s", self.codec, exc)
            raise ToneserveError(Code.INVALID_AUDIO, f"the {self.codec} stream is corrupt") from None
        except ValueError as exc:  # PyAV's converter rejects a frame that changed format mid-stream
            log.info("%s stream inconsistent: %s", self.codec, exc)
            raise ToneserveError(Code.INVALID_AUDIO, f"the {self.codec} stream is inconsistent") from None


def _take(pieces: list[np.ndarray], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `size` samples of `pieces` ([channels, n] each) copied into one new C-contiguous
    block, and the pieces left over. Copied straight in: no joined intermediate of block size."""
    block = np.empty((pieces[0].shape[0], size), np.float32)
    filled = 0
    for index, piece in enumerate(pieces):
        n = min(piece.shape[1], size - filled)
        block[:, filled:filled + n] = piece[:, :n]
        filled += n
        if filled == size:
            rest = pieces[index + 1:]
            return block, ([piece[:, n:]] + rest if n < piece.shape[1] else rest)
    raise AssertionError("fewer samples than asked for")  # callers count before they take


def open_audio(source: Source, limits: Limits = Limits()) -> AudioStream:
    """Open `source` (bytes, a path, or a binary file object; seekable ones are size-checked up
    front, others as they are read) and check its header against `limits`."""
    return AudioStream(source, limits)


def decode(source: Source, limits: Limits = Limits()) -> Audio:
    """The whole recording at once, for short clips: `open_audio(...).blocks()` joined."""
    with open_audio(source, limits) as stream:
        blocks = list(stream.blocks())
        samples = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        return Audio(samples=samples, source_rate=stream.source_rate, source_channels=stream.channels,
                     container=stream.container, codec=stream.codec)
