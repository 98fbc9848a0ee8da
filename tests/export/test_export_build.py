"""`toneserve export` orchestration: sources with fallback, reuse of current exports, variants in manifests."""
from __future__ import annotations

import json
import shutil

import pytest

from toneserve.export.build import build_variants, export_family, export_models, is_current, variant_file
from toneserve.export.families import get
from toneserve.export.sources import Source, SourceUnavailable, parse_source
from toneserve.model_repository.catalog import describe
from toneserve.triton import free_port


@pytest.fixture
def no_hub(monkeypatch):
    # A closed local port: the hub probe fails at once, and never downloads on a machine that reaches the hub.
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MODELSCOPE_CACHE", "/nonexistent-toneserve-test-cache")


def test_manifests_record_source_variants_and_parity(models_root):
    for family in ("emotion2vec", "sensevoice"):
        manifest = json.loads((models_root / family / "manifest.json").read_text())
        assert manifest["source"] == {"kind": "random", "ref": "tiny"} and manifest["weights_origin"] == "random"
        for variant in ("int8", "fp16"):
            entry = manifest["variants"][variant]
            (name,) = entry["files"]
            assert name == variant_file(get(family), variant) and (models_root / family / name).is_file()
            assert entry["from"] == manifest["files"][get(family).graph]
            report = entry["parity_vs_fp32"]
            assert all(v.get("finite", True) for v in report.values())
            assert any("top1_agreement" in v for v in report.values())
            # judged by the family's gate, as OpenVINO's precisions are
            gate = entry["gate"]
            assert gate["kind"] == get(family).gate_kind and isinstance(entry["passed"], bool)
            assert entry["passed"] == (gate["measured_top1_agreement"] >= gate["min_top1_agreement"]
                                       and gate.get("measured_max_prob_diff", 0) <= gate.get("max_prob_diff", 1))


def test_current_exports_are_reused_and_tampered_ones_rebuilt(tmp_path):
    root = export_models(tmp_path, size="tiny", variants=())
    model = root / "emotion2vec" / "model.onnx"
    first = model.stat().st_mtime_ns
    export_models(tmp_path, size="tiny", variants=())
    assert model.stat().st_mtime_ns == first  # reused
    assert is_current(root / "emotion2vec", Source("random", "tiny"), seed=0)
    assert not is_current(root / "emotion2vec", Source("random", "tiny"), seed=1)
    model.write_bytes(model.read_bytes()[:-10])  # a damaged file is never trusted
    assert not is_current(root / "emotion2vec", Source("random", "tiny"), seed=0)
    export_models(tmp_path, size="tiny", variants=())
    assert is_current(root / "emotion2vec", Source("random", "tiny"), seed=0)


def test_a_variant_recorded_before_its_gate_is_judged_again(models_root, tmp_path):
    folder = tmp_path / "emotion2vec"
    shutil.copytree(models_root / "emotion2vec", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["variants"]["int8"]["gate"], manifest["variants"]["int8"]["passed"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    entry = build_variants(folder, get("emotion2vec"), ("int8",))["variants"]["int8"]
    assert entry["gate"]["kind"] == "classification" and isinstance(entry["passed"], bool)
    built = (folder / "model.int8.onnx").stat().st_mtime_ns
    assert build_variants(folder, get("emotion2vec"), ("int8",))["variants"]["int8"] == entry  # now current
    assert (folder / "model.int8.onnx").stat().st_mtime_ns == built


def test_unreachable_hub_fails_fast_or_falls_back_loudly(tmp_path, no_hub, capsys):
    hub = parse_source("iic/emotion2vec_plus_base", "emotion2vec")
    with pytest.raises(SourceUnavailable, match="iic/emotion2vec_plus_base"):
        export_family("emotion2vec", tmp_path / "e", hub, None, seed=0, force=False)
    assert not (tmp_path / "e" / "model.onnx").exists()
    manifest = export_family("emotion2vec", tmp_path / "e", hub, Source("random", "tiny"), seed=0, force=False)
    assert manifest["weights_origin"] == "random"
    assert "FALLING BACK TO RANDOM WEIGHTS" in capsys.readouterr().err


def test_variants_can_be_served(models_root):
    graphs = {m.name: m.onnx_file.name for m in describe(models_root, "int8") if hasattr(m, "onnx_file")}
    # int8: OpenVINO's static int8 IR where its gate passed on these tiny random weights, else ONNX Runtime's
    # dynamic int8 graph
    for name, family, ort_graph in (("emotion2vec", "emotion2vec", "model.int8.onnx"),
                                    ("sensevoice_encoder", "sensevoice", "encoder.int8.onnx")):
        manifest = json.loads((models_root / family / "manifest.json").read_text())
        static = manifest["variants"]["openvino"]["precisions"]["int8"]
        assert graphs[name] == (static["file"] if static["passed"] else ort_graph), name
    assert graphs["sensevoice_frontend"] == "frontend.onnx"  # fbank stays fp32
    ensembles = {m.name: m.parameters["precision"] for m in describe(models_root, "fp16") if hasattr(m, "steps")}
    # The speaker model is light (like the VAD and the fbank frontend): fp32 whatever the heavy models get; the
    # text-sentiment classifier is heavy (135 M parameters at base) and gets the requested precision.
    assert ensembles == {"emotion": "fp16", "asr": "fp16", "speaker": "fp32", "text_sentiment": "fp16"}


def test_bad_source_specs_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export_models(tmp_path, size="tiny", sources={"sensevoice": "./no/such/folder"})
    with pytest.raises(ValueError, match="not a sensevoice"):
        export_models(tmp_path, size="tiny", sources={"sensevoice": "iic/emotion2vec_plus_base"})
    assert not any(tmp_path.iterdir())


def test_a_revision_with_no_hub_id_given_is_refused(tmp_path, monkeypatch):
    # --revision pins the ids given; with none given it would pin nothing, silently
    def no_work(*args, **kwargs):
        raise AssertionError("the export started")
    monkeypatch.setattr("toneserve.export.build.export_family", no_work)
    with pytest.raises(ValueError, match="--revision"):
        export_models(tmp_path, size="base", revision="v2.0.4")
    with pytest.raises(ValueError, match="--revision"):
        export_models(tmp_path, size="base", sources={"emotion2vec": None, "sensevoice": None}, revision="v2.0.4")


def test_a_bf16_request_takes_each_heavy_models_own_order(models_root, tmp_path):
    """Every OpenVINO precision marked passed: emotion2vec+ gets static int8 in bf16, the encoder static int8 in f32,
    the text classifier int8 weights in bf16 (catalog's orders per model)."""
    root = tmp_path / "models"
    for source in (p for p in models_root.iterdir() if (p / "manifest.json").is_file()):
        (root / source.name).mkdir(parents=True)
        for path in source.iterdir():
            if path.name != "manifest.json":
                (root / source.name / path.name).symlink_to(path)
        manifest = json.loads((source / "manifest.json").read_text())
        for entry in manifest.get("variants", {}).get("openvino", {}).get("precisions", {}).values():
            entry["passed"] = True
        (root / source.name / "manifest.json").write_text(json.dumps(manifest))
    got = {m.name: m.parameters.get("precision") for m in describe(root, "bf16", cpu=("FP32", "BF16", "INT8"))
           if hasattr(m, "steps")}
    assert (got["emotion"], got["asr"], got["text_sentiment"]) == ("int8-bf16", "int8", "int8w-bf16")
