"""Test and demo audio the project generates itself (no download, no licence question).

`speechlike` is not speech, but it has what the pipeline cares about: voiced
harmonics with a moving pitch, syllable-rate loudness, pauses and a little
noise, at any sample rate and channel count.

`call` / `call_blocks` put `speechlike` utterances together into a call-like
recording (speakers taking turns, gaps, some overlap), one speaker per channel,
with the turns as ground truth. `call_blocks` renders the same recording block
by block, so an hour-long call can be encoded without ever holding it whole.

`encode` / `encode_stream` / `write_encoded` write those samples in the
containers and codecs clients send (table `FORMATS`) with PyAV's encoders, in
memory; `write_wav` / `wav_bytes` write 16-bit WAV with the standard library,
which gives a plain 44-byte header that tests can patch.
"""
from __future__ import annotations

import io
import itertools
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO, Iterable, Iterator

import av
import numpy as np
import soxr

# fmt -> (PyAV/FFmpeg container format, encoder name). The encoder names are the ones this
# PyAV build has (`av.codecs_available`): MP3 and Opus only through libmp3lame and libopus.
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
    "ogg": ("ogg", "libopus"),
    "m4a": ("ipod", "aac"),  # FFmpeg's "ipod" muxer is MP4 with the M4A brand
    "webm": ("webm", "libopus"),
}

# PCM is written the way FFmpeg converts float to s16 and back: x * 32768, rounded, clipped.
# Decoding divides by 32768, so a round trip is exact to half a step (1/65536).
_PCM_SCALE = 32768.0

# Level of the background noise in `call` (dBFS, RMS): far below speech, but not digital zero,
# which real recordings never are and which some VAD/energy code divides by.
NOISE_DBFS = -70.0


def speechlike(seconds: float, rate: int = 16000, seed: int = 0, f0: float = 140.0,
               pauses: bool = True) -> np.ndarray:
    """`pauses`: a ~1 s pause every 4 s (a monologue); off for one continuous turn of a call."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    gaps = (np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6)) > -0.6).astype(float)
    signal = 0.25 * voiced * syllables * (gaps if pauses else 1.0) + 0.003 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


# --- PCM WAV -------------------------------------------------------------------------------------

def _frames(samples: np.ndarray) -> np.ndarray:
    """[N] or [N, channels] -> float32 [N, channels]."""
    frames = np.asarray(samples, dtype=np.float32)
    if frames.ndim == 1:
        frames = frames[:, None]
    if frames.ndim != 2:
        raise ValueError(f"samples must be [N] or [N, channels], not shape {frames.shape}")
    return frames


def _pcm16(frames: np.ndarray) -> bytes:
    return np.clip(np.round(frames * _PCM_SCALE), -32768, 32767).astype("<i2").tobytes()


def write_wav(file: BinaryIO, blocks: Iterable[np.ndarray], rate: int, channels: int) -> int:
    """Write 16-bit PCM WAV block by block to `file` (a binary file object); return the frames written.

    Each block is [n] (mono) or [n, channels] float in [-1, 1]; only one block is held at a time.
    The header's sizes are patched at the end, so `file` must be seekable (a file or BytesIO).
    `file` is left open.
    """
    total = 0
    with wave.open(file, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        for block in blocks:
            frames = _frames(block)
            if frames.shape[1] != channels:
                raise ValueError(f"a block has {frames.shape[1]} channels, the file {channels}")
            out.writeframes(_pcm16(frames))
            total += len(frames)
    return total


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV; `samples` is [N] or [N, channels] in [-1, 1]. A plain 44-byte header."""
    frames = _frames(samples)
    buffer = io.BytesIO()
    write_wav(buffer, [frames], rate, frames.shape[1])
    return buffer.getvalue()


# --- compressed formats through PyAV -------------------------------------------------------------

def encoded_rate(fmt: str, rate: int) -> int:
    """The sample rate `encode(..., rate, fmt)` writes: `rate` if the encoder takes it, else the
    smallest rate it takes above `rate` (or its highest). Only Opus (48/24/16/12/8 kHz) and
    MP3/AAC at unusual rates change it."""
    _, codec_name = _format(fmt)
    rates = av.Codec(codec_name, "w").audio_rates
    if not rates or rate in rates:
        return rate
    above = [r for r in rates if r >= rate]
    return min(above) if above else max(rates)


def write_encoded(file: BinaryIO, blocks: Iterable[np.ndarray], rate: int, fmt: str) -> None:
    """Encode blocks ([n] or [n, channels] float in [-1, 1], all with the same channel count) as
    `fmt` (a key of FORMATS) into the binary file object `file`, one block at a time.

    If the encoder does not take `rate` the audio is resampled (soxr, streaming) to
    `encoded_rate(fmt, rate)`; decoders resample anyway. MP4 (m4a) needs a seekable `file`.
    """
    container_format, codec_name = _format(fmt)
    iterator = iter(blocks)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no blocks to encode")
    channels = _frames(first).shape[1]
    out_rate = encoded_rate(fmt, rate)
    resampler = (soxr.ResampleStream(rate, out_rate, channels, dtype="float32", quality="HQ")
                 if out_rate != rate else None)
    with av.open(file, mode="w", format=container_format) as container:
        stream = container.add_stream(codec_name, rate=out_rate, layout=_layout(channels))
        pts = 0
        held: list[av.Packet] = []

        def mux(packets: list[av.Packet]) -> None:
            # One packet is held back: when the input ends, the last one's duration is cut to the
            # real end of the audio. PyAV pads the last frame of a fixed-frame-size encoder (AAC:
            # 1024 samples) with zeros; with the true duration MP4's edit list trims the padding.
            held.extend(packets)
            while len(held) > 1:
                container.mux(held.pop(0))

        def push(frames: np.ndarray) -> None:
            nonlocal pts
            if len(frames) == 0:
                return
            # Interleaved float (PyAV mishandles planar frames of 9+ channels); PyAV's encoder
            # context converts to the encoder's sample format and re-frames to its frame size
            # (1152 for MP3, 1024 for AAC, 960 for Opus at 48 kHz).
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(frames, dtype=np.float32).reshape(1, -1),
                                               format="flt", layout=_layout(channels))
            frame.sample_rate = out_rate
            frame.pts = pts
            frame.time_base = Fraction(1, out_rate)
            pts += len(frames)
            mux(stream.encode(frame))

        for block in itertools.chain([first], iterator):
            frames = _frames(block)
            if frames.shape[1] != channels:
                raise ValueError(f"a block has {frames.shape[1]} channels, the first {channels}")
            push(resampler.resample_chunk(frames) if resampler else frames)
        if resampler:
            push(resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True))
        mux(stream.encode(None))
        for packet in held:
            if packet.pts is not None and packet.duration and packet.time_base:
                end = Fraction(pts, out_rate) / packet.time_base  # the audio's end in packet ticks
                packet.duration = max(1, min(packet.duration, int(end) - packet.pts))
            container.mux(packet)


def encode_stream(blocks: Iterable[np.ndarray], rate: int, fmt: str) -> bytes:
    """`write_encoded` into memory: only the compressed bytes are held, never the samples."""
    buffer = io.BytesIO()
    write_encoded(buffer, blocks, rate, fmt)
    return buffer.getvalue()


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """`samples` ([N] or [N, channels] float in [-1, 1]) as a file of format `fmt` (see FORMATS).

    The output rate is `encoded_rate(fmt, rate)` (differs only where the codec does not take `rate`).
    """
    return encode_stream([samples], rate, fmt)


def _format(fmt: str) -> tuple[str, str]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


# FFmpeg's usual layout for each channel count (the ones Opus's multichannel mapping knows);
# beyond 8 an unordered "N channels" (only WAV takes it; FLAC, AAC and Opus stop at 8, MP3 at 2).
# (In this FFmpeg build 5- and 7-channel Opus decode with their channels in another order.)
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _layout(channels: int) -> str:
    return _LAYOUTS.get(channels, f"{channels} channels")


# --- call-like recordings ------------------------------------------------------------------------

# Fundamental frequency per speaker (Hz): a low and a high voice first, then others between.
SPEAKER_F0 = (120.0, 210.0, 160.0, 250.0, 100.0, 185.0)
_FADE_SECONDS = 0.01  # 10 ms ramps: an utterance starts and ends without a click
_NOISE_CHUNK_SECONDS = 1.0  # noise is drawn per 1 s chunk, so any block cut gives the same noise


@dataclass(frozen=True)
class _Turn:
    speaker: int
    start: float  # seconds
    end: float
    seed: int  # seed of the utterance's `speechlike`


@dataclass
class Call:
    samples: np.ndarray  # float32 [N, speakers], one speaker per channel
    rate: int
    turns: list[tuple[int, float, float]] = field(default_factory=list)  # (speaker, start_s, end_s)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    @property
    def speakers(self) -> int:
        return self.samples.shape[1]

    def talk_seconds(self, speaker: int) -> float:
        return sum(end - start for who, start, end in self.turns if who == speaker)

    def overlap_seconds(self) -> float:
        """Seconds in which two or more speakers talk at once."""
        return overlap_seconds(self.turns)

    def mono(self) -> np.ndarray:
        """All speakers on one channel (summed, clipped to [-1, 1]): float32 [N]."""
        return np.clip(self.samples.sum(axis=1), -1.0, 1.0).astype(np.float32)


def overlap_seconds(turns: Iterable[tuple[int, float, float]]) -> float:
    events = sorted([(start, 1) for _, start, _ in turns] + [(end, -1) for _, _, end in turns],
                    key=lambda event: (event[0], event[1]))  # at equal times an end goes first
    active, since, total = 0, 0.0, 0.0
    for time, step in events:
        if active >= 2:
            total += time - since
        active += step
        since = time
    return total


def _turns(seconds: float, seed: int, speakers: int) -> list[_Turn]:
    """The turn plan of a call: depends only on (seconds, seed, speakers), not on the rate."""
    if speakers < 1:
        raise ValueError("a call needs at least one speaker")
    rng = np.random.default_rng([seed, 0xCA11])
    turns: list[_Turn] = []
    speaker = 0
    latest_end = rng.uniform(0.0, 0.7)  # lead-in before the first word
    while True:
        duration = rng.uniform(1.5, 6.0)
        overlap = rng.uniform(0.5, 1.5) if turns and speakers > 1 and rng.random() < 0.3 else 0.0
        if overlap:
            previous = turns[-1]
            # start 0.5-1.5 s before the previous turn ends, but not before 0.5 s of it has passed
            start = max(latest_end - overlap, previous.start + 0.5)
        else:
            start = latest_end + rng.uniform(0.3, 2.0)
        utterance_seed = int(rng.integers(2**31))
        start, end = round(start, 3), round(start + duration, 3)
        if end > seconds:
            break
        turns.append(_Turn(speaker, start, end, utterance_seed))
        latest_end = max(latest_end, end)
        if speakers > 1:
            speaker = (speaker + int(rng.integers(1, speakers))) % speakers  # someone else talks next
    return turns


def call_turns(seconds: float, seed: int = 0, speakers: int = 2) -> list[tuple[int, float, float]]:
    """The ground truth of `call(seconds, seed=seed, speakers=speakers)` without rendering it."""
    return [(t.speaker, t.start, t.end) for t in _turns(seconds, seed, speakers)]


def _utterance(turn: _Turn, rate: int) -> np.ndarray:
    n = int(round((turn.end - turn.start) * rate))
    voice = speechlike((n + 1) / rate, rate, seed=turn.seed, f0=SPEAKER_F0[turn.speaker % len(SPEAKER_F0)],
                       pauses=False)[:n].copy()
    fade = min(int(_FADE_SECONDS * rate), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
        voice[:fade] *= ramp
        voice[n - fade:] *= ramp[::-1]
    return voice


def _render(turns: list[_Turn], rate: int, seed: int, speakers: int, begin: int, stop: int) -> np.ndarray:
    """Samples [begin, stop) of the call: float32 [stop - begin, speakers].

    Everything is a function of the absolute sample index, never of the block cut: noise comes
    from per-chunk generators, each utterance is rendered whole (at most 6 s) and sliced.
    """
    out = np.empty((stop - begin, speakers), np.float32)
    noise_level = 10 ** (NOISE_DBFS / 20)
    chunk = max(1, int(_NOISE_CHUNK_SECONDS * rate))
    for index in range(begin // chunk, -(-stop // chunk)):
        lo, hi = max(begin, index * chunk), min(stop, (index + 1) * chunk)
        noise = np.random.default_rng([seed, 0x2015E, index]).standard_normal((chunk, speakers))
        out[lo - begin:hi - begin] = noise_level * noise[lo - index * chunk:hi - index * chunk]
    for turn in turns:
        first = int(round(turn.start * rate))
        last = first + int(round((turn.end - turn.start) * rate))
        if last <= begin or first >= stop:
            continue
        voice = _utterance(turn, rate)
        lo, hi = max(first, begin), min(last, stop)
        out[lo - begin:hi - begin, turn.speaker] += voice[lo - first:hi - first]
    return out


def call(seconds: float, rate: int = 16000, seed: int = 0, speakers: int = 2) -> Call:
    """A call-like recording of `seconds`, one speaker per channel, deterministic for `seed`.

    Speakers take turns of 1.5-6 s of `speechlike` audio (f0 120 Hz, 210 Hz, ... per speaker,
    see SPEAKER_F0) separated by 0.3-2 s of silence; about a third of the turns start 0.5-1.5 s
    before the previous one ends (overlap). Where a speaker is silent their channel holds
    -70 dBFS noise. 60 minutes at 16 kHz stereo are 460 MB: use `call_blocks` for long calls.
    """
    turns = _turns(seconds, seed, speakers)
    samples = _render(turns, rate, seed, speakers, 0, int(round(seconds * rate)))
    return Call(samples=samples, rate=rate, turns=[(t.speaker, t.start, t.end) for t in turns])


def call_blocks(seconds: float, rate: int = 16000, seed: int = 0, speakers: int = 2,
                block_seconds: float = 60.0) -> Iterator[np.ndarray]:
    """The samples of `call(seconds, rate, seed, speakers)` as float32 [n, speakers] blocks of
    `block_seconds` (the last shorter): identical once concatenated, with the same turns
    (`call_turns`), and only one block in memory at a time."""
    turns = _turns(seconds, seed, speakers)
    total = int(round(seconds * rate))
    size = max(1, int(round(block_seconds * rate)))
    for begin in range(0, total, size):
        yield _render(turns, rate, seed, speakers, begin, min(begin + size, total))
