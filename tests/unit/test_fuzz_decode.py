"""Fuzzing the gateway's entry point for a request: its options, then its audio bytes decoded.

Whatever the bytes and options, the outcome is a decoded recording or a ToneserveError with a
code of the table (toneserve.contract.Code): no other exception, no crash, no hang. Inputs are
random bytes, real files of every format with bytes flipped, cut or spliced, WAV headers with
any rate, channel count, sample size and format tag, and options of any content.

Bounded for CI: a fixed number of examples per test, derandomized (the same examples on every
run, so a failure is reproducible), no example database written, and a time bound per example.
"""
from __future__ import annotations

import functools
import math
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toneserve.contract import SAMPLE_RATE, Code, ToneserveError
from toneserve.gateway import thresholds
from toneserve.gateway.audio import Limits, open_audio
from toneserve.gateway.options import check
from toneserve.gateway.settings import Settings
from toneserve.samples import FORMATS, encode, speechlike
from toneserve.v1 import toneserve_pb2 as pb

LIMITS = Limits(max_bytes=1 << 20, max_seconds=30.0, max_samples=SAMPLE_RATE * 2 * 30.0)
SETTINGS = Settings(limits=LIMITS)
# A hang is far beyond this; one example takes milliseconds.
EXAMPLE_SECONDS = 10.0
FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def seeds() -> tuple[bytes, ...]:
    """One short real file per format (mono and stereo), the mutations' starting points."""
    mono, stereo = speechlike(0.3), np.stack([speechlike(0.3), speechlike(0.3, seed=1)], axis=1)
    return tuple(encode(samples, SAMPLE_RATE, fmt) for fmt in sorted(FORMATS) for samples in (mono, stereo))


def analyse(options: pb.AnalyzeRequest, audio: bytes) -> None:
    """What the gateway does with a request before the models: its options checked, its audio decoded
    (both whatever the other gives: the gateway stops at a bad option, the fuzzing goes on)."""
    started = time.monotonic()
    try:
        check(options, SETTINGS)
        SETTINGS.window(options.window_seconds)
        thresholds.from_proto(options.thresholds)
    except ToneserveError as error:
        assert error.code is Code.INVALID_ARGUMENT and error.message.startswith("INVALID_ARGUMENT: ")
    try:
        with open_audio(audio, LIMITS) as stream:
            for block in stream.blocks(1.0):
                assert block.dtype == np.float32 and block.shape[0] == stream.channels
                assert np.isfinite(block).all()
    except ToneserveError as error:
        assert isinstance(error.code, Code) and error.message.startswith(error.code.name + ": ")
    assert time.monotonic() - started < EXAMPLE_SECONDS


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "fill"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:at] + data[at + draw(st.integers(1, 256)):]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # a header field's worth of one value (0, 0xFF, ...)
            data[at:at + 4] = bytes([draw(st.sampled_from([0, 0x7F, 0x80, 0xFF]))]) * 4
    return bytes(data)


@st.composite
def wav_headers(draw) -> bytes:
    """A WAV with any fmt fields, the data chunk's declared size, and up to 2 KiB of data."""
    tag = draw(st.sampled_from([1, 3, 6, 7, 0x11, 0xFFFE, draw(st.integers(0, 0xFFFF))]))
    channels = draw(st.sampled_from([0, 1, 2, 8, 9, 255, draw(st.integers(0, 0xFFFF))]))
    rate = draw(st.sampled_from([0, 1, 100, 3999, 4000, 8000, 16000, 192000, 192001, 0xFFFFFFFF,
                                 draw(st.integers(0, 0xFFFFFFFF))]))
    bits = draw(st.sampled_from([0, 8, 16, 24, 32, 64, draw(st.integers(0, 0xFFFF))]))
    data = draw(st.binary(max_size=2048))
    declared = draw(st.sampled_from([len(data), 0, 0xFFFFFFFF, draw(st.integers(0, 0xFFFFFFFF))]))
    if draw(st.booleans()):  # a plausible float WAV whose samples may be anything, NaN and infinities included
        tag, bits, channels, rate = 3, 32, draw(st.sampled_from([1, 2])), draw(st.sampled_from([4000, 16000]))
        values = draw(st.lists(st.floats(width=32), min_size=1, max_size=64))
        data = np.resize(np.array(values, "<f4"), draw(st.integers(rate // 8, rate)) * channels).tobytes()
        declared = len(data)
    block = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + len(data)) & 0xFFFFFFFF) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", declared) + data)


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
options = st.builds(
    pb.AnalyzeRequest,
    request_id=st.text(max_size=80),
    channel_roles=st.dictionaries(st.integers(-(2**31), 2**31 - 1), st.text(max_size=80), max_size=10),
    window_seconds=floats,
    language=st.sampled_from(["", "auto", "en", "xx"]),
    mix_channels=st.booleans(),
    thresholds=st.builds(pb.Thresholds, vad_threshold=floats, min_silence_ms=st.integers(-(2**31), 2**31 - 1),
                         text_weight=floats),
)
plain = st.just(pb.AnalyzeRequest())


@FUZZ
@given(options=options, audio=st.binary(max_size=4096))
def test_random_bytes_and_options(options, audio):
    analyse(options, audio)


@FUZZ
@given(options=plain, audio=mutated())
def test_real_files_with_bytes_flipped_cut_and_spliced(options, audio):
    analyse(options, audio)


@FUZZ
@given(options=plain, audio=wav_headers())
def test_wav_headers_of_any_value(options, audio):
    analyse(options, audio)


def test_the_seeds_themselves_decode():
    """The mutations start from files that decode: the fuzzing reaches past the container's header."""
    for data in seeds():
        with open_audio(data, LIMITS) as stream:
            assert math.isclose(sum(b.shape[1] for b in stream.blocks(1.0)) / SAMPLE_RATE, 0.3, abs_tol=0.03)


pytestmark = pytest.mark.timeout(300)
