"""The embedded tritonserver launcher: a model that fails to load is a clear error, and no orphan processes."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import processes_using, triton_ports
from toneserve.triton import EmbeddedTriton, TritonStartError


def _python_model(repo: Path, name: str, body: str) -> Path:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(f"""
        name: "{name}"
        backend: "python"
        max_batch_size: 4
        input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }} ]
        output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }} ]
    """))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(body))
    return repo


def test_model_that_fails_to_load_reports_tritons_own_line_and_leaves_nothing(tmp_path):
    repo = _python_model(tmp_path / "repo", "broken", """
        class TritonPythonModel:
            def initialize(self, args):
                raise RuntimeError("weights-xyz-missing")
    """)
    with pytest.raises(TritonStartError) as error:
        EmbeddedTriton(repo, triton_ports(), log_path=tmp_path / "triton.log", startup_timeout=120).start()
    message = str(error.value)
    assert "failed to load 'broken'" in message and "weights-xyz-missing" in message
    assert not processes_using(repo)


def test_starts_serves_and_stops_without_orphans(tmp_path):
    repo = _python_model(tmp_path / "repo", "double", """
        import triton_python_backend_utils as pb_utils
        class TritonPythonModel:
            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2)]) for r in requests]
    """)
    import numpy as np
    import tritonclient.grpc as grpcclient

    with EmbeddedTriton(repo, triton_ports(), log_path=tmp_path / "triton.log") as triton:
        assert triton.is_ready()
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        x = grpcclient.InferInput("X", [1, 3], "FP32")
        x.set_data_from_numpy(np.array([[1, 2, 3]], np.float32))
        np.testing.assert_array_equal(client.infer("double", [x]).as_numpy("Y"), [[2, 4, 6]])
        assert processes_using(repo)
    assert not processes_using(repo)
