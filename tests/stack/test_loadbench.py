"""The load bench against a real tritonserver on the tiny cpu repository, and its error accounting."""
from __future__ import annotations

import asyncio
import json

import pytest

from toneserve.model_repository import loadbench

REQUESTS = 24
LEVELS = (1, 8)


def test_bench_on_tiny_repository(repository, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = loadbench.main(["--repository", str(repository), "--ensembles", "emotion", "asr",
                           "--concurrency", *map(str, LEVELS), "--requests", str(REQUESTS),
                           "--lengths", "0.5", "1.0", "2.0", "--json", str(out),
                           "--triton-log", str(tmp_path / "triton.log"), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "### emotion" in printed and "### asr" in printed and "| emotion2vec |" in printed

    results = json.loads(out.read_text())
    assert results["errors"] == 0
    composing = {"emotion": ["emotion2vec", "emotion_softmax"],
                 "asr": ["sensevoice_frontend", "sensevoice_encoder", "sensevoice_decoder"]}
    for name, entry in results["ensembles"].items():
        assert entry["composing_models"] == composing[name]
        assert [level["concurrency"] for level in entry["levels"]] == list(LEVELS)
        for level in entry["levels"]:
            # every request answered, none failed (warm-up included)
            assert level["errors"] == level["warmup_errors"] == 0, level["error_messages"]
            assert level["requests"] == level["ok"] == REQUESTS
            assert len(level["latencies_ms"]) == REQUESTS and None not in level["latencies_ms"]
            assert level["requests_per_s"] > 0 and level["rtfx"] > 0
            lat = level["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            # Triton booked exactly the measured requests (warm-up excluded), in every step
            assert level["ensemble"]["requests_ok"] == REQUESTS
            for model in composing[name]:
                stats = level["models"][model]
                assert stats["inference_count"] == REQUESTS, (name, level["concurrency"], model, stats)
                assert stats["requests_failed"] == 0
                assert sum(int(size) * b["executions"] for size, b in stats["batch_sizes"].items()) == REQUESTS
                assert sum(b["executions"] for b in stats["batch_sizes"].values()) == stats["execution_count"]
                assert stats["avg_queue_ms"] is not None and stats["avg_compute_ms"] > 0
        # warm-up requests were sent between levels and kept out of both levels' deltas
        first, second = entry["levels"]
        for model in composing[name]:
            between = second["stats_before"][model]["inference_count"] - first["stats_after"][model]["inference_count"]
            assert between == second["warmup_requests"] > 0, (name, model)

    emotion = results["ensembles"]["emotion"]["levels"]
    assert [level["models"]["emotion2vec"]["inference_count"] for level in emotion] == [REQUESTS, REQUESTS]
    # one request in flight: Triton has nothing to batch; eight: it forms batches
    assert all(s["avg_batch_size"] == 1.0 for s in emotion[0]["models"].values())
    batched = [(name, model, s["avg_batch_size"]) for name, entry in results["ensembles"].items()
               for model, s in entry["levels"][1]["models"].items()]
    assert any(avg > 1 for _, _, avg in batched), batched


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


def test_instances_sharing_the_cores_answer_every_request(models_root, tmp_path, capsys):
    """A repository whose heavy instances take turns on the cores (Triton's rate limiter on, a
    pool of this machine's cores) serves concurrent requests like any other: all answered."""
    from toneserve.model_repository.catalog import DEFAULT_TUNING, describe
    from toneserve.model_repository.render import render_repository

    shared = render_repository(describe(models_root, tuning=DEFAULT_TUNING.changed(share_cores=True, instances=3)),
                               "cpu", tmp_path / "shared")
    out = tmp_path / "bench.json"
    code = loadbench.main(["--repository", str(shared), "--ensembles", "emotion", "asr", "--concurrency", "8",
                           "--requests", "16", "--lengths", "0.5", "2.0", "--json", str(out),
                           "--triton-log", str(tmp_path / "triton.log"), "--no-progress"])
    assert code == 0, capsys.readouterr().out
    for entry in json.loads(out.read_text())["ensembles"].values():
        (level,) = entry["levels"]
        assert level["ok"] == level["requests"] == 16 and level["errors"] == 0
    from toneserve.triton import EmbeddedTriton
    assert EmbeddedTriton(shared)._rate_limit()  # what loadbench's EmbeddedTriton started tritonserver with
