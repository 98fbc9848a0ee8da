"""The online segmenter (gateway/segmenter.py) against silero's one-pass segmentation."""
from __future__ import annotations

import numpy as np
import pytest

from toneserve.contract import VAD_FRAME as FRAME
from toneserve.gateway.segmenter import Segmenter
from toneserve.gateway.vad_segments import speech_segments


def turn_probabilities(seconds: float, seed: int) -> np.ndarray:
    """Frame probabilities shaped like a conversation: speech runs of 0.1-40 s (some longer than the
    30 s utterance limit), silences of 0.05-3 s, noisy values near the thresholds."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * 16000 / FRAME)
    probs = np.zeros(frames, np.float32)
    at, speech = 0, bool(rng.integers(2))
    while at < frames:
        run = rng.uniform(0.1, 40 if rng.random() < 0.1 else 6) if speech else rng.uniform(0.05, 3)
        n = max(1, int(run * 16000 / FRAME))
        level = rng.uniform(0.55, 1.0, n) if speech else rng.uniform(0.0, 0.45, n)
        probs[at:at + n] = level[:frames - at]
        at += n
        speech = not speech
    return probs


def run_online(probs: np.ndarray, samples: int, block_frames: int, **options) -> list[tuple[int, int]]:
    audio = np.arange(samples, dtype=np.float32)  # sample values = their index: cuts are checkable
    segmenter = Segmenter(0, **options)
    found = []
    for start in range(0, samples, block_frames * FRAME):
        block = audio[start:start + block_frames * FRAME]
        first = start // FRAME
        found += segmenter.feed(block, probs[first:first + -(-len(block) // FRAME)])
    found += segmenter.finish()
    for utterance in found:  # every utterance carries exactly its own samples
        assert np.array_equal(utterance.samples, np.arange(utterance.start, utterance.end, dtype=np.float32))
    return [(u.start, u.end) for u in found]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block_frames", [1, 7, 960])
def test_online_equals_one_pass(seed, block_frames):
    probs = turn_probabilities(300, seed)
    samples = len(probs) * FRAME - int(np.random.default_rng(seed).integers(0, FRAME))
    options = dict(vad_threshold=0.5, min_silence_ms=300, max_utterance_s=30.0)
    expected = speech_segments(probs, num_samples=samples, threshold=0.5, min_silence_ms=300,
                               min_speech_ms=250, speech_pad_ms=30, max_speech_s=30.0)
    assert expected, "the synthetic conversation has speech"
    assert run_online(probs, samples, block_frames, **options) == expected


def test_memory_stays_bounded_over_a_long_recording():
    """An hour of alternating speech and silence: the region never holds more than one utterance
    (30 s at most) plus a block."""
    probs = turn_probabilities(3600, seed=11)
    segmenter = Segmenter(0, max_utterance_s=30.0)
    block = 960
    longest = 0
    for first in range(0, len(probs), block):
        chunk = probs[first:first + block]
        segmenter.feed(np.zeros(len(chunk) * FRAME, np.float32), chunk)
        longest = max(longest, len(segmenter.audio))
    assert longest <= (30 + 2) * 16000 + block * FRAME, longest / 16000


def test_utterances_longer_than_the_limit_are_split():
    probs = np.full(int(95 * 16000 / FRAME), 0.9, np.float32)
    segmenter = Segmenter(0, max_utterance_s=30.0)
    found = segmenter.feed(np.zeros(len(probs) * FRAME, np.float32), probs) + segmenter.finish()
    assert len(found) >= 4
    assert all(len(u.samples) <= 30 * 16000 for u in found)


def test_silence_gives_nothing_and_a_misaligned_block_is_refused():
    segmenter = Segmenter(0)
    assert segmenter.feed(np.zeros(10 * FRAME, np.float32), np.zeros(10, np.float32)) == []
    assert segmenter.finish() == []
    with pytest.raises(ValueError):
        Segmenter(0).feed(np.zeros(10 * FRAME, np.float32), np.zeros(9, np.float32))


def clean_turns(seconds: float, seed: int) -> np.ndarray:
    """Speech runs of 0.4-5 s (0.95) and clean silences of 0.35-2 s (0.02): every utterance is closed by a
    silence that stays silent."""
    rng = np.random.default_rng(seed)
    probs = np.zeros(int(seconds * 16000 / FRAME), np.float32)
    at = int(rng.integers(5, 40))
    while at < len(probs):
        n = int(rng.uniform(0.4, 5) * 16000 / FRAME)
        probs[at:at + n] = 0.95
        at += n + int(rng.uniform(0.35, 2) * 16000 / FRAME)
    return probs


@pytest.mark.parametrize("seed", range(4))
def test_the_pending_utterance_is_the_one_finished_later(seed):
    """After each block, `pending` names the utterance that silence would finish; where silence follows, a
    later block finishes exactly that utterance, at least one block (of 8 frames, as live streams take)
    after it was first pending: min_silence_ms less the padding is longer than a block."""
    probs = clean_turns(120, seed)
    audio = np.arange(len(probs) * FRAME, dtype=np.float32)
    segmenter = Segmenter(0, min_silence_ms=300)
    block = 8 * FRAME
    first_pending: dict[tuple[int, int], int] = {}
    finished: list[tuple[int, int, int]] = []  # start, end, the block that finished it
    for at in range(0, len(audio), block):
        done = segmenter.feed(audio[at:at + block], probs[at // FRAME:(at + block) // FRAME])
        finished += [(u.start, u.end, at) for u in done]
        pending = segmenter.pending()
        if pending is not None:
            assert np.array_equal(pending.samples, np.arange(pending.start, pending.end, dtype=np.float32))
            first_pending.setdefault((pending.start, pending.end), at)
    assert len(finished) >= 10
    for start, end, at in finished:
        assert (start, end) in first_pending, (start, end)
        assert first_pending[(start, end)] < at


def test_nothing_is_pending_while_speech_goes_on_or_before_its_padded_end_arrived():
    segmenter = Segmenter(0, min_silence_ms=300)
    speech = np.full(64, 0.95, np.float32)
    assert segmenter.feed(np.zeros(64 * FRAME, np.float32), speech) == []
    assert segmenter.pending() is None  # still speaking
    segmenter.feed(np.zeros(FRAME, np.float32), np.zeros(1, np.float32))  # 32 ms of silence: past the 30 ms pad
    pending = segmenter.pending()
    assert pending is not None and (pending.start, pending.end) == (0, 64 * FRAME + 480)
    segmenter.feed(np.zeros(FRAME, np.float32), np.full(1, 0.95, np.float32))  # speech again: it will end later
    assert segmenter.pending() is None
