"""Runners answer a request whose client gave up (Triton's request cancellation) CANCELLED, without
running it, and still run the rest of its batch: the silero VAD runner on its real ONNX graph."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from tests.support import RUNNERS, load_file, silero_vad_onnx, talk
from toneserve.model_repository.render import RUNNER_HELPERS

FAKE_PB_UTILS = '''
import threading

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1

class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)
    def name(self):
        return self._name
    def as_numpy(self):
        return self._array

class TritonError:
    CANCELLED = "CANCELLED"
    def __init__(self, message, code=None):
        self._message, self.code = message, code
    def message(self):
        return self._message

class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error

class ResponseSender:
    """Records what a model sends; a response after the final flag is an error, as in Triton."""
    def __init__(self):
        self.responses, self.flags = [], []
        self.done = threading.Event()
    def send(self, response=None, flags=0):
        if self.done.is_set():
            raise RuntimeError("a response after the final one")
        self.responses.append(response)
        self.flags.append(flags)
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.done.set()

class Request:
    def __init__(self, cancelled=False, **arrays):
        self.inputs = {k: Tensor(k, v) for k, v in arrays.items()}
        self.cancelled = cancelled
        self.sender = ResponseSender()
    def is_cancelled(self):
        return self.cancelled
    def get_response_sender(self):
        return self.sender

def get_input_tensor_by_name(request, name):
    return request.inputs.get(name)
'''


@pytest.fixture
def vad_runner(tmp_path, monkeypatch):
    onnx = silero_vad_onnx()
    if onnx is None or not onnx.is_file():
        pytest.skip("the silero-vad wheel is not installed")
    version = tmp_path / "vad" / "1"
    version.mkdir(parents=True)
    for source in (RUNNERS / "vad_model.py", RUNNERS / "vad_core.py", *RUNNER_HELPERS):
        (version / ("model.py" if source.name == "vad_model.py" else source.name)).write_text(source.read_text())
    (version / "silero_vad.onnx").write_bytes(onnx.read_bytes())
    pb = types.ModuleType("triton_python_backend_utils")
    exec(FAKE_PB_UTILS, pb.__dict__)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    for helper in (version / "vad_core.py", *(version / h.name for h in RUNNER_HELPERS)):
        monkeypatch.setitem(sys.modules, helper.stem, load_file(helper.stem, helper))
    model = load_file("cancel_vad_model", version / "model.py").TritonPythonModel()
    model.initialize({"model_config": '{"parameters": {}}', "model_repository": str(version.parent),
                      "model_version": "1"})
    return model, pb


def test_a_cancelled_request_is_answered_cancelled_and_the_rest_of_its_batch_runs(vad_runner, monkeypatch):
    model, pb = vad_runner
    rows = []
    probabilities = model.vad.probabilities
    monkeypatch.setattr(model.vad, "probabilities", lambda wav, lens: (rows.append(len(wav)), probabilities(wav, lens))[1])
    a, b = talk(31), talk(32)
    responses = model.execute([pb.Request(WAV=a[None], WAV_LENS=np.array([[len(a)]])),
                               pb.Request(cancelled=True, WAV=b[None], WAV_LENS=np.array([[len(b)]]))])
    assert responses[0].error is None and responses[0].output_tensors[0].as_numpy().shape[0] == 1
    assert responses[1].error.code == "CANCELLED" and responses[1].output_tensors == []
    assert rows == [1]  # the model ran the live request's row only
    responses = model.execute([pb.Request(cancelled=True, WAV=a[None], WAV_LENS=np.array([[len(a)]]))])
    assert responses[0].error.code == "CANCELLED" and rows == [1]
