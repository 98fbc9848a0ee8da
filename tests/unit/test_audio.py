"""Audio decoding in the gateway (streaming, per channel) and the audio the project generates."""
from __future__ import annotations

import io
import struct
import tracemalloc

import av
import numpy as np
import pytest
import soxr

from toneserve.contract import Code, ToneserveError
from toneserve.gateway.audio import SAMPLE_RATE, Audio, Limits, decode, open_audio
from toneserve.samples import (
    FORMATS,
    NOISE_DBFS,
    call,
    call_blocks,
    call_turns,
    encode,
    encode_stream,
    encoded_rate,
    speechlike,
    wav_bytes,
    write_wav,
)

# --- helpers -------------------------------------------------------------------------------------


class CountingReader:
    """A file object that counts the bytes taken from it (seekable or not)."""

    def __init__(self, data: bytes, seekable: bool = True):
        self._file = io.BytesIO(data)
        self._seekable = seekable
        self.bytes_read = 0
        self.size = len(data)

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def best_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 2000) -> int:
    """The shift of `decoded` against `reference` (in samples) with the highest cross-correlation."""
    n = len(reference) + len(decoded)
    corr = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(reference, n)), n)
    lags = np.r_[0:max_lag + 1, -max_lag:0]
    return int(lags[np.argmax(np.r_[corr[:max_lag + 1], corr[-max_lag:]])])


def aligned(reference: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    lag = best_lag(reference, decoded)
    a, b = (reference, decoded[lag:]) if lag >= 0 else (reference[-lag:], decoded)
    n = min(len(a), len(b))
    return a[:n], b[:n], lag


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - decoded) ** 2)))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def error_of(source, limits: Limits = Limits(), seconds: float = 30.0) -> ToneserveError:
    with pytest.raises(ToneserveError) as error:
        with open_audio(source, limits) as stream:
            for _ in stream.blocks(seconds):
                pass
    return error.value


def clip(seconds: float = 3.0, rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """[N] (mono) or [N, channels] speechlike, a different voice per channel."""
    voices = [speechlike(seconds, rate, seed=10 + c, f0=(140.0, 210.0, 120.0)[c % 3]) for c in range(channels)]
    return voices[0] if channels == 1 else np.stack(voices, axis=1)


# --- every format round-trips --------------------------------------------------------------------

# Measured on this build (PyAV 18.1.0, FFmpeg 8.1.2, FFmpeg's default bit rates) for 3 s of
# speechlike, mono and stereo, at 16 and 8 kHz; the decoded lag is 0 samples for every codec
# (the decoders drop the encoder delay: LAME tag, MP4 edit list, Opus pre-skip):
#   wav, flac (lossless)     max |error| 1.5e-5 (16 kHz), 2.7e-5 (8 kHz, after resampling)
#   mp3   libmp3lame         SNR 22.3 - 24.1 dB
#   m4a   aac (FFmpeg's)     SNR 31.7 - 42.9 dB
#   ogg / webm  libopus      SNR 25.8 - 33.5 dB
# The thresholds leave about 4 dB of room.
MIN_SNR_DB = {"mp3": 18.0, "m4a": 26.0, "ogg": 21.0, "webm": 21.0}
LOSSLESS = {"wav", "flac"}


@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_round_trips(fmt, channels, rate):
    samples = clip(3.0, rate, channels)
    decoded = decode(encode(samples, rate, fmt))
    container, _ = FORMATS[fmt]
    assert decoded.samples.dtype == np.float32 and decoded.samples.shape[0] == channels
    assert decoded.source_channels == channels
    assert decoded.source_rate == (48000 if FORMATS[fmt][1] == "libopus" else rate)  # Opus decodes at 48 kHz
    assert decoded.codec == {"wav": "pcm_s16le", "flac": "flac", "mp3": "mp3", "m4a": "aac"}.get(fmt, "opus")
    assert decoded.container.split(",")[0] in {"wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg",
                                               "ipod": "mov", "webm": "matroska"}[container]
    assert abs(decoded.seconds - 3.0) <= 0.05  # measured: exact to the sample for every format
    reference = samples.reshape(len(samples), channels).T
    if rate != SAMPLE_RATE:
        reference = soxr.resample(reference.T, rate, SAMPLE_RATE, quality="HQ").T
    for channel in range(channels):
        ref, got, lag = aligned(reference[channel], decoded.samples[channel])
        assert abs(lag) <= 8, f"{fmt}: channel {channel} is shifted by {lag} samples"
        if fmt in LOSSLESS:
            np.testing.assert_allclose(got, ref, atol=1 / 32767, rtol=0)
        else:
            assert snr_db(ref, got) > MIN_SNR_DB[fmt], f"{fmt} {rate} Hz channel {channel}"


def test_opus_at_an_unsupported_rate_is_resampled_by_the_encoder():
    assert encoded_rate("ogg", 44100) == 48000 and encoded_rate("ogg", 16000) == 16000
    assert encoded_rate("mp3", 44100) == 44100
    decoded = decode(encode(speechlike(2.0, 44100), 44100, "ogg"))
    assert decoded.samples.shape == (1, 2 * SAMPLE_RATE)


def test_encode_stream_equals_encode_for_lossless_formats():
    samples = clip(2.0, channels=2)
    for fmt in ("wav", "flac"):
        streamed = decode(encode_stream([samples[:7001], samples[7001:20000], samples[20000:]], SAMPLE_RATE, fmt))
        np.testing.assert_array_equal(streamed.samples, decode(encode(samples, SAMPLE_RATE, fmt)).samples)


def test_lossless_wav_is_exact_to_half_a_step():
    samples = clip(1.5)
    decoded = decode(wav_bytes(samples, SAMPLE_RATE))
    np.testing.assert_allclose(decoded.samples[0], samples, atol=0.5 / 32768 + 1e-9, rtol=0)


# --- channels, rates ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_channels_stay_separate(fmt):
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    stereo = np.stack([tone, np.zeros_like(tone)], axis=1)
    decoded = decode(encode(stereo, SAMPLE_RATE, fmt)).samples
    assert decoded.shape[0] == 2
    left, right = decoded
    if fmt in LOSSLESS:
        np.testing.assert_allclose(left, tone, atol=1 / 32767, rtol=0)
        assert not right.any()  # digital silence stays silence
    else:
        ref, got, _ = aligned(tone, left)
        assert snr_db(ref[1600:-1600], got[1600:-1600]) > 15  # a pure tone; lossy edges left out
        assert rms(right) < 1e-3 * rms(left)  # nothing of the left leaks into the right (< -60 dB)
    spectrum = np.abs(np.fft.rfft(left))
    assert np.fft.rfftfreq(len(left), 1 / SAMPLE_RATE)[np.argmax(spectrum)] == pytest.approx(200, abs=1)


def test_nine_channels_decode_separately_where_the_limit_allows():
    voices = np.stack([speechlike(0.5, seed=c) for c in range(9)], axis=1)
    decoded = decode(wav_bytes(voices, SAMPLE_RATE), Limits(max_channels=16))
    assert decoded.samples.shape == (9, SAMPLE_RATE // 2)
    np.testing.assert_allclose(decoded.samples, voices.T, atol=1 / 32767, rtol=0)


def test_8khz_is_resampled_to_16khz_keeping_length_and_frequency():
    t = np.arange(8000 * 2) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    decoded = decode(wav_bytes(tone, 8000))
    assert decoded.source_rate == 8000 and decoded.source_channels == 1
    assert abs(decoded.samples.shape[1] - 2 * len(tone)) <= 1
    middle = decoded.samples[0, 4000:-4000]
    frequencies = np.fft.rfftfreq(len(middle), 1 / SAMPLE_RATE)
    assert frequencies[np.argmax(np.abs(np.fft.rfft(middle)))] == pytest.approx(1000, abs=2)
    # and the level survives: a 0.5 sine has RMS 0.354
    assert rms(middle) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_sources_bytes_path_and_file_objects_agree(tmp_path):
    data = encode(clip(2.0, channels=2), SAMPLE_RATE, "flac")
    path = tmp_path / "clip.flac"
    path.write_bytes(data)
    expected = decode(data).samples
    np.testing.assert_array_equal(decode(path).samples, expected)
    np.testing.assert_array_equal(decode(str(path)).samples, expected)
    np.testing.assert_array_equal(decode(bytearray(data)).samples, expected)
    with open(path, "rb") as file:
        np.testing.assert_array_equal(decode(file).samples, expected)
    np.testing.assert_array_equal(decode(CountingReader(data, seekable=False)).samples, expected)
    # a file object is read from where it stands
    framed = io.BytesIO(b"\0" * 100 + data)
    framed.seek(100)
    np.testing.assert_array_equal(decode(framed).samples, expected)


def test_stream_properties_are_known_before_decoding():
    data = encode(clip(3.0, 8000, channels=2), 8000, "mp3")
    with open_audio(data) as stream:
        assert (stream.source_rate, stream.channels, stream.container, stream.codec) == (8000, 2, "mp3", "mp3")
        assert stream.duration_hint == pytest.approx(3.0, abs=0.1)
    with open_audio(encode(clip(1.0), 16000, "webm")) as stream:
        assert (stream.source_rate, stream.channels, stream.codec) == (48000, 1, "opus")


# --- blocks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, rate", [("wav", 16000), ("wav", 8000), ("ogg", 16000), ("m4a", 22050)])
def test_blocks_join_to_decode_whatever_their_size(fmt, rate):
    data = encode(clip(7.3, rate, channels=2), rate, fmt)
    whole = decode(data).samples
    for seconds in (0.37, 1.0, 2.0, 30.0):
        size = round(seconds * SAMPLE_RATE)
        with open_audio(data) as stream:
            blocks = list(stream.blocks(seconds))
        assert all(block.shape == (2, size) for block in blocks[:-1])
        assert 0 < blocks[-1].shape[1] <= size
        assert all(block.dtype == np.float32 and block.flags.c_contiguous for block in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)  # bit-exact, not close


def test_blocks_run_once():
    with open_audio(wav_bytes(clip(1.0), SAMPLE_RATE)) as stream:
        list(stream.blocks())
        with pytest.raises(RuntimeError):
            list(stream.blocks())
    with pytest.raises(ValueError):
        next(open_audio(wav_bytes(clip(1.0), SAMPLE_RATE)).blocks(0.00001))


def test_the_first_block_comes_before_the_file_is_read():
    reader = CountingReader(wav_bytes(clip(120.0, 8000), 8000))
    with open_audio(reader) as stream:
        blocks = stream.blocks(1.0)
        first = next(blocks)
        assert first.shape == (1, SAMPLE_RATE)
        assert reader.bytes_read < reader.size / 10  # 1 s of 120 s, plus FFmpeg's read-ahead
        rest = sum(block.shape[1] for block in blocks)
    assert reader.bytes_read >= reader.size  # all of it by the end (FFmpeg re-reads a little after probing)
    assert 1 + rest / SAMPLE_RATE == pytest.approx(120.0, abs=1e-3)


def test_an_hour_is_decoded_in_bounded_memory(tmp_path):
    """A 60 min stereo call, written and decoded block by block: 460 MB as float32 at 16 kHz,
    yet neither side holds more than a few blocks."""
    path = tmp_path / "hour.wav"
    tracemalloc.start()
    try:
        with open(path, "wb") as file:
            frames = write_wav(file, call_blocks(3600, 16000, seed=5, block_seconds=60), 16000, 2)
        _, writing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total, energy = 0, np.zeros(2)
        with open_audio(path) as stream:
            assert stream.duration_hint == pytest.approx(3600)
            for block in stream.blocks(30.0):
                total += block.shape[1]
                energy += np.sum(np.square(block, dtype=np.float64), axis=1)
        _, reading_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == total == 3600 * SAMPLE_RATE
    assert path.stat().st_size > 200e6
    assert energy.min() > 0
    # one 60 s stereo block is 7.7 MB; a 30 s decoded block 3.8 MB
    assert writing_peak < 48e6, writing_peak
    assert reading_peak < 32e6, reading_peak


# --- errors from real bad inputs -----------------------------------------------------------------

def test_garbage_is_invalid_audio():
    assert error_of(b"garbage" * 50).code is Code.INVALID_AUDIO
    assert error_of(b"hello world\n" * 20).code is Code.INVALID_AUDIO


def test_empty_inputs(tmp_path):
    assert error_of(b"").code is Code.EMPTY_AUDIO
    (tmp_path / "empty.wav").write_bytes(b"")
    assert error_of(tmp_path / "empty.wav").code is Code.EMPTY_AUDIO
    assert error_of(CountingReader(b"", seekable=False)).code is Code.EMPTY_AUDIO
    # a valid WAV header with no samples behind it
    error = error_of(wav_bytes(np.zeros(0, np.float32), SAMPLE_RATE))
    assert error.code is Code.EMPTY_AUDIO and "no samples" in error.detail


def test_too_large_is_refused_before_reading(tmp_path):
    data = wav_bytes(clip(3.0), SAMPLE_RATE)
    small = Limits(max_bytes=1000)
    assert error_of(data, small).code is Code.AUDIO_TOO_LARGE
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    assert error_of(path, small).code is Code.AUDIO_TOO_LARGE
    reader = CountingReader(data)
    error = error_of(reader, small)
    assert error.code is Code.AUDIO_TOO_LARGE and str(len(data)) in error.detail
    assert reader.bytes_read == 0
    # a file object that cannot seek is counted as it is read
    assert error_of(CountingReader(data, seekable=False), small).code is Code.AUDIO_TOO_LARGE
    assert error_of(CountingReader(encode(clip(3.0), SAMPLE_RATE, "ogg"), seekable=False), Limits(max_bytes=10000)
                    ).code is Code.AUDIO_TOO_LARGE
    assert Limits().max_bytes == 1024**3


def test_a_codec_ffmpeg_cannot_decode_is_unsupported():
    wav = bytearray(wav_bytes(clip(1.0), SAMPLE_RATE))
    assert wav[20:22] == struct.pack("<H", 1)  # WAVE_FORMAT_PCM
    wav[20:22] = struct.pack("<H", 0x1234)  # a format tag no one has defined
    # PyAV opens it (the WAV demuxer reads any tag) but gives the stream no codec context
    assert av.open(io.BytesIO(bytes(wav))).streams.audio[0].codec_context is None
    error = error_of(bytes(wav))
    assert error.code is Code.UNSUPPORTED_CODEC and "wav" in error.detail


def test_a_header_without_channels_is_invalid():
    wav = bytearray(wav_bytes(clip(1.0), SAMPLE_RATE))
    wav[22:24] = struct.pack("<H", 0)  # channel count
    assert error_of(bytes(wav)).code is Code.INVALID_AUDIO


def test_too_many_channels():
    nine = wav_bytes(np.zeros((1600, 9), np.float32), SAMPLE_RATE)
    assert Limits().max_channels == 8
    error = error_of(nine)
    assert error.code is Code.TOO_MANY_CHANNELS and "9 channels" in error.detail
    assert error_of(wav_bytes(np.zeros((1600, 3), np.float32), SAMPLE_RATE), Limits(max_channels=2)
                    ).code is Code.TOO_MANY_CHANNELS


def test_too_long_is_refused_while_decoding():
    assert error_of(wav_bytes(clip(3.0), SAMPLE_RATE), Limits(max_seconds=1.0)).code is Code.AUDIO_TOO_LONG
    # it stops as soon as the limit is passed, not after reading everything
    reader = CountingReader(wav_bytes(clip(100.0, 8000), 8000))
    error = error_of(reader, Limits(max_seconds=5.0), seconds=1.0)
    assert error.code is Code.AUDIO_TOO_LONG
    assert reader.bytes_read < reader.size / 5
    # and 3 s under a 3 s limit is fine
    assert decode(wav_bytes(clip(3.0), SAMPLE_RATE), Limits(max_seconds=3.0)).seconds == 3.0


def test_too_short():
    error = error_of(wav_bytes(clip(0.05), SAMPLE_RATE))
    assert error.code is Code.AUDIO_TOO_SHORT and "0.05" in error.detail
    assert error_of(encode(clip(0.05), SAMPLE_RATE, "ogg")).code is Code.AUDIO_TOO_SHORT
    assert decode(wav_bytes(clip(0.1), SAMPLE_RATE)).samples.shape == (1, 1600)


def test_a_stream_corrupt_midway_is_invalid_after_the_good_blocks():
    mp3 = bytearray(encode(clip(3.0, channels=2), SAMPLE_RATE, "mp3"))
    middle = len(mp3) // 2
    mp3[middle:middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    good = []
    with pytest.raises(ToneserveError) as error:
        with open_audio(bytes(mp3)) as stream:
            for block in stream.blocks(0.25):
                good.append(block)
    assert error.value.code is Code.INVALID_AUDIO and "corrupt" in error.value.detail
    assert len(good) >= 2  # blocks before the damage were handed out
    # a FLAC cut off in the middle of a frame
    flac = encode(clip(3.0, channels=2), SAMPLE_RATE, "flac")
    assert error_of(flac[: len(flac) // 2]).code is Code.INVALID_AUDIO
    # an MP4 cut off before its index (moov) is not a readable container at all
    m4a = encode(clip(3.0), SAMPLE_RATE, "m4a")
    assert error_of(m4a[: len(m4a) // 2]).code is Code.INVALID_AUDIO


def test_a_truncated_wav_decodes_what_is_there():
    wav = wav_bytes(clip(3.0), SAMPLE_RATE)
    decoded = decode(wav[: 44 + 2 * SAMPLE_RATE])  # the header still claims 3 s
    assert decoded.samples.shape == (1, SAMPLE_RATE)


def test_containers_without_audio():
    # a subtitle file: FFmpeg opens it as a container with one subtitle stream
    error = error_of(b"1\n00:00:01,000 --> 00:00:02,000\nhello\n\n")
    assert error.code is Code.NO_AUDIO_STREAM and "subtitle" in error.detail
    # a Matroska file with a single video stream, made here
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    error = error_of(buffer.getvalue())
    assert error.code is Code.NO_AUDIO_STREAM and "video" in error.detail


def test_an_input_naming_other_files_is_not_followed(tmp_path, monkeypatch):
    """An ffconcat script names files to read; FFmpeg would read them from the server's disk."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.wav").write_bytes(wav_bytes(clip(1.0), SAMPLE_RATE))
    assert error_of(b"ffconcat version 1.0\nfile secret.wav\n").code is Code.INVALID_AUDIO


# --- generated calls -----------------------------------------------------------------------------

def test_call_turns_are_call_like():
    turns = call_turns(600, seed=2)
    assert turns == sorted(turns, key=lambda turn: turn[1])
    assert {speaker for speaker, _, _ in turns} == {0, 1}
    assert all(1.5 - 1e-3 <= end - start <= 6 + 1e-3 and 0 <= start and end <= 600 for _, start, end in turns)
    latest_end = 0.0
    overlapped = 0
    for (previous, _, _), (speaker, start, end) in zip(turns, turns[1:]):
        assert speaker != previous  # the other one talks next
    for speaker, start, end in turns:
        gap = start - latest_end
        if gap < 0:
            overlapped += 1
            assert -1.5 - 1e-3 <= gap <= -0.5 + 1e-3  # starts 0.5-1.5 s before the other ends
        else:
            assert 0.3 - 1e-3 <= gap <= 2.0 + 1e-3
        latest_end = max(latest_end, end)
    assert 0.15 < overlapped / len(turns) < 0.45


def test_call_ground_truth_matches_the_energy_in_each_channel():
    rate = 16000
    c = call(90, rate=rate, seed=1)
    assert c.samples.shape == (90 * rate, 2) and c.samples.dtype == np.float32 and c.rate == rate
    assert c.turns == call_turns(90, seed=1)
    noise = 10 ** (NOISE_DBFS / 20)
    assert np.count_nonzero(c.samples == 0) == 0  # never digital silence
    for speaker in (0, 1):
        channel = c.samples[:, speaker]
        talking = np.zeros(len(channel), bool)
        for who, start, end in c.turns:
            if who == speaker:
                talking[round(start * rate):round(end * rate)] = True
                assert rms(channel[round(start * rate):round(end * rate)]) > 30 * noise
        assert talking.sum() / rate == pytest.approx(c.talk_seconds(speaker), abs=0.01)
        assert rms(channel[~talking]) == pytest.approx(noise, rel=0.05)  # -70 dBFS elsewhere
        assert np.abs(channel[~talking]).max() < 8 * noise
        # each speaker's voice has its own pitch: the strongest low partial is its f0 (+-15 % vibrato)
        voiced = channel[talking]
        spectrum = np.abs(np.fft.rfft(voiced))
        frequencies = np.fft.rfftfreq(len(voiced), 1 / rate)
        band = (frequencies > 60) & (frequencies < 400)
        f0 = frequencies[band][np.argmax(spectrum[band])]
        assert f0 == pytest.approx((120, 210)[speaker], rel=0.16)
    # overlaps: where the turns say both talk, both channels carry speech
    active = [np.zeros(len(c.samples), bool) for _ in range(2)]
    for who, start, end in c.turns:
        active[who][round(start * rate):round(end * rate)] = True
    both = active[0] & active[1]
    assert c.overlap_seconds() > 1.0
    assert both.sum() / rate == pytest.approx(c.overlap_seconds(), abs=0.01)
    assert rms(c.samples[both, 0]) > 30 * noise and rms(c.samples[both, 1]) > 30 * noise
    mono = c.mono()
    assert mono.shape == (90 * rate,) and np.abs(mono).max() <= 1.0
    np.testing.assert_allclose(mono, np.clip(c.samples.sum(axis=1), -1, 1))


def test_call_is_deterministic_and_blocks_rebuild_it():
    a = call(20, rate=8000, seed=7, speakers=3)
    b = call(20, rate=8000, seed=7, speakers=3)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.turns == b.turns and {speaker for speaker, _, _ in a.turns} <= {0, 1, 2}
    assert call(20, rate=8000, seed=8, speakers=3).turns != a.turns
    for block_seconds in (3.7, 1.0, 60.0):
        blocks = list(call_blocks(20, rate=8000, seed=7, speakers=3, block_seconds=block_seconds))
        assert all(len(block) == round(block_seconds * 8000) for block in blocks[:-1])
        np.testing.assert_array_equal(np.concatenate(blocks), a.samples)
    # the turns do not depend on the rate
    assert call(20, rate=16000, seed=7, speakers=3).turns == a.turns


def test_a_call_survives_encoding_per_channel():
    c = call(30, rate=16000, seed=3)
    decoded = decode(encode(c.samples, c.rate, "ogg"))
    assert isinstance(decoded, Audio) and decoded.samples.shape == (2, 30 * SAMPLE_RATE)
    for speaker in (0, 1):
        ref, got, _ = aligned(c.samples[:, speaker], decoded.samples[speaker])
        assert snr_db(ref, got) > MIN_SNR_DB["ogg"]
