"""Derived model variants: int8 (CPU), fp16 (GPU), the parity report, TensorRT plan guards.

Everything here runs on CPU with ONNX Runtime; TensorRT is absent on this machine, so the plan
builder is tested for what it must do *before* and *instead of* building.

Measured on the tiny random-weight exports (seed 0; logits scale ~1.2 for emotion2vec, ~2.6
for SenseVoice's CTC logits), ORT 1.31 on x86 with AVX512-VNNI:

* int8 (MatMul only, QInt8 per-channel): emotion2vec logits max abs diff 0.011-0.014,
  embedding 0.011-0.016, top-1 1.0 (3 items); SenseVoice ctc_logits 0.046 (40 frames) to
  0.080 (2000 frames), mean 0.008-0.0095, top-1 0.96-0.97. Random weights make int8 top-1
  agreement lower than trained weights would (near-uniform logits: tiny shifts flip the
  argmax), so agreement is reported but only checked to be far above chance.
  Full size (measured once, not here): emotion2vec+ base (3 items <= 5 s) logits 0.016,
  embedding 0.036, top-1 1.0, 373 MB -> 118 MB; SenseVoiceSmall (3 items <= 300 frames)
  ctc_logits 0.095 (mean 0.014), top-1 0.954, 937 MB -> 240 MB.
* fp16 (float32 IO): emotion2vec logits 9e-4, embedding 1.5e-3 on 5 s items with a DC
  offset; SenseVoice 2.1e-3 (40 frames) .. 2.5e-3 (2000 frames), top-1 >= 0.998. The plain
  converter gave 0.014 / 0.063 (the 80 000-sample count is +inf in float16) and 0.020 at
  2000 frames (positions lose precision): the bounds below would catch both regressions.
  Full size: emotion2vec+ base logits 1.1e-3, embedding 5.5e-3 (373 -> 187 MB);
  SenseVoiceSmall 3.5e-3, top-1 1.0 (937 -> 470 MB).
"""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from toneserve.export import tensorrt_plan as TP
from toneserve.export import variants as V

VENV_PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
SR = 16000
QUANT_OPS_ALLOWED = {"DynamicQuantizeLinear", "MatMulInteger"}  # what MatMul-only dynamic int8 may add

# Bounds: measured values (module docstring) with margin.
INT8_E2V_MAX = 0.1
INT8_SV_MAX = 0.3
FP16_E2V_LOGITS_MAX = 5e-3
FP16_E2V_EMB_MAX = 1e-2
FP16_SV_MAX = 1e-2


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from toneserve.export import emotion2vec, sensevoice

    root = tmp_path_factory.mktemp("variants")
    emotion2vec.export_onnx(root / "e2v", preset="tiny")
    sensevoice.export_onnx(root / "sv", preset="tiny")
    return {"e2v": root / "e2v" / "model.onnx", "sv": root / "sv" / "encoder.onnx", "root": root}


@pytest.fixture(scope="module")
def int8(models) -> dict[str, Path]:
    out = {}
    for name in ("e2v", "sv"):
        out[name] = models["root"] / f"{name}_int8.onnx"
        V.quantize_int8(models[name], out[name])
    return out


@pytest.fixture(scope="module")
def fp16(models) -> dict[str, Path]:
    out = {}
    for name in ("e2v", "sv"):
        out[name] = models["root"] / f"{name}_fp16.onnx"
        V.convert_fp16(models[name], out[name])
    return out


def e2v_feeds(seconds: float = 5.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Three items, the longest over 65 504 samples (float16's max), with a DC offset (so a
    normalisation that loses the sample count shows), zero padded."""
    rng = np.random.default_rng(seed)
    S = int(SR * seconds)
    lens = [S, S // 3, S // 2 + 123]
    wav = np.zeros((3, S), np.float32)
    for i, n in enumerate(lens):
        t = np.arange(n) / SR
        wav[i, :n] = 0.9 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.05 * rng.standard_normal(n) + 0.01
    return {"wav": wav, "wav_lens": np.asarray(lens, np.int64)}


def sv_feeds(frames: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """CMVN-normalised-like features (unit normal), mixed lengths, mixed language/textnorm."""
    rng = np.random.default_rng(seed)
    return {
        "speech": rng.standard_normal((3, frames, 560)).astype(np.float32),
        "speech_lengths": np.asarray([frames, frames // 2, frames // 3], np.int64),
        "language": np.asarray([0, 3, 4], np.int64),
        "textnorm": np.asarray([15, 15, 14], np.int64),
    }


SV_KW = {"valid_lengths": {"ctc_logits": ("encoder_out_lens", 1)}, "top1_axis": {"ctc_logits": -1}}
E2V_KW = {"top1_axis": {"logits": -1}}


def op_counts(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def const_b_matmuls(path: Path) -> int:
    """MatMuls with a constant weight, plus Gemms (ORT's dynamic mode turns Gemm into MatMul)."""
    m = onnx.load(str(path))
    consts = {i.name for i in m.graph.initializer}
    consts |= {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    return sum(1 for n in m.graph.node
               if (n.op_type == "MatMul" and n.input[1] in consts) or n.op_type == "Gemm")


def io_types(path: Path) -> dict[str, int]:
    g = onnx.load(str(path)).graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output]}


# --------------------------------------------------------------------------------------------
# int8
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["e2v", "sv"])
def test_int8_quantises_only_matmuls(models, int8, name):
    src, q = op_counts(models[name]), op_counts(int8[name])
    quant_ops = {op for op in q if op in V.QUANT_OP_TYPES or op.startswith("QLinear")}
    assert "MatMulInteger" in quant_ops and "DynamicQuantizeLinear" in quant_ops
    assert quant_ops <= QUANT_OPS_ALLOWED, f"non-MatMul quantisation ops: {quant_ops - QUANT_OPS_ALLOWED}"
    # every constant-weight MatMul became MatMulInteger; convolutions stayed float
    assert q["MatMulInteger"] == const_b_matmuls(models[name])
    assert q["Conv"] == src["Conv"] and "ConvInteger" not in q
    assert int8[name].stat().st_size < models[name].stat().st_size
    assert io_types(int8[name]) == io_types(models[name])


def test_int8_parity_emotion2vec(models, int8):
    rep = V.parity_report(models["e2v"], int8["e2v"], e2v_feeds(), **E2V_KW)
    json.dumps(rep, allow_nan=False)
    for out in ("logits", "embedding"):
        assert rep[out]["finite"] and rep[out]["candidate_dtype"] == "float32"
        assert 0 < rep[out]["max_abs_diff"] < INT8_E2V_MAX, rep[out]
        assert rep[out]["mean_abs_diff"] <= rep[out]["max_abs_diff"]
    assert 0.0 <= rep["logits"]["top1_agreement"] <= 1.0
    assert rep["logits"]["top1_positions"] == 3


def test_int8_parity_sensevoice(models, int8):
    feeds = sv_feeds()
    rep = V.parity_report(models["sv"], int8["sv"], feeds, **SV_KW)
    json.dumps(rep, allow_nan=False)
    assert rep["encoder_out_lens"]["exact"] is True
    c = rep["ctc_logits"]
    assert c["finite"] and 0 < c["max_abs_diff"] < INT8_SV_MAX, c
    # valid positions only: lengths + 4 query frames, not the padded batch
    lens = c["valid_lengths"]["lengths"]
    assert lens == [int(n) + 4 for n in feeds["speech_lengths"]]
    assert c["top1_positions"] == sum(lens)
    # random weights: far above chance (1/320), not a quality claim
    assert 0.5 < c["top1_agreement"] <= 1.0


def test_parity_report_detects_a_broken_candidate(models, int8, tmp_path):
    """One weight matrix zeroed: the report must show a difference far beyond int8's."""
    m = onnx.load(str(models["e2v"]))
    inits = {i.name: i for i in m.graph.initializer}
    weights = [inits[n.input[1]] for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    victim = max(weights, key=lambda t: int(np.prod(t.dims)))
    victim.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(victim)), victim.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(m, str(broken))
    feeds = e2v_feeds(1.0)
    bad = V.parity_report(models["e2v"], broken, feeds, **E2V_KW)
    good = V.parity_report(models["e2v"], int8["e2v"], feeds, **E2V_KW)
    assert bad["embedding"]["max_abs_diff"] > 5 * good["embedding"]["max_abs_diff"]
    assert bad["embedding"]["max_abs_diff"] > INT8_E2V_MAX
    assert V.max_abs_diff(bad) > V.max_abs_diff(good)
    assert V.max_abs_diff(bad) > INT8_E2V_MAX >= V.max_abs_diff(good)


# --------------------------------------------------------------------------------------------
# fp16
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["e2v", "sv"])
def test_fp16_keeps_float32_io_and_halves_weights(models, fp16, name):
    assert io_types(fp16[name]) == io_types(models[name])
    m = onnx.load(str(fp16[name]))
    by_type = Counter()
    for t in m.graph.initializer:
        by_type[t.data_type] += int(np.prod(t.dims))
    assert by_type[onnx.TensorProto.FLOAT16] > 10 * by_type[onnx.TensorProto.FLOAT]
    assert fp16[name].stat().st_size < 0.7 * models[name].stat().st_size
    assert len({n.name for n in m.graph.node}) == len(m.graph.node)  # the converter's duplicate Casts are gone
    onnx.checker.check_model(m)  # includes topological order


def test_fp16_parity_emotion2vec_long_items(models, fp16):
    """5 s = 80 000 samples: the sample count and the sums stay float32 (a float16 count is
    +inf and the DC offset would never be removed)."""
    rep = V.parity_report(models["e2v"], fp16["e2v"], e2v_feeds(5.0), **E2V_KW)
    json.dumps(rep, allow_nan=False)
    assert rep["logits"]["candidate_dtype"] == "float32" and rep["embedding"]["candidate_dtype"] == "float32"
    assert rep["logits"]["max_abs_diff"] < FP16_E2V_LOGITS_MAX, rep["logits"]
    assert rep["embedding"]["max_abs_diff"] < FP16_E2V_EMB_MAX, rep["embedding"]
    assert rep["logits"]["top1_agreement"] == 1.0


def test_fp16_parity_sensevoice(models, fp16):
    rep = V.parity_report(models["sv"], fp16["sv"], sv_feeds(), **SV_KW)
    assert rep["encoder_out_lens"]["exact"] is True
    c = rep["ctc_logits"]
    assert c["candidate_dtype"] == "float32"
    assert c["max_abs_diff"] < FP16_SV_MAX, c
    assert c["top1_agreement"] > 0.95


def test_is_int8_quantized(models, int8, fp16):
    for name in ("e2v", "sv"):
        assert V.is_int8_quantized(int8[name]) is True
        assert V.is_int8_quantized(models[name]) is False
        assert V.is_int8_quantized(fp16[name]) is False


def test_variants_refuse_wrong_sources(int8, fp16, tmp_path):
    with pytest.raises(ValueError, match="already quantised"):
        V.quantize_int8(int8["e2v"], tmp_path / "q.onnx")
    with pytest.raises(ValueError, match="quantised"):
        V.convert_fp16(int8["e2v"], tmp_path / "h.onnx")
    with pytest.raises(ValueError, match="float16"):
        V.convert_fp16(fp16["e2v"], tmp_path / "h.onnx")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# The report on hand-made graphs: lengths, classes, integer outputs
# --------------------------------------------------------------------------------------------


def _padding_graphs(tmp_path: Path, pad_scale: float) -> tuple[Path, Path]:
    """reference: y = x, lens = l. candidate: y = x * w with w = 1 at t < 3 and ``pad_scale``
    beyond (x: [B, 5, C]), lens = l. With lengths <= 3 the valid positions agree exactly."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["B", 5, 4])
    l_in = helper.make_tensor_value_info("l", onnx.TensorProto.INT64, ["B"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["B", 5, 4])
    lens = helper.make_tensor_value_info("lens", onnx.TensorProto.INT64, ["B"])
    ref = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["l"], ["lens"])],
                            "ref", [x, l_in], [y, lens])
    w = np.ones((1, 5, 1), np.float32)
    w[:, 3:] = pad_scale
    cand = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"]), helper.make_node("Identity", ["l"], ["lens"])],
        "cand", [x, l_in], [y, lens], initializer=[numpy_helper.from_array(w, "w")])
    paths = []
    for g, name in ((ref, "ref.onnx"), (cand, "cand.onnx")):
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(tmp_path / name))
        paths.append(tmp_path / name)
    return paths[0], paths[1]


def test_parity_report_ignores_padding(tmp_path):
    ref, cand = _padding_graphs(tmp_path, pad_scale=-5.0)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 5, 4)).astype(np.float32) + 1.0, "l": np.asarray([3, 2], np.int64)}

    masked = V.parity_report(ref, cand, feeds, valid_lengths={"y": ("lens", 1)}, top1_axis={"y": -1})
    assert masked["y"]["max_abs_diff"] == 0.0 and masked["y"]["mean_abs_diff"] == 0.0
    assert masked["y"]["valid_elements"] == (3 + 2) * 4
    assert masked["y"]["top1_positions"] == 5 and masked["y"]["top1_agreement"] == 1.0
    assert masked["lens"] == {"dtype": "int64", "candidate_dtype": "int64", "shape": [2], "exact": True, "mismatches": 0}
    assert V.max_abs_diff(masked) == 0.0

    unmasked = V.parity_report(ref, cand, feeds, top1_axis={"y": -1})
    assert unmasked["y"]["max_abs_diff"] > 1.0
    assert unmasked["y"]["top1_positions"] == 10 and unmasked["y"]["top1_agreement"] < 1.0

    # lengths may also come from an input (here "l": same values)
    from_feed = V.parity_report(ref, cand, feeds, valid_lengths={"y": ("l", 1)})
    assert from_feed["y"]["max_abs_diff"] == 0.0

    # padded positions differing in any way, even NaN, do not matter when masked
    (tmp_path / "nan").mkdir()
    ref2, cand2 = _padding_graphs(tmp_path / "nan", pad_scale=float("nan"))
    rep = V.parity_report(ref2, cand2, feeds, valid_lengths={"y": ("lens", 1)})
    assert rep["y"]["finite"] and rep["y"]["max_abs_diff"] == 0.0
    rep = V.parity_report(ref2, cand2, feeds)
    assert rep["y"]["finite"] is False and rep["y"]["max_abs_diff"] is None
    json.dumps(rep, allow_nan=False)
    assert V.max_abs_diff(rep) == float("inf")


def test_compare_outputs_integer_mismatch_and_errors():
    ref = {"y": np.zeros((2, 3), np.float32), "n": np.asarray([3, 1], np.int64)}
    rep = V.compare_outputs(ref, {"y": ref["y"], "n": np.asarray([3, 2], np.int64)})
    assert rep["n"]["exact"] is False and rep["n"]["mismatches"] == 1
    assert V.max_abs_diff(rep) == float("inf")
    with pytest.raises(ValueError, match="shape"):
        V.compare_outputs(ref, {"y": np.zeros((2, 4), np.float32), "n": ref["n"]})
    with pytest.raises(ValueError, match="lacks"):
        V.compare_outputs(ref, {"y": ref["y"]})
    with pytest.raises(ValueError, match="batch axis"):
        V.compare_outputs(ref, ref, valid_lengths={"y": ("n", 0)})


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [V.quantize_int8, V.convert_fp16], ids=["int8", "fp16"])
def test_failed_conversion_leaves_no_dst_and_no_temp_files(tmp_path, writer):
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    src.write_bytes(b"this is not an ONNX model \x00\x01\x02" * 100)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        writer(src, out / "model_variant.onnx")
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in src.parent.iterdir()) == ["model.onnx"]


def test_quantiser_failure_midway_keeps_previous_dst(models, tmp_path, monkeypatch):
    """The quantiser has written part of its output when it fails: the previous dst stays
    byte-identical and the staging folder is gone."""
    import onnxruntime.quantization as q

    dst = tmp_path / "model_int8.onnx"
    dst.write_bytes(b"previous good file")

    def half_written(model, output, **kwargs):
        Path(output).write_bytes(b"\x08\x07partial")
        raise RuntimeError("quantiser crashed")

    monkeypatch.setattr(q, "quantize_dynamic", half_written)
    with pytest.raises(RuntimeError, match="crashed"):
        V.quantize_int8(models["e2v"], dst)
    assert dst.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.onnx"]


# --------------------------------------------------------------------------------------------
# TensorRT plans (no TensorRT here)
# --------------------------------------------------------------------------------------------

needs_no_tensorrt = pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorrt") is not None,
    reason="TensorRT is installed: these tests check the behaviour without it")

# 0.5 s, 10 s and 30 s of 16 kHz audio at batch 1, 4 and 8.
E2V_PROFILES = {"wav": ((1, 8000), (4, 160000), (8, 480000)), "wav_lens": ((1,), (4,), (8,))}


def test_parse_profile():
    assert TP.parse_profile("wav:1x8000:4x160000:8x480000") == ("wav", ((1, 8000), (4, 160000), (8, 480000)))
    assert TP.parse_profile("wav_lens:1:4:8") == ("wav_lens", ((1,), (4,), (8,)))
    for bad in ("wav:1x8000:4x160000", "wav:8x8000:4x160000:8x480000", "wav:1xa:1x2:1x3", "wav:1x8000:4x16:8x480000"):
        with pytest.raises(ValueError):
            TP.parse_profile(bad)


def test_build_plan_refuses_int8_before_looking_for_tensorrt(int8, tmp_path, monkeypatch):
    def must_not_run():
        raise AssertionError("looked for TensorRT before refusing the int8 graph")

    monkeypatch.setattr(TP, "require_tensorrt", must_not_run)
    with pytest.raises(ValueError, match=r"int8.*float32 \(or fp16\) ONNX"):
        TP.build_plan(int8["e2v"], tmp_path / "model.plan", E2V_PROFILES)
    assert list(tmp_path.iterdir()) == []


def test_build_plan_checks_profiles_before_tensorrt(models, tmp_path, monkeypatch):
    monkeypatch.setattr(TP, "require_tensorrt", lambda: (_ for _ in ()).throw(AssertionError("too early")))
    with pytest.raises(ValueError, match=r"\['wav_lens'\] have dynamic dimensions but no optimisation profile"):
        TP.build_plan(models["e2v"], tmp_path / "m.plan", {"wav": E2V_PROFILES["wav"]})
    with pytest.raises(ValueError, match="unknown inputs"):
        TP.build_plan(models["e2v"], tmp_path / "m.plan", {**E2V_PROFILES, "nope": ((1,), (1,), (1,))})
    with pytest.raises(ValueError, match="rank"):
        TP.build_plan(models["e2v"], tmp_path / "m.plan", {**E2V_PROFILES, "wav_lens": ((1, 1), (1, 1), (1, 1))})
    sv_profiles = {
        "speech": ((1, 10, 560), (4, 200, 560), (8, 600, 560)),
        "speech_lengths": ((1,), (4,), (8,)), "language": ((1,), (4,), (8,)), "textnorm": ((1,), (4,), (8,)),
    }
    with pytest.raises(ValueError, match="fixed at 560"):
        TP.build_plan(models["sv"], tmp_path / "m.plan",
                      {**sv_profiles, "speech": ((1, 10, 80), (4, 200, 80), (8, 600, 80))})
    with pytest.raises(ValueError, match="outside its profile"):
        TP.build_plan(models["e2v"], tmp_path / "m.plan", E2V_PROFILES,
                      parity_feeds={"wav": np.zeros((9, 8000), np.float32), "wav_lens": np.full(9, 8000, np.int64)})
    assert list(tmp_path.iterdir()) == []


@needs_no_tensorrt
def test_build_plan_without_tensorrt_raises_unavailable(models, tmp_path):
    plan = tmp_path / "plans" / "model.plan"
    with pytest.raises(TP.TensorRTUnavailable, match="tensorrt.*target GPU host.*tritonserver container"):
        TP.build_plan(models["e2v"], plan, E2V_PROFILES, parity_feeds=e2v_feeds(1.0))
    assert isinstance(TP.TensorRTUnavailable("x"), RuntimeError)
    assert not plan.parent.exists() or list(plan.parent.iterdir()) == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(VENV_PYTHON), "-m", "toneserve.export.tensorrt_plan", *args],
                          capture_output=True, text=True, timeout=120, env=env)


@needs_no_tensorrt
def test_cli_exits_2_without_tensorrt(models, int8, tmp_path):
    plan = tmp_path / "model.plan"
    r = _cli(str(models["e2v"]), str(plan), "--profile", "wav:1x8000:4x160000:8x480000",
             "--profile", "wav_lens:1:4:8")
    assert r.returncode == 2, r.stderr
    assert "TensorRT is not available" in r.stderr and "tritonserver container" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not plan.exists()
    # the int8 variant is refused before that, with its own message
    r = _cli(str(int8["e2v"]), str(plan), "--profile", "wav:1x8000:4x160000:8x480000", "--profile", "wav_lens:1:4:8")
    assert r.returncode == 1 and "int8" in r.stderr and "float32" in r.stderr


def test_modules_import_without_torch_tensorrt_or_polygraphy():
    code = ("import sys, toneserve.export.variants, toneserve.export.tensorrt_plan; "
            "bad = [m for m in ('torch', 'tensorrt', 'polygraphy', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([str(VENV_PYTHON), "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
