"""The load bench against a real tritonserver on the tiny cpu repository."""
from __future__ import annotations

import json

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
    composing = {"emotion": ["emotion2vec"],
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
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err + (tmp_path / "triton.log").read_text()[-4000:]
    for entry in json.loads(out.read_text())["ensembles"].values():
        (level,) = entry["levels"]
        assert level["ok"] == level["requests"] == 16 and level["errors"] == 0
    from toneserve.triton import EmbeddedTriton
    assert EmbeddedTriton(shared)._rate_limit()  # what loadbench's EmbeddedTriton started tritonserver with
