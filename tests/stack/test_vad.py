"""The Silero VAD runner inside a real tritonserver: rendered from a spec, ragged requests batched."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.support import RUNNERS, load_file, silero_vad_onnx, talk


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    path = silero_vad_onnx()
    if path is None:
        pytest.skip("silero-vad is not installed")
    return path


@pytest.fixture(scope="module")
def vad(onnx_path):
    return load_file("vad_core", RUNNERS / "vad_core.py").SileroVad(onnx_path)


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
