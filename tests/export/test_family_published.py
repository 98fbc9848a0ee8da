"""Folders in the published hub layouts (the real config.yaml and text files, random weights stored the
way the published model.pt stores them) load as FunASR's own AutoModel loads them, and export."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.export.emotion2vec_reference import funasr_reference
from toneserve.export.check import check
from toneserve.export.errors import CheckpointRefused
from toneserve.export.families import get
from toneserve.export.family import check_manifest
from toneserve.export.variants import run_onnx
from toneserve.samples import speechlike


def _automodel(folder):
    from funasr import AutoModel

    threads = torch.get_num_threads()
    try:
        model, _ = AutoModel.build_model(model=str(folder), device="cpu", disable_update=True, ncpu=threads)
    finally:
        torch.set_num_threads(threads)
    return model


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0 for k in sa)


@pytest.fixture(scope="module")
def loaded_emotion2vec(published_emotion2vec):
    return get("emotion2vec").load(published_emotion2vec)


@pytest.mark.slow
def test_published_emotion2vec_loads_every_tensor_as_automodel_does(published_emotion2vec, loaded_emotion2vec):
    loaded = loaded_emotion2vec
    assert loaded.preset == "large" and loaded.load["scope_map"][0] == "d2v_model."
    assert loaded.load["tensors_loaded"] == len(loaded.model.state_dict()) and not loaded.load["left_at_init"]
    assert _max_difference(loaded.model, _automodel(published_emotion2vec)) == 0.0
    # ...and the weights are the checkpoint's, not some initialisation both happen to share.
    state = torch.load(published_emotion2vec / "model.pt", weights_only=True)["model"]
    key = next(k for k in loaded.model.state_dict() if not k.startswith("proj."))
    assert torch.equal(loaded.model.state_dict()[key], state["d2v_model." + key])


@pytest.mark.slow
def test_large_preset_is_the_published_config(loaded_emotion2vec):
    built = get("emotion2vec").build_random("large")
    mine = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    assert mine == {k: tuple(v.shape) for k, v in loaded_emotion2vec.model.state_dict().items()}


@pytest.mark.slow
def test_published_sensevoice_loads_every_tensor_as_automodel_does(published_sensevoice):
    loaded = get("sensevoice").load(published_sensevoice)
    assert loaded.preset == "small" and loaded.load["tensors_loaded"] == len(loaded.model.state_dict())
    assert _max_difference(loaded.model, _automodel(published_sensevoice)) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("family", ["emotion2vec", "sensevoice"])
def test_published_folders_export(tmp_path, request, family):
    folder = request.getfixturevalue(f"published_{family}")
    from toneserve.export.sources import export_from_source

    out = tmp_path / family
    manifest = export_from_source(family, str(folder), out)
    check_manifest(manifest)
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert manifest["source"]["kind"] == "local" and manifest["weights"]["tensors_loaded"] > 0
    parity = manifest["parity"]
    assert all(parity["max_abs_err"][k] <= parity["gates"][k] for k in parity["gates"]), parity
    if family == "emotion2vec":
        assert manifest["preset"] == "large" and manifest["serving"]["embedding_dim"] == 1024
        assert any("~300M" in note for note in manifest["unconfirmed"])
        # A padded batch through the graph equals FunASR's own unpadded inference of each clip.
        loaded = request.getfixturevalue("loaded_emotion2vec")
        clips = [speechlike(1.3, seed=3), speechlike(0.7, seed=4)]
        lens = np.array([len(c) for c in clips], np.int64)
        wav = np.zeros((len(clips), lens.max()), np.float32)
        for i, clip in enumerate(clips):
            wav[i, :len(clip)] = clip
        got = run_onnx(out / "model.onnx", {"wav": wav, "wav_lens": lens})
        for i, clip in enumerate(clips):
            logits, embedding = funasr_reference(loaded.model, clip)
            assert np.abs(got["logits"][i] - logits).max() < 1e-4
            assert np.abs(got["embedding"][i] - embedding).max() < 1e-4
    else:
        assert manifest["preset"] == "small" and manifest["serving"]["vocab_size"] == 25055
        assert manifest["serving"]["tokenizer_origin"] == "model" and "dither" in manifest["notes"]


@pytest.mark.slow
def test_check_describes_the_published_folders(published_emotion2vec, published_sensevoice):
    for folder, family, preset in ((published_emotion2vec, "emotion2vec", "large"),
                                   (published_sensevoice, "sensevoice", "small")):
        report = check(str(folder))
        assert report.loads, report
        text = str(report)
        assert f"({family})" in text and f"preset: {preset}" in text and "loads: yes" in text
        assert "parameters:" in text


# ------------------------------------------------------------------------------------------- broken folders


@pytest.fixture
def tiny_e2v(tmp_path):
    fam = get("emotion2vec")
    return fam.save_layout(fam.build_random("tiny", seed=5), tmp_path / "e2v")


def _line(report, key: str) -> str:
    lines = [line for line in report.lines if line.startswith(key + ":")]
    assert len(lines) == 1, report
    return lines[0]


def test_check_takes_the_bare_names_export_takes(monkeypatch, tmp_path):
    # `--emotion2vec emotion2vec_plus_large` exports; `--check emotion2vec_plus_large` asks the same hub
    from toneserve.export import hub
    from toneserve.export.errors import SourceUnavailable

    asked = []

    def fetch(which, ident, **kwargs):
        asked.append((which, ident, kwargs.get("revision")))
        raise SourceUnavailable("offline")
    monkeypatch.setattr(hub, "fetch", fetch)
    monkeypatch.chdir(tmp_path)
    report = check("emotion2vec_plus_large", revision="v2")
    assert asked == [("ms", "iic/emotion2vec_plus_large", "v2")], report
    assert "iic/emotion2vec_plus_large" in _line(report, "hub") and not report.loads


def test_check_says_a_revision_pins_no_folder_or_random_weights(tiny_e2v):
    # export refuses --revision with these sources; --check must not seem to have pinned them
    for spec in ("random:tiny", str(tiny_e2v)):
        assert "pins a hub id" in _line(check(spec, revision="v2"), "revision")
        assert not [line for line in check(spec).lines if line.startswith("revision:")]


def test_check_names_a_missing_file(tiny_e2v):
    (tiny_e2v / "tokens.txt").unlink()
    report = check(str(tiny_e2v))
    assert not report.loads
    assert "tokens.txt" in _line(report, "missing") and _line(report, "loads") == "loads: no (files missing)"


def test_check_names_a_config_of_another_family(tiny_e2v, tmp_path):
    sv = get("sensevoice")
    sv_dir = sv.save_layout(sv.build_random("tiny"), tmp_path / "sv")
    shutil.copyfile(sv_dir / "config.yaml", tiny_e2v / "config.yaml")
    report = check(str(tiny_e2v))
    assert not report.loads
    assert "a config of another family" in _line(report, "config") and "SenseVoiceSmall" in _line(report, "config")
    hinted = check(f"emotion2vec={tiny_e2v}")
    assert "a sensevoice config, not a emotion2vec one" in _line(hinted, "config")


def test_check_names_a_truncated_checkpoint(tiny_e2v):
    data = (tiny_e2v / "model.pt").read_bytes()
    (tiny_e2v / "model.pt").write_bytes(data[: len(data) // 2])
    report = check(str(tiny_e2v))
    assert not report.loads
    line = _line(report, "loads")
    assert line.startswith("loads: no:") and "truncated" in line and "model.pt" in line


def test_checkpoint_that_weights_only_refuses_needs_the_opt_in(tiny_e2v):
    import argparse

    state = torch.load(tiny_e2v / "model.pt", weights_only=True)
    torch.save({"model": state, "args": argparse.Namespace(lr=0.1)}, tiny_e2v / "model.pt")
    fam = get("emotion2vec")
    with pytest.raises(CheckpointRefused) as e:
        fam.load(tiny_e2v)
    assert "argparse.Namespace" in str(e.value) and "--trust-checkpoint" in str(e.value)
    assert e.value.type_name == "argparse.Namespace"
    assert "argparse.Namespace" in _line(check(str(tiny_e2v)), "loads")
    loaded = fam.load(tiny_e2v, trust_checkpoint=True)  # the user trusts this folder
    assert loaded.load["full_load"] and loaded.load["tensors_loaded"] == len(state)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())


def test_silero_vad_is_a_family_that_ships_in_its_wheel(tmp_path):
    from toneserve.export.families.silero_vad import wheel_graph

    fam = get("silero_vad")
    manifest = fam.export(tmp_path / "vad")
    check_manifest(manifest)
    assert manifest["weights_origin"] == "package" and manifest["parity"]["max_abs_err"] == {"bytes_differ": 0.0}
    assert (tmp_path / "vad" / "silero_vad.onnx").read_bytes() == wheel_graph().read_bytes()
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "vad" / "silero_vad.onnx"), providers=["CPUExecutionProvider"])
    declared = manifest["graphs"]["silero_vad.onnx"]
    assert [i.name for i in session.get_inputs()] == [d["name"] for d in declared["inputs"]]
    assert [o.name for o in session.get_outputs()] == [d["name"] for d in declared["outputs"]]
    with pytest.raises(ValueError, match="wheel"):
        fam.build_random("wheel")
