"""Inputs the families share: the padded batches their variants are judged on, and small graphs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toneserve.export.artifacts import atomic_write_bytes
from toneserve.samples import speechlike


def padded_audio(seconds=(1.5, 2.5, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    """A realistic, mixed-length, padded batch of speech-like clips: (wav [B, S], wav_lens [B])."""
    clips = [speechlike(s, seed=i) for i, s in enumerate(seconds)]
    lens = np.array([len(c) for c in clips], np.int64)
    wav = np.zeros((len(clips), lens.max()), np.float32)
    for i, clip in enumerate(clips):
        wav[i, :len(clip)] = clip
    return wav, lens


def softmax_onnx(path: Path, classes: int) -> None:
    """A one-node ONNX graph [B, C] logits -> [B, C] probabilities."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)], "emotion_softmax",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])])
    # IR 9 loads in every ONNX Runtime we serve with (the NGC container's may be older than ours).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())
