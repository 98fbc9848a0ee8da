"""The precision measurement tool (loadtest/openvino_precisions.py) on the tiny models: each precision compiles
from the graph it is served from and computes the family's workload; a missing graph is a clear error."""
from __future__ import annotations

import json

import pytest

from toneserve.loadtest import openvino_precisions as op


@pytest.mark.parametrize("family, precision, graph", [
    ("emotion2vec", "int8w-bf16", "model.openvino-int8w.xml"),
    ("sensevoice", "fp32", "encoder.onnx"),
    ("text_sentiment", "int8w", "model.openvino-int8w.xml"),
    ("sensevoice", "onnxruntime-int8", "encoder.int8.onnx"),  # ONNX Runtime's dynamic int8, the encoder's candidate
])
def test_a_precision_is_measured_on_its_served_graph(models_root, family, precision, graph):
    result = op.measure(family, models_root / family, precision, batch=2, repeat=2)
    assert result["graph"] == graph and result["batch"] == 2
    assert len(result["pass_s_all"]) == 2 and all(s > 0 for s in result["pass_s_all"])
    after = result["after_passes"]
    assert after["rss"] >= after["anon"] > 0 and after["rss"] >= after["file"] >= 0
    assert isinstance(result["gate_passed"], bool)
    assert precision in op.line(result)


def test_the_workloads_are_the_served_shapes(models_root):
    audio = op.workload("emotion2vec", models_root / "emotion2vec")
    assert len(audio) == op.ITEMS and {item["wav"].shape for item in audio} == {(1, 80000)}
    text = op._batches(op.workload("text_sentiment", models_root / "text_sentiment", 8), 3, 8)
    assert [b["input_ids"].shape for b in text] == [(3, 24), (3, 24), (2, 24), (3, 64), (3, 64), (2, 64)]


def test_a_missing_graph_is_a_clear_error(models_root, tmp_path):
    manifest = json.loads((models_root / "emotion2vec" / "manifest.json").read_text())
    manifest["variants"].pop("openvino", None)
    with pytest.raises(SystemExit, match="no openvino int8w graph"):
        op.graph_of(tmp_path, manifest, "int8w")
