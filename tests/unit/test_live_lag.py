"""The live-lag arithmetic of loadtest/live_lag.py, on made-up send and arrival times (no server, no clock)."""
from __future__ import annotations

import pytest

from toneserve.loadtest import live_lag


def test_each_segment_is_timed_from_the_chunk_that_completed_its_end():
    # 0.1 s chunks sent at 100.0 + their audio end, except the 4th, sent 0.05 s late.
    sent = [(0.1, 100.1), (0.2, 100.2), (0.3, 100.3), (0.4, 100.45), (0.5, 100.5)]
    arrived = [(0.25, 101.0),  # needs the chunk ending at 0.3 (sent 100.3)
               (0.3, 100.9),  # ends on a chunk's edge: that chunk is enough
               (0.31, 101.2),  # needs the late 4th chunk
               (0.5, 100.75)]
    assert live_lag.lags(sent, arrived) == pytest.approx([0.7, 0.6, 0.75, 0.25])
    figures = live_lag.summary(live_lag.lags(sent, arrived))
    assert figures["segments"] == 4 and figures["max_s"] == pytest.approx(0.75)
    assert figures["p50_s"] == pytest.approx(0.65) and 0.7 < figures["p95_s"] <= 0.75
    assert live_lag.summary([])["p50_s"] is None
    with pytest.raises(ValueError, match="after the"):
        live_lag.lags(sent, [(0.6, 101.0)])


def test_chunks_are_paced_at_real_time_and_their_send_times_kept():
    now = [50.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 6))
        now[0] += seconds

    sent: list[tuple[float, float]] = []
    chunks = [b"\0" * 640] * 3 + [b"\0" * 320]  # 20 ms of 16 kHz mono s16 each, the last 10 ms
    out = list(live_lag.paced(b"HDR", chunks, 32000, sent, clock=lambda: now[0], sleep=sleep))
    assert out[0] == b"HDR" and len(out) == 5
    assert slept == [0.02, 0.02, 0.02, 0.01]  # each chunk waits until its last sample is due
    assert [audio for audio, _ in sent] == pytest.approx([0.02, 0.04, 0.06, 0.07])
    assert [wall for _, wall in sent] == pytest.approx([50.02, 50.04, 50.06, 50.07])
    now[0] += 1.0  # a slow consumer: the next chunk goes at once, and its real send time is kept
    sent.clear()
    slept.clear()
    list(live_lag.paced(b"", [b"\0" * 640, b"\0" * 640], 32000, sent, clock=lambda: now[0], sleep=sleep))
    assert sent[0][1] == pytest.approx(now[0] - 0.02)
