"""The README's main command, end to end (tiny models so it stays quick)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.support import processes_using
from toneserve.model_repository.cpu import default_precision


def test_demo_exports_serves_analyses_and_stops(models_root, tmp_path):
    # Its own home (repository, logs), never the one the session's stack is serving from;
    # the session's tiny exports are reused.
    env = {**os.environ, "TONESERVE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "demo", "--size", "tiny",
                           "--models-dir", str(models_root)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert len(result["segments"]) >= 4 and result["metadata"]["audio_seconds"] == 20.0
    assert [s["speaker"] for s in result["speakers"]] == ["agent", "customer"]
    assert "RANDOM-WEIGHT" in done.stderr and "everything stopped" in done.stderr
    # It serves the cpu profile's default: bf16 where this CPU has it (the openvino variant is built), else fp32;
    # each model's metadata says the runtime and precision its rendered ensemble chose.
    precision = default_precision()
    assert f"--precision auto: serving {precision}" in done.stderr
    served = tmp_path / "repository" / ("tiny-cpu" if precision == "fp32" else f"tiny-cpu-{precision}")
    for model in result["metadata"]["models"]:
        config = text_format.Parse((served / model["name"] / "config.pbtxt").read_text(), mc.ModelConfig())
        assert (model["precision"], model["runtime"]) == (config.parameters["precision"].string_value,
                                                          config.parameters["runtime"].string_value), model
    assert not processes_using(tmp_path)
