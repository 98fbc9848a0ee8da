"""loadtest/'s compute bound: every served model run on the exported tiny models, without Triton."""
from __future__ import annotations


def test_compute_bound_runs_every_served_model(repository, calls):
    from toneserve.loadtest import compute_bound

    result = compute_bound.measure(repository, calls, durations=[8.0], progress=False)
    assert result["recordings"] == 2 and result["audio_seconds"] == 16.0 and result["utterances"] > 0
    assert set(result["model_seconds"]) == set(compute_bound.MODELS)
    assert result["model_calls"]["sensevoice_encoder"] == result["utterances"]
    assert result["model_calls"]["emotion2vec"] >= result["utterances"]
    from toneserve.model_repository.catalog import DEFAULT_TUNING
    assert result["threads"]["emotion2vec"] == DEFAULT_TUNING.intra_op_threads  # as the repository says
    assert result["streams"] == DEFAULT_TUNING.instances * DEFAULT_TUNING.streams and result["rtfx"] > 0 and result["cpu_cores"] > 0
