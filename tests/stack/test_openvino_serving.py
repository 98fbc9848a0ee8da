"""The tiny models served through OpenVINO by a real tritonserver: the ensembles answer what the ONNX Runtime
repository answers (f32: within 1e-4; bf16: within a measured bound), say runtime openvino in the metadata the
gateway reads, and the compiled models are cached on disk after one start."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.openvino_models import with_openvino
from tests.support import talk, triton_ports
from toneserve import contract
from toneserve.model_repository.catalog import DEFAULT_TUNING, describe
from toneserve.model_repository.cpu import has_bf16
from toneserve.model_repository.render import render_repository
from toneserve.triton import EmbeddedTriton

pytest.importorskip("openvino")

CLIPS = (1.0, 2.3, 0.7)  # seconds: different lengths, so batching pads
# bf16 keeps 8 bits of mantissa: on the tiny random-weight models its probabilities stayed within 0.0006
# (emotion) and 0.0027 (SenseVoice's query distributions) of ONNX Runtime fp32 over these clips (f32: 1.2e-7);
# the bound leaves room for another CPU's kernels.
BF16_ATOL = 0.02


def _served(repository, tmp_path) -> dict:
    """What the repository's ensembles answer for CLIPS, and the gateway's view of their provenance."""
    from toneserve.gateway.inference import Inference

    async def ask(url):
        inference = Inference(url)
        try:
            await inference.load()
            clips = [talk(seed)[: int(seconds * contract.SAMPLE_RATE)] for seed, seconds in enumerate(CLIPS)]
            emotion = await asyncio.gather(*(inference.emotion(c) for c in clips))
            asr = await asyncio.gather(*(inference.asr(c) for c in clips))
            return {"models": dict(inference.models),
                    "emotion": [probs for _, probs in emotion],
                    "asr": [{name: d[1] for name, d in result.distributions.items()} for result in asr],
                    "text": [result.text for result in asr]}
        finally:
            await inference.close()

    with EmbeddedTriton(repository, triton_ports(), log_path=tmp_path / f"{repository.name}.log") as triton:
        return asyncio.run(ask(triton.grpc_url))


@pytest.fixture(scope="module")
def models(models_root, tmp_path_factory):
    return with_openvino(models_root, tmp_path_factory.mktemp("ov-serving") / "models")


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    """The ONNX Runtime repository's answers."""
    root = tmp_path_factory.mktemp("ort")
    repository = render_repository(describe(models, "fp32", DEFAULT_TUNING, runtime="onnxruntime"), "cpu",
                                   root / "tiny-cpu-ort")
    return _served(repository, root)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_serves_what_onnx_runtime_serves(models, reference, tmp_path, precision):
    if precision == "bf16" and not has_bf16():
        pytest.skip("this CPU has no native bf16 (OpenVINO would run f32)")
    described = describe(models, precision, DEFAULT_TUNING, runtime="openvino")
    repository = render_repository(described, "cpu", tmp_path / f"tiny-cpu-ov-{precision}")
    served = _served(repository, tmp_path)
    for name in (contract.EMOTION, contract.ASR):
        info = served["models"][name]
        assert (info.runtime, info.precision) == ("openvino", precision), name
        assert reference["models"][name].runtime == "onnxruntime"
    assert served["models"][contract.VAD].runtime == "onnxruntime"
    atol = 1e-4 if precision == "fp32" else BF16_ATOL
    for got, want in zip(served["emotion"], reference["emotion"]):
        np.testing.assert_allclose(got, want, atol=atol)
    for got, want in zip(served["asr"], reference["asr"]):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=atol, err_msg=name)
    if precision == "fp32":
        assert served["text"] == reference["text"]
    # Each heavy model compiled once and cached beside its graph: the next start reads it back.
    for model in ("emotion2vec", "sensevoice_encoder"):
        cache = repository / model / "1" / "ov_cache"
        assert any(p.is_file() for p in cache.rglob("*")), f"nothing cached in {cache}"
