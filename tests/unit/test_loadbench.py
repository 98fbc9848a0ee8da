"""The load bench's error accounting, against a stand-in for tritonclient."""
from __future__ import annotations

import asyncio

import pytest

from toneserve.model_repository import loadbench


class _FlakyClient:
    """Fails every third request the way tritonclient does."""

    def __init__(self):
        self.calls = 0
        self.in_flight = self.most_in_flight = 0

    async def infer(self, model, inputs, client_timeout=None):
        from tritonclient.utils import InferenceServerException

        self.calls += 1
        call = self.calls
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if call % 3 == 0:
                raise InferenceServerException("[StatusCode.INTERNAL] boom", status="StatusCode.INTERNAL")
            return object()
        finally:
            self.in_flight -= 1


def test_closed_loop_counts_errors_and_keeps_concurrency():
    clips = [loadbench.Clip(1.0, []), loadbench.Clip(2.0, [])]
    client = _FlakyClient()
    result = asyncio.run(loadbench.closed_loop(client, "emotion", clips, concurrency=4, requests=12))
    assert client.most_in_flight == 4
    assert result["requests"] == 12 and result["errors"] == 4 and result["ok"] == 8
    assert list(result["error_messages"].values()) == [4] and "boom" in next(iter(result["error_messages"]))
    assert result["latencies_ms"].count(None) == 4
    # audio seconds count answered requests only; clips alternate 1 s / 2 s round-robin
    answered = [s for s, lat in zip(result["clip_seconds"], result["latencies_ms"]) if lat is not None]
    assert result["clip_seconds"][:4] == [1.0, 2.0, 1.0, 2.0]
    assert result["audio_s"] == pytest.approx(sum(answered))


def test_errors_make_the_exit_status_non_zero(monkeypatch, capsys):
    clips = [loadbench.Clip(1.0, [])]
    measured = asyncio.run(loadbench.closed_loop(_FlakyClient(), "emotion", clips, concurrency=2, requests=6))
    empty = loadbench.summarise(loadbench.counters({}))
    results = {"meta": {}, "errors": measured["errors"], "ensembles": {"emotion": {
        "composing_models": [], "parameters": {}, "levels": [{
            "concurrency": 2, "warmup_requests": 0, "warmup_errors": 0, "warmup_error_messages": {},
            **measured, "ensemble": empty, "models": {}}]}}}
    monkeypatch.setattr(loadbench, "run", lambda *args, **kwargs: results)
    assert loadbench.main(["--url", "127.0.0.1:1", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "2 error(s)" in captured.out and "boom" in captured.out
    assert "request(s) failed" in captured.err
