"""The renderer's checks on a set of model specs, without any exported model."""
from __future__ import annotations

import pytest

from toneserve.model_repository.render import validate
from toneserve.model_repository.spec import Batching, Ensemble, OnnxModel, Step, Tensor


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
