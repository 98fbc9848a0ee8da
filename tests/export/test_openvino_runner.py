"""The OpenVINO runner on the exported tiny graphs (emotion2vec+, the SenseVoice encoder), rendered as the cpu
profile renders them and loaded in-process: at f32 it answers what the ONNX Runtime runner answers within 1e-4,
and a batch of different lengths answers what each request answers alone."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.openvino_models import with_openvino
from tests.runner_harness import answers, load_rendered, outputs
from toneserve.model_repository.catalog import DEFAULT_TUNING, describe
from toneserve.model_repository.render import render_repository

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def repositories(models_root, tmp_path_factory):
    """runtime -> the rendered cpu repository (fp32)."""
    root = tmp_path_factory.mktemp("openvino-runner")
    models = with_openvino(models_root, root / "models")
    return {runtime: render_repository(describe(models, "fp32", DEFAULT_TUNING, runtime=runtime), "cpu",
                                       root / runtime)
            for runtime in ("onnxruntime", "openvino")}


def _emotion_requests(pb, rng):
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 12000)]
    return [pb.Request(wav=c[None], wav_lens=np.array([[len(c)]], np.int64)) for c in clips]


def _encoder_requests(pb, rng, feat_dim, query):
    feats = [rng.standard_normal((n, feat_dim)).astype(np.float32) for n in (40, 23, 31)]
    return [pb.Request(speech=f[None], speech_lengths=np.array([[len(f)]], np.int64),
                       language=np.array([[query[0]]], np.int64), textnorm=np.array([[query[1]]], np.int64))
            for f in feats]


@pytest.mark.parametrize("name", ["emotion2vec", "sensevoice_encoder"])
def test_openvino_f32_matches_onnx_runtime_and_batches_exactly(models_root, repositories, monkeypatch, name):
    ov_model, pb = load_rendered(monkeypatch, repositories["openvino"] / name)
    assert hasattr(ov_model, "compiled")  # the OpenVINO runner, not the ONNX Runtime one

    def make():  # the same requests each time
        if name == "emotion2vec":
            return _emotion_requests(pb, np.random.default_rng(1))
        assets = json.loads((models_root / "sensevoice" / "decode_assets.json").read_text())
        query = (assets["language_query_ids"]["auto"], assets["textnorm_query_ids"]["woitn"])
        feat_dim = int(ov_model.compiled.inputs[0].get_partial_shape()[2].get_length())
        return _encoder_requests(pb, np.random.default_rng(1), feat_dim, query)

    alone = [outputs(answers(ov_model, [r])[0]) for r in make()]
    batched = [outputs(r) for r in answers(ov_model, make())]
    ort_model, _ = load_rendered(monkeypatch, repositories["onnxruntime"] / name)
    reference = [outputs(r) for r in answers(ort_model, make())]
    for one, many, ref in zip(alone, batched, reference):
        assert one.keys() == ref.keys()
        for key in one:
            assert many[key].shape == one[key].shape == ref[key].shape, key
            np.testing.assert_allclose(many[key], one[key], atol=1e-5, err_msg=f"{name} {key}: batched vs alone")
            np.testing.assert_allclose(one[key], ref[key], atol=1e-4, err_msg=f"{name} {key}: OpenVINO vs ORT")
