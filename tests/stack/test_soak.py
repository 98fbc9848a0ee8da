"""`toneserve soak` for real, briefly: its own tritonserver and gateway on the tiny repository, a mixed load, every
process's memory sampled, and its report files."""
from __future__ import annotations

import csv
import json


def test_a_short_soak_samples_every_process_and_answers_every_request(repository, tmp_path):
    from toneserve.cli import main

    out = tmp_path / "soak"
    code = main(["soak", "--repository", str(repository), "--minutes", "0.4", "--window", "0.2", "--interval", "5",
                 "--calls", "2", "--short", "4", "--warmup", "2", "--out", str(out)])
    result = json.loads((out / "soak.json").read_text())
    assert result["lost"] == 0 and result["requests"]["ok"] == result["requests"]["sent"] > 0
    assert code == (0 if result["passed"] else 1)
    samples = result["samples"]
    assert len(samples) >= 4 and samples[0]["t_s"] == 0.0
    first = samples[0]
    # The gateway, tritonserver and each model's stub, and the total of them all.
    assert {"gateway", "tritonserver", "model emotion2vec", "model sensevoice_encoder", "model vad"} <= set(first)
    parts = [k for k in first if k not in ("t_s", "total", "anon", "pss")]
    assert abs(first["total"] - sum(first[k] for k in parts)) < 1.0 and 0 < first["anon"] <= first["total"]
    # Every page once: no more than the RSS sum, which counts the libraries and /dev/shm the stubs share in each.
    assert first["anon"] <= first["pss"] < first["total"]
    growth = result["growth"]["total"]
    assert growth["to_mb"] == samples[-1]["total"] and growth["window_s"] <= 0.2 * 60 + 6
    assert result["cpu"]["cores"] >= 1
    rows = list(csv.DictReader((out / "soak.csv").open()))
    assert len(rows) == len(samples) and float(rows[-1]["total"]) == samples[-1]["total"]
    assert float(rows[-1]["pss"]) == samples[-1]["pss"] and "pss" in result["growth"]
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

