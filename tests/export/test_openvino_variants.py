"""The openvino variant: its manifest entry, the gates that judge its precisions, the int8 IR, calibration."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from toneserve.export import openvino_variants as ovv
from toneserve.export.artifacts import sha256_file
from toneserve.export.families import get
from toneserve.samples import speechlike, wav_bytes

FAMILIES = ("emotion2vec", "sensevoice")


def _entry(models_root, family):
    return json.loads((models_root / family / "manifest.json").read_text())["variants"]["openvino"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_manifest_entry_has_the_schema_and_hashes_its_files(models_root, family):
    manifest = json.loads((models_root / family / "manifest.json").read_text())
    entry = manifest["variants"]["openvino"]
    assert entry["from"] == manifest["files"][get(family).graph]
    assert entry["runtime"] == "openvino" and entry["openvino_version"]
    xml, int8w_xml = ovv.ir_name(get(family)), ovv.ir_name(get(family), "int8w")
    assert set(entry["files"]) == {xml, xml.removesuffix(".xml") + ".bin",
                                   int8w_xml, int8w_xml.removesuffix(".xml") + ".bin"}
    for name, digest in entry["files"].items():
        assert sha256_file(models_root / family / name) == digest
    assert set(entry["precisions"]) == {"fp32", "bf16", "int8w", "int8w-bf16", "int8", "int8-bf16"} \
        == set(ovv.RECORDED)
    for precision in ("int8w", "int8w-bf16"):
        assert entry["precisions"][precision]["file"] == int8w_xml
    for precision in entry["precisions"].values():
        assert isinstance(precision["passed"], bool) and precision["gate"]["kind"]
    assert "parity" in entry["precisions"]["fp32"] and "cpu" in entry["precisions"]["bf16"]
    int8 = entry["precisions"]["int8"]
    assert int8["file"] == xml and int8["parity"] and "compile_config" in int8
    assert int8["recipe"] == ovv.QUANTIZE_RECIPE and entry["precisions"]["int8-bf16"]["file"] == xml
    assert int8["calibration"]["items"] == ovv.CALIBRATION_ITEMS and int8["calibration"]["seconds"] >= 0
    assert int8["calibration"]["sources"] == ["speechlike", None]


@pytest.mark.parametrize("family", FAMILIES)
def test_openvino_f32_passes_its_gate_on_the_tiny_models(models_root, family):
    fp32 = _entry(models_root, family)["precisions"]["fp32"]
    assert fp32["passed"], fp32["gate"]
    assert fp32["gate"]["kind"] == "fp32" and fp32["gate"]["measured_max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_the_int8_ir_runs_with_the_fp32_graphs_shapes(models_root, family):
    import openvino as ov

    from toneserve.export.variants import run_onnx

    fam, folder = get(family), models_root / family
    int8 = _entry(models_root, family)["precisions"]["int8"]
    feeds, _ = fam.parity_inputs(folder)
    reference = run_onnx(folder / fam.graph, feeds)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(folder / int8["file"])), "CPU", int8["compile_config"])
    outputs = ovv._run(compiled, feeds, reference)
    assert {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in reference.items()}
    assert all(np.isfinite(v).all() for v in outputs.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_int8_weights_ir_is_a_quarter_and_passes_its_gate_on_the_tiny_models(models_root, family):
    """int8 weights: every MatMul's weights in int8 but the output projection's, so the IR's weights are near a
    quarter of the fp32 graph's; its top-1 outputs agree with ONNX Runtime fp32 (the f32-activation gate, run
    on any CPU) and the entry records what it measured."""
    import openvino as ov

    fam, folder = get(family), models_root / family
    int8w = _entry(models_root, family)["precisions"]["int8w"]
    assert int8w["passed"], int8w["gate"]
    assert int8w["gate"]["measured_top1_agreement"] >= ovv.GATES[fam.gate_kind]["min_top1_agreement"]
    fp32_bytes = (folder / fam.graph).stat().st_size
    ir_bytes = (folder / int8w["file"]).with_suffix(".bin").stat().st_size
    assert ir_bytes < 0.5 * fp32_bytes, (ir_bytes, fp32_bytes)
    model = ov.Core().read_model(str(folder / int8w["file"]))
    int8_constants = [op for op in model.get_ordered_ops()
                      if op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.u8, ov.Type.i8)]
    assert int8_constants
    last_matmul = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"][-1]
    weights = last_matmul.input_value(1).get_node()  # a compressed one is a Convert of the int8 constant
    assert weights.get_type_name() == "Constant" and weights.get_element_type() == ov.Type.f32, \
        "the output projection keeps float weights"


def _weights(op):
    """The constant a layer's weights come from (through a compressed weight's Convert / Subtract / Multiply),
    or None for a layer of two activations (attention's)."""
    node = op.input_value(1).get_node()
    while node.get_type_name() in ("Convert", "Subtract", "Multiply"):
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


@pytest.mark.parametrize("family", FAMILIES)
def test_the_static_int8_ir_keeps_its_first_layer_float(models_root, family):
    """The layer that reads the input (emotion2vec+'s convolution over the waveform, SenseVoice's first
    projection) keeps float weights and is fed no quantized input; layers after it are quantized."""
    import openvino as ov

    fam, folder = get(family), models_root / family
    first = ovv.first_layer(ov.Core().read_model(str(folder / fam.graph)))
    int8 = ov.Core().read_model(str(folder / _entry(models_root, family)["precisions"]["int8"]["file"]))
    layers = [op for op in int8.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul") and _weights(op)]
    (layer,) = [op for op in layers if op.get_friendly_name() == first]
    assert layer.input_value(0).get_node().get_type_name() != "FakeQuantize"
    assert _weights(layer).get_element_type() == ov.Type.f32
    later = [op for op in layers[layers.index(layer) + 1:] if op.input_value(0).get_node().get_type_name() ==
             "FakeQuantize"]
    assert later and all(_weights(op).get_element_type() == ov.Type.i8 for op in later), "the layers after it are"


def test_an_entry_without_the_int8_weights_is_rebuilt(models_root):
    """An export made before int8 weights existed is not current: `export --variants openvino` rebuilds it."""
    folder = models_root / "emotion2vec"
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["variants"]["openvino"]
    assert ovv.is_current(folder, entry, entry["from"], None)
    older = {**entry, "precisions": {k: v for k, v in entry["precisions"].items() if not k.startswith("int8w")}}
    assert not ovv.is_current(folder, older, entry["from"], None)
    # an int8 IR quantized by another recipe (before its first layer stayed float) is rebuilt too
    other = {**entry, "precisions": {**entry["precisions"], "int8": {**entry["precisions"]["int8"], "recipe": None}}}
    assert not ovv.is_current(folder, other, entry["from"], None)


# ----------------------------------------------------------------------------------- the gates (unit)


def _classification(agreement, prob_diff):
    return {"logits": {"finite": True, "max_abs_diff": 0.1, "top1_agreement": agreement, "max_prob_diff": prob_diff}}


def _ctc(agreement, lens_exact=True):
    return {"ctc_logits": {"finite": True, "max_abs_diff": 1.0, "top1_agreement": agreement},
            "encoder_out_lens": {"exact": lens_exact, "mismatches": 0 if lens_exact else 1}}


@pytest.mark.parametrize("report,passed", [
    (_classification(1.0, 0.01), True),
    (_classification(1.0, 0.02), True),
    (_classification(2 / 3, 0.01), False),  # a clip changed label
    (_classification(1.0, 0.03), False),  # same labels, probabilities moved too far
    (_classification(1.0, None), False),  # not finite
])
def test_the_classification_gate(report, passed):
    ok, gate = ovv.judge("emotion2vec", report)
    assert ok is passed and gate["kind"] == "classification" and gate["max_prob_diff"] == 0.02


@pytest.mark.parametrize("report,passed", [
    (_ctc(0.99), True),
    (_ctc(0.97), True),
    (_ctc(0.96), False),
    (_ctc(0.99, lens_exact=False), False),  # the encoder's lengths must not change
])
def test_the_ctc_frames_gate(report, passed):
    ok, gate = ovv.judge("sensevoice", report, "bf16")
    assert ok is passed and gate["kind"] == "ctc_frames" and gate["min_top1_agreement"] == 0.97


def test_the_fp32_gate():
    assert ovv.judge("sensevoice", {"x": {"finite": True, "max_abs_diff": 5e-5}}, "fp32")[0]
    ok, gate = ovv.judge("sensevoice", {"x": {"finite": True, "max_abs_diff": 2e-4}}, "fp32")
    assert not ok and gate["measured_max_abs_diff"] == 2e-4
    assert not ovv.judge("emotion2vec", {"x": {"finite": False, "max_abs_diff": None}}, "fp32")[0]


def test_a_family_without_a_graph_has_no_gate():
    with pytest.raises(ValueError, match="no parity gate"):
        ovv.judge("silero_vad", _ctc(1.0))


# ------------------------------------------------------------------------------------------ calibration


def test_calibration_items_all_have_one_length(tmp_path):
    # NNCF stacks per-item statistics: ragged items fail, so user files are cut or padded too.
    (tmp_path / "short.wav").write_bytes(wav_bytes(speechlike(1.0, 8000, seed=1), 8000))
    (tmp_path / "long.wav").write_bytes(wav_bytes(speechlike(7.0, 16000, seed=2), 16000))
    clips, sources = ovv.calibration_clips(tmp_path, items=3, seconds=2.0)
    assert len(clips) == 5 and {len(c) for c in clips} == {32000}
    assert all(c.dtype == np.float32 for c in clips)
    assert sources == ["speechlike", str(tmp_path.resolve())]
    assert np.abs(clips[3]).max() > 0.01  # decoded audio, not silence


def test_an_unusable_calibration_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ovv.CalibrationError, match="does not exist"):
        ovv.user_clips(tmp_path / "missing")
    with pytest.raises(ovv.CalibrationError, match="holds no"):
        ovv.user_clips(tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(ovv.CalibrationError, match="no file could be decoded"):
        ovv.user_clips(tmp_path)


def test_an_unusable_calibration_folder_fails_before_the_export(tmp_path):
    from toneserve.export.build import export_models

    with pytest.raises(ovv.CalibrationError, match="does not exist"):
        export_models(tmp_path / "models", size="tiny", calibration=tmp_path / "missing")
    assert not (tmp_path / "models").exists()


def test_a_calibration_folder_is_used_and_recorded(models_root, tmp_path):
    from toneserve.export.build import build_variants

    folder = tmp_path / "emotion2vec"
    shutil.copytree(models_root / "emotion2vec", folder)
    audio = tmp_path / "calls"
    audio.mkdir()
    (audio / "a.wav").write_bytes(wav_bytes(speechlike(3.0, 16000, seed=5), 16000))
    manifest = build_variants(folder, get("emotion2vec"), ("openvino",), calibration=audio)
    calibration = manifest["variants"]["openvino"]["precisions"]["int8"]["calibration"]
    assert calibration["items"] == ovv.CALIBRATION_ITEMS + 1
    assert calibration["sources"] == ["speechlike", str(audio.resolve())]
    # The same folder again: current, not rebuilt; without it the entry is rebuilt from speech-like audio only.
    again = build_variants(folder, get("emotion2vec"), ("openvino",), calibration=audio)
    assert again["variants"]["openvino"] == manifest["variants"]["openvino"]
    plain = build_variants(folder, get("emotion2vec"), ("openvino",))
    assert plain["variants"]["openvino"]["precisions"]["int8"]["calibration"]["sources"] == ["speechlike", None]
