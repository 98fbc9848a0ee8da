"""Rendered configs: valid ModelConfig protobufs for both profiles, consistent ensembles."""
from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toneserve.model_repository.catalog import describe
from toneserve.model_repository.render import PROFILES, model_config, render_repository, validate
from toneserve.model_repository.spec import Batching, Ensemble, OnnxModel, Step, Tensor


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_config_parses_as_a_model_config(models_root, tmp_path, profile):
    repo = render_repository(describe(models_root), profile, tmp_path / profile)
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert {c.parent.name for c in configs} == {"emotion", "emotion2vec", "emotion_softmax", "asr",
                                                "sensevoice_frontend", "sensevoice_encoder", "sensevoice_decoder"}
    for path in configs:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        assert config.name == path.parent.name
        if config.platform != "ensemble":
            assert config.dynamic_batching.max_queue_delay_microseconds > 0
            assert (path.parent / "1" / "model.py").is_file() or (path.parent / "1" / "model.onnx").is_file()
        assert not any(p.is_symlink() for p in path.parent.rglob("*"))


def test_profiles_differ_where_they_should(models_root):
    models = {m.name: m for m in describe(models_root)}
    cpu, gpu = model_config(models["emotion2vec"], "cpu"), model_config(models["emotion2vec"], "gpu")
    assert cpu.backend == "python" and cpu.input[0].allow_ragged_batch
    assert gpu.backend == "onnxruntime" and not gpu.input[0].allow_ragged_batch
    assert gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert model_config(models["sensevoice_decoder"], "gpu").backend == "python"
    assert model_config(models["asr"], "gpu") == model_config(models["asr"], "cpu")


def test_ensemble_consistency_is_checked():
    onnx = OnnxModel(name="m", onnx_file=None, batching=Batching(max_batch_size=4),
                     inputs=(Tensor("x", "float32", (-1,)),), outputs=(Tensor("y", "float32", (-1,)),))
    too_big = Ensemble(name="e", max_batch_size=8, inputs=onnx.inputs, outputs=onnx.outputs,
                       steps=(Step("m", {"x": "x"}, {"y": "y"}),))
    with pytest.raises(ValueError, match="exceeds"):
        validate([onnx, too_big])
    unknown = Ensemble(name="e", max_batch_size=4, inputs=onnx.inputs, outputs=onnx.outputs,
                       steps=(Step("nope", {"x": "x"}, {"y": "y"}),))
    with pytest.raises(ValueError, match="unknown model"):
        validate([onnx, unknown])
