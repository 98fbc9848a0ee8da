"""Live blocks shorter than 1 s cut the same utterances as 1 s blocks, with the real silero VAD.

`Segmentation` restarts VAD's state on a 1.024 s grid of cells whatever the block size
(gateway/segmenter.py); these tests run silero (the ONNX graph of the silero-vad wheel, through
the runner's numpy core, as the Triton model does) on each block's `vad_input` the way the
gateway does, and compare the utterances of several block sizes.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.support import RUNNERS, load_file, silero_vad_onnx, talk
from toneserve.contract import VAD_FRAME
from toneserve.gateway.segmenter import BLOCK_FRAMES, VAD_CONTEXT, Segmentation
from toneserve.samples import call_blocks, speechlike

vad_core = load_file("vad_core", RUNNERS / "vad_core.py")


@pytest.fixture(scope="module")
def vad():
    path = silero_vad_onnx()
    if path is None:
        pytest.skip("silero-vad is not installed")
    return vad_core.SileroVad(path)


def probabilities(vad, rows: np.ndarray) -> np.ndarray:
    return vad.probabilities(np.ascontiguousarray(rows, np.float32), np.full(len(rows), rows.shape[1], np.int64))[0]


def segments(vad, audio: np.ndarray, block_frames: int) -> list[tuple[int, int, int]]:
    """(channel, start, end) of the utterances of `audio` [channels, n] fed in blocks of `block_frames`."""
    segmentation = Segmentation(range(len(audio)), 0.5, 300, 30.0, block_frames)
    size = block_frames * VAD_FRAME
    found = []
    for first in range(0, audio.shape[1], size):
        block = audio[:, first:first + size]
        found += segmentation.feed(block, probabilities(vad, segmentation.vad_input(block)))
    found += segmentation.finish()
    return sorted((u.channel, u.start, u.end) for u in found)


def signals():
    """Speech-like audio: a monologue with pauses, bursts with true silence between them, and a
    two-speaker call (one speaker per channel), each ending inside a frame."""
    yield "monologue", speechlike(21.3, seed=3)[None]
    yield "bursts", np.concatenate([talk(seed, tail=seed * 37) for seed in range(6)])[None]
    yield "call", np.concatenate(list(call_blocks(40.0, 16000, seed=9, speakers=2, block_seconds=10.0)), axis=0).T


@pytest.mark.parametrize("name,audio", list(signals()), ids=lambda v: v if isinstance(v, str) else "")
def test_short_live_blocks_cut_the_utterances_of_one_second_blocks(vad, name, audio):
    audio = np.ascontiguousarray(audio, np.float32)
    expected = segments(vad, audio, 32)
    assert len(expected) >= 3, f"{name}: the signal has several utterances"
    for block_frames in (8, 16, 5):  # 5 does not divide the grid: its cells are 35 frames
        found = segments(vad, audio, block_frames)
        if block_frames == 5:
            continue  # other cells, so other probabilities: only that it runs
        assert found == expected, f"{name}, blocks of {block_frames} frames"


def test_probabilities_of_short_blocks_are_those_of_one_second_blocks(vad):
    """Why the segments are equal: every frame gets the same probability, bit for bit (silero is
    causal, and each cell starts from the same place). Restarting VAD at every short block instead
    (as before the cells) changes them."""
    audio = np.concatenate([talk(seed) for seed in range(3)])[None].astype(np.float32)

    def frame_probs(block_frames: int) -> np.ndarray:
        segmentation = Segmentation([0], 0.5, 300, 30.0, block_frames)
        size, out = block_frames * VAD_FRAME, []
        for first in range(0, audio.shape[1], size):
            block = audio[:, first:first + size]
            probs = probabilities(vad, segmentation.vad_input(block))
            skip = (segmentation.vad_input(block).shape[1] - block.shape[1]) // VAD_FRAME
            out.append(probs[0, skip:skip + -(-block.shape[1] // VAD_FRAME)])
            segmentation.feed(block, probs)
        return np.concatenate(out)

    one_second = frame_probs(32)
    assert np.array_equal(frame_probs(8), one_second)
    assert np.array_equal(frame_probs(16), one_second)

    restarted = []  # the old way: each 8-frame block with the previous block's tail only
    size, context = 8 * VAD_FRAME, None
    for first in range(0, audio.shape[1], size):
        block = audio[:, first:first + size]
        rows = block if context is None else np.concatenate([context, block], axis=1)
        probs = probabilities(vad, rows)
        skip = 0 if context is None else context.shape[1] // VAD_FRAME
        restarted.append(probs[0, skip:skip + -(-block.shape[1] // VAD_FRAME)])
        context = rows[:, -VAD_CONTEXT:]
    assert not np.array_equal(np.concatenate(restarted), one_second)


def test_whole_file_blocks_are_one_cell_each():
    """Blocks of a cell or longer (whole files: 960 frames) are their own cell, with the previous
    block's tail as context: the VAD input of whole-file uploads is what it always was."""
    segmentation = Segmentation([0], 0.5, 300, 30.0, BLOCK_FRAMES)
    block = np.ones((1, BLOCK_FRAMES * VAD_FRAME), np.float32)
    assert segmentation.vad_input(block) is block
    segmentation.feed(block, np.zeros((1, BLOCK_FRAMES), np.float32))
    assert segmentation.vad_input(block).shape[1] == VAD_CONTEXT + block.shape[1]
    short = Segmentation([0], 0.5, 300, 30.0, 8)
    for size in (8, 8, 8, 9):
        block = np.zeros((1, size * VAD_FRAME), np.float32)
        probs = np.zeros((1, short.vad_input(block).shape[1] // VAD_FRAME), np.float32)
        if size == 9:
            with pytest.raises(ValueError):  # a block running past its cell would be run on VAD across the restart
                short.feed(block, probs)
        else:
            short.feed(block, probs)
