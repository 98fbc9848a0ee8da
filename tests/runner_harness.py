"""Loads a graph runner (onnx_runner.py / openvino_runner.py) in-process as tritonserver's Python backend
would: copied flat beside its helpers into a version folder, with a fake triton_python_backend_utils."""
from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

from tests.support import RUNNERS, load_file
from tests.unit.test_runner_cancel import FAKE_PB_UTILS
from toneserve.model_repository.render import RUNNER_HELPERS


def load_runner(monkeypatch, folder: Path, runner: str, graphs: dict[str, Path], config: dict):
    """(TritonPythonModel initialised on `config`, the fake pb_utils module). graphs: file name in the
    version folder -> source file."""
    version = folder / "1"
    version.mkdir(parents=True)
    shutil.copy(RUNNERS / runner, version / "model.py")
    for helper in RUNNER_HELPERS:
        shutil.copy(helper, version / helper.name)
    for name, source in graphs.items():
        shutil.copy(source, version / name)
    pb = types.ModuleType("triton_python_backend_utils")
    exec(FAKE_PB_UTILS, pb.__dict__)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    for helper in RUNNER_HELPERS:  # in order: batch_io imports runner_errors
        monkeypatch.setitem(sys.modules, helper.stem, load_file(helper.stem, version / helper.name))
    model = load_file(f"{runner}_{folder.name}", version / "model.py").TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(folder), "model_version": "1"})
    return model, pb


def load_rendered(monkeypatch, model_dir: Path):
    """A model of a rendered repository (its model.py, helpers and graph as rendered), initialised on its
    config.pbtxt as Triton hands it over (JSON)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    version = model_dir / "1"
    pb = types.ModuleType("triton_python_backend_utils")
    exec(FAKE_PB_UTILS, pb.__dict__)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    for helper in RUNNER_HELPERS:
        monkeypatch.setitem(sys.modules, helper.stem, load_file(helper.stem, version / helper.name))
    model = load_file(f"rendered_{model_dir.parent.name}_{model_dir.name}", version / "model.py").TritonPythonModel()
    model.initialize({"model_config": json.dumps(as_json), "model_repository": str(model_dir), "model_version": "1"})
    return model, pb


def answers(model, requests: list, timeout: float = 60.0) -> list:
    """What a runner answers a batch, in request order: execute's list, or, from a runner that answers through
    response senders (the graph runners: batch_io.PaddedBatches), each request's one response, sent with the
    final flag (the fake senders of FAKE_PB_UTILS record them)."""
    returned = model.execute(requests)
    if returned is not None:
        return returned
    answered = []
    for request in requests:
        sender = request.get_response_sender()
        assert sender.done.wait(timeout), "a request was never answered"
        assert len(sender.responses) == 1 and sender.flags == [1], (len(sender.responses), sender.flags)
        answered.append(sender.responses[0])
    return answered


def outputs(response) -> dict:
    assert response.error is None, response.error and response.error.message()
    return {t.name(): t.as_numpy() for t in response.output_tensors}
