"""The decoder's cost is bounded before the work: rates, declared lengths, the sample budget, NaN/Inf,
and error messages that keep FFmpeg's text and the server's paths to the log."""
from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest

from toneserve.client.sdk import live_wav_header
from toneserve.contract import SAMPLE_RATE, Code, ToneserveError
from toneserve.gateway.audio import Limits, decode, open_audio
from toneserve.samples import speechlike, wav_bytes


def pcm_wav(rate: int, channels: int, frames: int, bits: int = 8, tag: int = 1, data: bytes | None = None) -> bytes:
    """A PCM (or float, tag 3) WAV with any header values: FFmpeg's demuxer takes rates down to 1 Hz."""
    block = channels * bits // 8
    if data is None:
        data = np.random.default_rng(0).integers(100, 156, frames * block, dtype=np.uint8).tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", len(data)) + data)


class Unseekable(io.RawIOBase):
    """A client's stream: no size, no header duration."""

    def __init__(self, data: bytes):
        super().__init__()
        self.file = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)


def refused(source, limits: Limits = Limits()) -> ToneserveError:
    with pytest.raises(ToneserveError) as error:
        with open_audio(source, limits) as stream:
            for _ in stream.blocks(1.0):
                pass
    return error.value


def test_an_hour_of_8_channels_at_100_hz_is_refused_at_once():
    """2.9 MB that would be 460 million samples at 16 kHz (33-39 s of the server's CPU, then NO_SPEECH)."""
    data = pcm_wav(100, 8, 3600 * 100)
    assert 2.8e6 < len(data) < 2.9e6
    started = time.perf_counter()
    error = refused(data)
    assert time.perf_counter() - started < 0.5
    assert error.code is Code.INVALID_AUDIO and "100 Hz" in error.detail and "4000" in error.detail


def test_a_164_byte_wav_at_1_hz_is_not_a_minute_of_audio():
    data = pcm_wav(1, 1, 120)
    assert len(data) == 164
    error = refused(data)
    assert error.code is Code.INVALID_AUDIO and "1 Hz" in error.detail


@pytest.mark.parametrize("rate, accepted", [(3999, False), (4000, True), (192000, True), (192001, False)])
def test_the_rate_range_is_4_to_192_khz(rate, accepted):
    data = pcm_wav(rate, 1, rate // 2, bits=16, data=(speechlike(0.5, rate) * 8000).astype("<i2").tobytes())
    if accepted:
        assert decode(data).source_rate == rate
    else:
        assert refused(data).code is Code.INVALID_AUDIO
    # the same holds for a stream whose rate is only known from its first frame
    assert (refused(Unseekable(data)).code is Code.INVALID_AUDIO) if not accepted else decode(Unseekable(data))


def test_a_declared_length_over_the_limit_is_refused_before_decoding():
    data = wav_bytes(speechlike(40.0), SAMPLE_RATE)
    started = time.perf_counter()
    with pytest.raises(ToneserveError) as error:
        open_audio(data, Limits(max_seconds=30.0))  # the header alone: blocks() never runs
    assert time.perf_counter() - started < 0.5
    assert error.value.code is Code.AUDIO_TOO_LONG and "declares 40 s" in error.value.detail
    # a live stream declares no length: the limit is held as it is decoded
    live = live_wav_header(SAMPLE_RATE) + (speechlike(40.0) * 8000).astype("<i2").tobytes()
    assert refused(Unseekable(live), Limits(max_seconds=30.0)).code is Code.AUDIO_TOO_LONG
    assert decode(Unseekable(live)).seconds == pytest.approx(40.0)


def test_the_sample_budget_counts_rate_channels_and_seconds():
    eight = wav_bytes(np.stack([speechlike(3.0, seed=c) for c in range(8)], axis=1), SAMPLE_RATE)
    budget = Limits(max_samples=SAMPLE_RATE * 8 * 2.0)  # 2 s of these 8 channels
    error = refused(eight, budget)
    assert error.code is Code.AUDIO_TOO_LONG and "rate x channels x seconds" in error.detail
    assert decode(eight, Limits(max_samples=SAMPLE_RATE * 8 * 3.0)).seconds == 3.0
    # the same recording mono is within it
    assert decode(wav_bytes(speechlike(3.0), SAMPLE_RATE), budget).seconds == 3.0
    # below 16 kHz the rate counts as 16 kHz (the models' rate): 8 kHz is no cheaper to analyse
    narrow = wav_bytes(speechlike(3.0, 8000), 8000)
    assert refused(narrow, Limits(max_samples=SAMPLE_RATE * 2.0)).code is Code.AUDIO_TOO_LONG
    # a stream without a declared length is stopped as soon as it passes the budget
    live = live_wav_header(SAMPLE_RATE, 2) + (np.stack([speechlike(60.0), speechlike(60.0, seed=1)], axis=1)
                                             * 8000).astype("<i2").tobytes()
    reader = Unseekable(live)
    assert refused(reader, Limits(max_samples=SAMPLE_RATE * 2 * 5.0)).code is Code.AUDIO_TOO_LONG
    assert reader.file.tell() < len(live) / 4


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples_are_refused(bad):
    samples = speechlike(1.0).astype("<f4")
    samples[8000] = bad
    data = pcm_wav(SAMPLE_RATE, 1, len(samples), bits=32, tag=3, data=samples.tobytes())
    error = refused(data)
    assert error.code is Code.INVALID_AUDIO and "NaN" in error.detail
    clean = pcm_wav(SAMPLE_RATE, 1, len(samples), bits=32, tag=3, data=np.nan_to_num(samples, posinf=0,
                                                                                        neginf=0).tobytes())
    assert decode(clean).seconds == 1.0


def test_errors_keep_ffmpeg_text_and_server_paths_out(tmp_path, caplog):
    secret = tmp_path / "customer-secret-name.wav"
    secret.write_bytes(b"\x00\x01 this is not audio " * 200)
    with caplog.at_level("INFO", logger="toneserve.gateway"):
        error = refused(secret)
    assert error.code is Code.INVALID_AUDIO
    assert str(tmp_path) not in error.message and "secret" not in error.message and "Errno" not in error.message
    assert "Invalid data" in caplog.text  # FFmpeg's reason is in the log
    empty = tmp_path / "empty-secret.wav"
    empty.write_bytes(b"")
    error = refused(empty)
    assert error.code is Code.EMPTY_AUDIO and "secret" not in error.message
    # a corrupt stream after a good header: the code and the codec, not FFmpeg's message
    truncated = bytearray(pcm_wav(SAMPLE_RATE, 1, 16000, bits=16, tag=0x11))  # IMA ADPCM with a bad block size
    struct.pack_into("<H", truncated, 32, 0)
    error = refused(bytes(truncated))
    assert error.code in (Code.INVALID_AUDIO, Code.UNSUPPORTED_CODEC) and "Errno" not in error.message
