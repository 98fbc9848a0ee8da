"""Silero VAD on numpy + ONNX Runtime (model_repository/runners/vad_core.py) and its Triton runner, with a
stand-in for tritonserver's Python backend; the parity with silero-vad itself (torch) is in the export tier,
the runner inside a real tritonserver in the stack tier."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from tests.support import RUNNERS, load_file, silero_vad_onnx, talk
from tests.support import VAD_WINDOW as WINDOW
from toneserve.gateway.vad_segments import speech_segments
from toneserve.model_repository.render import RUNNER_HELPERS
from toneserve.samples import speechlike

vad_core = load_file("vad_core", RUNNERS / "vad_core.py")


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    path = silero_vad_onnx()
    if path is None:
        pytest.skip("silero-vad is not installed")
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def vad(onnx_path):
    return vad_core.SileroVad(onnx_path)


def test_graph_is_the_standard_8k_16k_model(onnx_path):
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    assert inputs["input"][0] == "tensor(float)" and len(inputs["input"][1]) == 2
    assert inputs["state"] == ("tensor(float)", [2, None, 128])
    assert inputs["sr"] == ("tensor(int64)", [])
    assert outputs == {"output": "tensor(float)", "stateN": "tensor(float)"}


def test_padded_batch_equals_each_item_alone(vad):
    rng = np.random.default_rng(7)
    items = [talk(3, tail=123), speechlike(0.9, seed=4), np.zeros(300, np.float32), talk(5)[:WINDOW * 40]]
    lens = np.array([len(x) for x in items])
    batch = rng.standard_normal((len(items), lens.max() + 1000)).astype(np.float32)  # garbage past each length
    for row, item in enumerate(items):
        batch[row, :len(item)] = item
    probs, frames = vad.probabilities(batch, lens)
    assert frames.tolist() == [-(-n // WINDOW) for n in lens] and frames[2] == 1 and frames[3] == 40
    assert probs.shape == (len(items), frames.max())
    for row, item in enumerate(items):
        alone, alone_frames = vad.probabilities(item[None], np.array([len(item)]))
        assert alone_frames[0] == frames[row]
        np.testing.assert_allclose(probs[row, :frames[row]], alone[0], atol=1e-6, rtol=0)
        assert not probs[row, frames[row]:].any()


def test_empty_items_and_bad_lengths(vad):
    probs, frames = vad.probabilities(np.zeros((2, 0), np.float32), np.array([0, 0]))
    assert probs.shape == (2, 0) and frames.tolist() == [0, 0]
    probs, frames = vad.probabilities(np.ones((2, 700), np.float32), np.array([0, 700]))
    assert frames.tolist() == [0, 2] and probs.shape == (2, 2) and not probs[0].any()
    with pytest.raises(ValueError, match="lengths"):
        vad.probabilities(np.zeros((1, 10), np.float32), np.array([11]))
    assert speech_segments(np.zeros(0, np.float32)) == []


# --- the Triton runner -------------------------------------------------------------------------

FAKE_PB_UTILS = '''
import numpy as np

class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)
    def name(self):
        return self._name
    def as_numpy(self):
        return self._array

class TritonError:
    def __init__(self, message):
        self._message = message
    def message(self):
        return self._message

class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error

class Request:
    def __init__(self, **arrays):
        self.inputs = {k: Tensor(k, v) for k, v in arrays.items()}

def get_input_tensor_by_name(request, name):
    return request.inputs.get(name)
'''


def _version_dir(tmp_path: Path, onnx_path: Path) -> Path:
    """What the rendered repository holds: model.py, its helpers (vad_core.py, runner_errors.py, contract.py)
    and silero_vad.onnx side by side."""
    version = tmp_path / "vad" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text((RUNNERS / "vad_model.py").read_text())
    for helper in (RUNNERS / "vad_core.py", *RUNNER_HELPERS):
        (version / helper.name).write_text(helper.read_text())
    (version / "silero_vad.onnx").write_bytes(onnx_path.read_bytes())
    return version


def test_runner_and_core_never_import_torch(tmp_path, onnx_path):
    version = _version_dir(tmp_path, onnx_path)
    (tmp_path / "triton_python_backend_utils.py").write_text(FAKE_PB_UTILS)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        sys.path[:0] = [{str(tmp_path)!r}, {str(version)!r}]  # the stub puts the version folder on sys.path
        import model, triton_python_backend_utils as pb
        m = model.TritonPythonModel()
        m.initialize({{"model_config": json.dumps({{"parameters": {{}}}}),
                       "model_repository": {str(version.parent)!r}, "model_version": "1"}})
        out = m.execute([pb.Request(WAV=np.zeros((1, 4000), np.float32), WAV_LENS=np.array([[4000]]))])
        assert out[0].error is None, out[0].error.message()
        assert "torch" not in sys.modules, sorted(k for k in sys.modules if k.startswith("torch"))
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    for source in (RUNNERS / "vad_model.py", RUNNERS / "vad_core.py"):
        assert "torch" not in "".join(line for line in source.read_text().splitlines()
                                      if line.lstrip().startswith(("import ", "from ")))


@pytest.fixture
def runner(tmp_path, onnx_path, monkeypatch):
    version = _version_dir(tmp_path, onnx_path)
    pb = types.ModuleType("triton_python_backend_utils")
    exec(FAKE_PB_UTILS, pb.__dict__)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setitem(sys.modules, "vad_core", vad_core)
    for helper in RUNNER_HELPERS:
        monkeypatch.setitem(sys.modules, helper.stem, load_file(helper.stem, version / helper.name))
    model = load_file("silero_vad_triton_model", version / "model.py").TritonPythonModel()
    model.initialize({"model_config": '{"parameters": {"intra_op_threads": {"string_value": "1"}}}',
                      "model_repository": str(version.parent), "model_version": "1"})
    return model, pb


def test_runner_batches_ragged_requests_and_fails_only_bad_ones(runner, vad):
    model, pb = runner
    a, b, c = talk(21, tail=5), speechlike(1.1, seed=22), talk(23)[:9000]
    two = np.zeros((2, len(b)), np.float32)
    two[0], two[1, :len(c)] = b, c
    requests = [pb.Request(WAV=a[None], WAV_LENS=np.array([[len(a)]])),
                pb.Request(WAV=two, WAV_LENS=np.array([[len(b)], [len(c)]])),
                pb.Request(WAV=a[None, :100], WAV_LENS=np.array([[101]])),  # length past the data
                pb.Request(WAV=a[None, :100].astype(np.float64), WAV_LENS=np.array([[100]]))]
    responses = model.execute(requests)
    assert len(responses) == 4
    assert "WAV_LENS" in responses[2].error.message() and "float32" in responses[3].error.message()
    for response, items in ((responses[0], [a]), (responses[1], [b, c])):
        assert response.error is None
        out = {t.name(): t.as_numpy() for t in response.output_tensors}
        frames = [-(-len(x) // WINDOW) for x in items]
        assert out["FRAMES"].dtype == np.int64 and out["FRAMES"].tolist() == [[f] for f in frames]
        assert out["SPEECH_PROBS"].dtype == np.float32 and out["SPEECH_PROBS"].shape == (len(items), max(frames))
        for row, item in enumerate(items):
            alone, _ = vad.probabilities(item[None], np.array([len(item)]))
            np.testing.assert_allclose(out["SPEECH_PROBS"][row, :frames[row]], alone[0], atol=1e-6, rtol=0)
            assert not out["SPEECH_PROBS"][row, frames[row]:].any()


def test_runner_answers_every_request_when_the_batch_fails(runner):
    model, pb = runner

    class Broken:
        def probabilities(self, wav, lens):
            raise RuntimeError("ort-went-away")

    model.vad = Broken()
    responses = model.execute([pb.Request(WAV=np.zeros((1, 600), np.float32), WAV_LENS=np.array([[600]]))] * 3)
    assert [r.error.message() for r in responses] == ["RuntimeError: ort-went-away"] * 3
