"""Silero VAD on numpy + ONNX Runtime (model_repository/runners/vad_core.py), its Triton runner, and
the gateway's port of silero's segmentation (gateway/vad_segments.py).

The reference is silero-vad itself (the wheel, with torch): its OnnxWrapper run one
chunk at a time for the probabilities, its get_speech_timestamps for the segments.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from toneserve.gateway.vad_segments import speech_segments
from toneserve.samples import speechlike

# silero_vad.load_silero_vad uses importlib.resources.path, deprecated in Python 3.11+.
pytestmark = pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")

RUNNERS = Path(__file__).resolve().parents[2] / "model_repository" / "runners"
WINDOW = 512


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vad_core = _load("vad_core", RUNNERS / "vad_core.py")


@pytest.fixture(scope="module")
def silero():
    silero_vad = pytest.importorskip("silero_vad")
    return silero_vad


@pytest.fixture(scope="module")
def onnx_path(silero) -> Path:
    path = Path(silero.__file__).parent / "data" / "silero_vad.onnx"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def vad(onnx_path):
    return vad_core.SileroVad(onnx_path)


@pytest.fixture(scope="module")
def wrapper(silero):
    return silero.load_silero_vad(onnx=True)


def reference_probs(wrapper, audio: np.ndarray) -> np.ndarray:
    """silero's own per-chunk loop (as get_speech_timestamps runs it): one stream, state reset first."""
    import torch
    wrapper.reset_states()
    out = []
    for start in range(0, len(audio), WINDOW):
        chunk = torch.from_numpy(np.ascontiguousarray(audio[start:start + WINDOW]))
        if len(chunk) < WINDOW:
            chunk = torch.nn.functional.pad(chunk, (0, WINDOW - len(chunk)))
        out.append(wrapper(chunk, 16000).item())
    return np.array(out, dtype=np.float32)


def reference_segments(silero, wrapper, audio: np.ndarray, **params) -> list[tuple[int, int]]:
    import torch
    return [(s["start"], s["end"]) for s in silero.get_speech_timestamps(torch.from_numpy(audio), wrapper, **params)]


def _ours(**params):
    """get_speech_timestamps parameter names -> speech_segments parameter names."""
    names = {"min_speech_duration_ms": "min_speech_ms", "min_silence_duration_ms": "min_silence_ms",
             "max_speech_duration_s": "max_speech_s", "min_silence_at_max_speech": "min_silence_at_max_speech_ms"}
    return {names.get(k, k): v for k, v in params.items()}


def talk(seed: int, tail: int = 0) -> np.ndarray:
    """Speech-like bursts, true silence and a little noise; `tail` extra samples make a partial last frame."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(rng.integers(0, 8000)), np.float32),
             speechlike(float(rng.uniform(1.0, 2.5)), seed=seed, f0=float(rng.uniform(100, 220))),
             np.zeros(int(rng.integers(2000, 20000)), np.float32),
             (0.003 * rng.standard_normal(int(rng.integers(1000, 6000)))).astype(np.float32),
             speechlike(float(rng.uniform(0.5, 2.0)), seed=seed + 100),
             np.zeros(tail, np.float32)]
    return np.concatenate(parts).astype(np.float32)


def test_graph_is_the_standard_8k_16k_model(onnx_path):
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    assert inputs["input"][0] == "tensor(float)" and len(inputs["input"][1]) == 2
    assert inputs["state"] == ("tensor(float)", [2, None, 128])
    assert inputs["sr"] == ("tensor(int64)", [])
    assert outputs == {"output": "tensor(float)", "stateN": "tensor(float)"}


def test_one_stream_matches_silero_onnx_wrapper(vad, wrapper):
    audio = np.concatenate([speechlike(2.3, seed=1), np.zeros(16000, np.float32),
                            speechlike(1.7, seed=2, f0=200.0)[:-77]])  # partial last frame
    ref = reference_probs(wrapper, audio)
    probs, frames = vad.probabilities(audio[None], np.array([len(audio)]))
    assert frames.tolist() == [len(ref)] == [-(-len(audio) // WINDOW)]
    assert probs.shape == (1, len(ref)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[0], ref, atol=1e-5, rtol=0)
    assert ref.max() > 0.9 and ref.min() < 0.05  # the audio exercises both speech and silence


def test_funasr_sample_probs_and_segments_match_silero(vad, wrapper, silero, shared_speech):
    from toneserve.gateway.audio import decode
    audio = decode((shared_speech / "zh" / "funasr-sample.wav").read_bytes()).samples[0]
    ref = reference_probs(wrapper, audio)
    probs, frames = vad.probabilities(audio[None], np.array([len(audio)]))
    np.testing.assert_allclose(probs[0, :frames[0]], ref, atol=1e-5, rtol=0)

    ours = speech_segments(probs[0], frames[0], num_samples=len(audio))
    assert ours == reference_segments(silero, wrapper, audio)
    # MANIFEST: golden (FunASR fsmn-vad) speech span 770-5980 ms. Silero finds 1026-2270 and
    # 3650-6000 ms: the audio is silent (rms < 1e-3) until ~1050 ms and between 2.25 and 3.6 s,
    # so its span starts 256 ms after the golden one (fsmn-vad pads its onset) and ends 20 ms after it.
    start_ms, end_ms = ours[0][0] / 16, ours[-1][1] / 16
    assert abs(start_ms - 770) <= 300 and abs(end_ms - 5980) <= 50
    assert all(770 - 300 <= s / 16 < e / 16 <= 5980 + 50 for s, e in ours)


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


SEGMENT_PARAMS = [
    {},
    {"threshold": 0.3, "neg_threshold": 0.1},
    {"threshold": 0.7, "min_speech_duration_ms": 100, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"speech_pad_ms": 0, "min_silence_duration_ms": 0},
    {"max_speech_duration_s": 1.0},
    {"max_speech_duration_s": 1.2, "use_max_poss_sil_at_max_speech": False, "min_silence_at_max_speech": 50},
]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_speech_segments_equal_silero_get_speech_timestamps(vad, wrapper, silero, seed):
    audio = talk(seed, tail=seed * 37)
    probs, frames = vad.probabilities(audio[None], np.array([len(audio)]))
    for params in SEGMENT_PARAMS:
        expected = reference_segments(silero, wrapper, audio, **params)
        assert speech_segments(probs[0], frames[0], num_samples=len(audio), **_ours(**params)) == expected, params
    assert reference_segments(silero, wrapper, audio)  # there is speech to find


@pytest.mark.parametrize("seed", range(6))
def test_speech_segments_equal_silero_on_synthetic_probabilities(silero, seed):
    """Many state-machine paths quickly: smoothed random probabilities straight into silero's post-processing."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 1200))
    walk = np.convolve(rng.standard_normal(n + 8), np.ones(9) / 3, mode="valid")
    probs = (1 / (1 + np.exp(-3 * walk))).astype(np.float32)
    num_samples = n * WINDOW - int(rng.integers(0, WINDOW))
    for params in SEGMENT_PARAMS + [{"max_speech_duration_s": 0.5, "min_silence_at_max_speech": 20}]:
        expected = [(s["start"], s["end"]) for s in silero.get_speech_timestamps_from_probs(
            probs.tolist(), audio_length_samples=num_samples, **params)]
        assert speech_segments(probs, num_samples=num_samples, **_ours(**params)) == expected, params
    padded = np.concatenate([probs, np.ones(30, np.float32)])  # a batch row: frames cuts the padding off
    assert speech_segments(padded, n) == speech_segments(probs)


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
    """What the rendered repository holds: model.py, vad_core.py, runner_errors.py and silero_vad.onnx side by
    side."""
    version = tmp_path / "vad" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text((RUNNERS / "vad_model.py").read_text())
    for helper in ("vad_core.py", "runner_errors.py"):
        (version / helper).write_text((RUNNERS / helper).read_text())
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
    monkeypatch.setitem(sys.modules, "runner_errors", _load("runner_errors", version / "runner_errors.py"))
    model = _load("silero_vad_triton_model", version / "model.py").TritonPythonModel()
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


def test_runner_in_a_real_tritonserver_with_ragged_batching(tmp_path, onnx_path, vad):
    """Rendered from a spec like every other model, loaded by the embedded server, hit concurrently."""
    import tritonclient.grpc as grpcclient

    from toneserve.model_repository.render import render_repository
    from toneserve.model_repository.spec import Batching, PythonModel, Tensor
    from toneserve.triton import EmbeddedTriton, TritonPorts, free_port

    spec = PythonModel(
        name="silero_vad", source=RUNNERS / "vad_model.py", files=(RUNNERS / "vad_core.py", onnx_path),
        inputs=(Tensor("WAV", "float32", (-1,), ragged=True), Tensor("WAV_LENS", "int64", (1,))),
        outputs=(Tensor("SPEECH_PROBS", "float32", (-1,)), Tensor("FRAMES", "int64", (1,))),
        batching=Batching(max_batch_size=8, max_queue_delay_us=20000))
    repo = render_repository([spec], "cpu", tmp_path / "repo")
    clips = [talk(31 + i)[: 4000 + 2900 * i] for i in range(8)]
    ports = TritonPorts(free_port(), free_port(), free_port())
    with EmbeddedTriton(repo, ports, log_path=tmp_path / "triton.log") as triton:
        client = grpcclient.InferenceServerClient(triton.grpc_url)

        def infer(clip):
            wav = grpcclient.InferInput("WAV", [1, len(clip)], "FP32")
            wav.set_data_from_numpy(clip[None])
            lens = grpcclient.InferInput("WAV_LENS", [1, 1], "INT64")
            lens.set_data_from_numpy(np.array([[len(clip)]], np.int64))
            result = client.infer("silero_vad", [wav, lens])
            return result.as_numpy("SPEECH_PROBS"), result.as_numpy("FRAMES")

        with ThreadPoolExecutor(len(clips)) as pool:
            results = list(pool.map(infer, clips))
        stats = client.get_inference_statistics("silero_vad").model_stats[0]
    print(f"silero_vad: {stats.inference_count} items in {stats.execution_count} executions")
    assert stats.inference_count == len(clips)
    for clip, (probs, frames) in zip(clips, results):
        alone, alone_frames = vad.probabilities(clip[None], np.array([len(clip)]))
        assert frames.tolist() == [[alone_frames[0]]] and probs.shape == alone.shape
        np.testing.assert_allclose(probs, alone, atol=1e-6, rtol=0)
