"""emotion2vec+ exporter: padded batches equal unbatched FunASR inference, in torch and in ONNX."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.export.emotion2vec_reference import funasr_reference
from toneserve.export.family import check_manifest
from toneserve.export.variants import run_onnx

e2v = pytest.importorskip("toneserve.export.emotion2vec")

SR = 16000
# 0.5 s .. 3 s, deliberately not multiples of the 320-sample hop.
LENGTHS = [8000, 48000, 23457, 31999]
TOL_BATCH = 1e-5  # padded batch vs unbatched FunASR (torch)
TOL_ONNX = 1e-4  # ONNX Runtime vs torch


def make_signals(lengths, seed=1234):
    """Noise + two sines per utterance, different pitch and length; zero padded to max length."""
    rng = np.random.default_rng(seed)
    S = max(lengths)
    wav = np.zeros((len(lengths), S), dtype=np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        f0 = rng.uniform(90, 300)
        amp = rng.uniform(0.05, 0.8)
        sig = amp * (np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 2.7 * f0 * t + 1.0))
        wav[i, :n] = sig + rng.uniform(0.01, 0.1) * rng.standard_normal(n) + rng.uniform(-0.05, 0.05)
    # Non-zero garbage in the padding must not matter either.
    for i, n in enumerate(lengths):
        wav[i, n:] = rng.standard_normal(S - n).astype(np.float32)
    return wav, np.asarray(lengths, dtype=np.int64)


def references(model, wav, lens):
    out = [funasr_reference(model, wav[i, :n]) for i, n in enumerate(lens)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def max_err(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def tiny():
    return e2v.build_model("tiny", seed=0)


@pytest.fixture(scope="module")
def signals():
    return make_signals(LENGTHS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2v_tiny")
    manifest = e2v.export_onnx(out, preset="tiny", seed=0)
    return out, manifest


# ---------------------------------------------------------------------------------- labels


def test_tokens_file_real_format_and_labels(exported, tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_bytes((exported[0] / "tokens.txt").read_bytes())  # what a random-weight export writes
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "生气/angry" and text.splitlines()[-1] == "<unk>"
    assert e2v.read_labels(path) == [
        "angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
    # FunASR's own tokenizer reads the same token list from it.
    from funasr.tokenizer.char_tokenizer import CharTokenizer

    assert CharTokenizer(token_list=str(path)).token_list == e2v.read_tokens(path)
    # A trailing newline (hand-edited file) reads the same.
    path.write_text(text + "\n", encoding="utf-8")
    assert e2v.read_labels(path) == list(e2v.EXPECTED_LABELS)


# ---------------------------------------------------------------------------------- model


def test_build_model_is_funasr_class_and_deterministic(tiny):
    from funasr.register import tables

    assert type(tiny) is tables.model_classes.get("Emotion2vec")
    assert not tiny.training
    assert tiny.proj.out_features == 9
    again = e2v.build_model("tiny", seed=0)
    other = e2v.build_model("tiny", seed=1)
    sd, sd2, sd3 = tiny.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert any(not torch.equal(sd[k], sd3[k]) for k in sd)
    with pytest.raises(ValueError):
        e2v.build_model("huge")


def test_reference_is_funasr_inference(tiny, signals, tmp_path):
    """funasr_reference == Emotion2vec.inference (softmax scores, utterance feats)."""
    from funasr.tokenizer.char_tokenizer import CharTokenizer

    wav, lens = signals
    (tmp_path / "tokens.txt").write_text("\n".join(e2v.REAL_TOKENS), encoding="utf-8")
    tok = CharTokenizer(token_list=str(tmp_path / "tokens.txt"))
    n = int(lens[0])
    logits, emb = funasr_reference(tiny, wav[0, :n])
    with torch.no_grad():
        res, _ = tiny.inference([torch.from_numpy(wav[0, :n].copy())], key=["u0"], tokenizer=tok,
                                device="cpu", extract_embedding=True)
    probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    assert res[0]["labels"] == list(e2v.REAL_TOKENS)
    assert max_err(res[0]["scores"], probs) < 1e-6
    assert max_err(res[0]["feats"], emb) < 1e-6


def test_wrapper_padded_batch_equals_unbatched(tiny, signals):
    wav, lens = signals
    ref_logits, ref_emb = references(tiny, wav, lens)
    wrapper = e2v.Emotion2vecWrapper(tiny)
    with torch.no_grad():
        logits, emb = wrapper(torch.from_numpy(wav), torch.from_numpy(lens))
    assert logits.dtype == torch.float32 and emb.dtype == torch.float32
    assert logits.shape == (4, 9) and emb.shape == (4, 64)
    assert max_err(logits, ref_logits) < TOL_BATCH
    assert max_err(emb, ref_emb) < TOL_BATCH
    # Order in the batch does not matter.
    perm = [2, 0, 3, 1]
    with torch.no_grad():
        logits_p, _ = wrapper(torch.from_numpy(wav[perm]), torch.from_numpy(lens[perm]))
    assert max_err(logits_p, ref_logits[perm]) < TOL_BATCH


def _variant(**changes):
    conf = e2v.preset_config("tiny")
    audio = conf["modalities"]["audio"]
    for key, value in changes.items():
        (audio if key in audio else conf)[key] = value
    return conf


@pytest.mark.parametrize("changes", [
    dict(layer_norm_first=True),
    dict(learned_alibi_scale_per_layer=True),
    dict(conv_pos_pre_ln=True, num_alibi_heads=2),
    dict(use_alibi_encoder=False, num_extra_tokens=0),
    dict(normalize=False),
], ids=["layer_norm_first", "alibi_scale_per_layer", "pre_ln_fewer_alibi_heads",
        "no_alibi_no_extra_tokens", "no_normalize"])
def test_wrapper_config_variants(changes, signals):
    """Code paths the released configs do not take are still batch-exact."""
    model = e2v.build_from_config(_variant(**changes), seed=3)
    wav, lens = signals
    ref_logits, ref_emb = references(model, wav, lens)
    with torch.no_grad():
        logits, emb = e2v.Emotion2vecWrapper(model)(torch.from_numpy(wav), torch.from_numpy(lens))
    assert max_err(logits, ref_logits) < TOL_BATCH
    assert max_err(emb, ref_emb) < TOL_BATCH


def test_funasr_padding_mask_path_is_wrong_for_padded_batches(tiny, signals):
    """Why the wrapper exists: FunASR's padding_mask path leaks padding into valid frames."""
    wav, lens = signals
    _, ref_emb = references(tiny, wav, lens)
    x = torch.zeros(wav.shape)
    for i, n in enumerate(lens):
        x[i, :n] = torch.nn.functional.layer_norm(torch.from_numpy(wav[i, :n]), (int(n),))
    pad = torch.arange(wav.shape[1])[None, :] >= torch.from_numpy(lens)[:, None]
    with torch.no_grad():
        res = tiny.extract_features(x, padding_mask=pad)
    valid = ~res["padding_mask"]
    emb = (res["x"] * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
    assert max_err(emb, ref_emb) > 1e-2


def test_frame_arithmetic():
    spec = e2v.Emotion2vecWrapper(e2v.build_model("tiny")).spec
    assert e2v.min_samples(spec) == 400
    assert e2v.conv_frames(SR, spec) == 49  # 50 frames/s, minus the receptive field
    assert e2v.conv_frames(e2v.samples_for_frames(2, spec), spec) == 2
    assert e2v.conv_frames(e2v.samples_for_frames(2, spec) - 1, spec) == 1


# ---------------------------------------------------------------------------------- ONNX


def test_onnx_matches_torch_and_reference(tiny, signals, exported):
    out, _ = exported
    wav, lens = signals
    ref_logits, ref_emb = references(tiny, wav, lens)
    with torch.no_grad():
        t_logits, t_emb = e2v.Emotion2vecWrapper(tiny)(torch.from_numpy(wav), torch.from_numpy(lens))
    outputs = run_onnx(out / "model.onnx", {"wav": wav, "wav_lens": lens})
    logits, emb = outputs["logits"], outputs["embedding"]
    assert logits.dtype == np.float32 and emb.dtype == np.float32
    assert logits.shape == (4, 9) and emb.shape == (4, 64)
    assert max_err(logits, t_logits) < TOL_ONNX and max_err(emb, t_emb) < TOL_ONNX
    assert max_err(logits, ref_logits) < TOL_ONNX and max_err(emb, ref_emb) < TOL_ONNX


def test_onnx_probs_is_softmax_of_logits(signals, exported):
    """The graph's own probs output replaces the separate softmax model: softmax(logits) per item, rows sum
    to 1."""
    out, _ = exported
    wav, lens = signals
    outputs = run_onnx(out / "model.onnx", {"wav": wav, "wav_lens": lens})
    logits, probs = outputs["logits"].astype(np.float64), outputs["probs"]
    assert probs.dtype == np.float32 and probs.shape == logits.shape
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert max_err(probs, want) < 1e-6
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_onnx_dynamic_axes_batch_one_and_one_frame(tiny, exported):
    """Batch 1, and the shortest inputs (1 frame: 400..719 samples, below torch.export's
    traced range) are still right."""
    out, _ = exported
    for lengths in ([400], [719, 400, 720], [SR * 3 + 17]):
        wav, lens = make_signals(lengths, seed=len(lengths))
        ref_logits, ref_emb = references(tiny, wav, lens)
        outputs = run_onnx(out / "model.onnx", {"wav": wav, "wav_lens": lens})
        logits, emb = outputs["logits"], outputs["embedding"]
        assert max_err(logits, ref_logits) < TOL_ONNX, lengths
        assert max_err(emb, ref_emb) < TOL_ONNX, lengths


def test_manifest(exported):
    import onnx

    out, manifest = exported
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert manifest["model"] == "emotion2vec" and manifest["preset"] == "tiny"
    assert manifest["weights_origin"] == "random" and manifest["seed"] == 0
    assert set(manifest["files"]) == {"model.onnx", "tokens.txt"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    check_manifest(manifest)
    serving = manifest["serving"]
    assert serving["labels"] == e2v.read_labels(out / "tokens.txt") == list(e2v.EXPECTED_LABELS)
    assert serving["sample_rate"] == 16000 and serving["embedding_dim"] == 64
    assert manifest["unconfirmed"] and set(manifest["versions"]) == {
        "torch", "funasr", "onnx", "onnxruntime"}
    assert manifest["parity"]["max_abs_err"]["embedding"] < TOL_ONNX
    assert manifest["parity"]["max_abs_err"]["logits"] <= manifest["parity"]["gates"]["logits"]

    m = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(m)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    graph_in = {v.name: v for v in m.graph.input}
    graph_out = {v.name: v for v in m.graph.output}
    declared = manifest["graphs"]["model.onnx"]
    assert [d["name"] for d in declared["inputs"]] == [v.name for v in m.graph.input] == [
        "wav", "wav_lens"]
    assert [d["name"] for d in declared["outputs"]] == [v.name for v in m.graph.output] == [
        "logits", "embedding", "probs"]
    assert serving["probs_output"] == "probs"
    assert manifest["parity"]["max_abs_err"]["probs"] <= manifest["parity"]["gates"]["probs"]
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype
    for decl, graph in ((declared["inputs"], graph_in), (declared["outputs"], graph_out)):
        for d in decl:
            tt = graph[d["name"]].type.tensor_type
            assert np_dtype(tt.elem_type).name == d["dtype"]
            dims = [x.dim_value if x.HasField("dim_value") else x.dim_param for x in tt.shape.dim]
            assert [dim if isinstance(want, int) else isinstance(dim, str) and bool(dim)
                    for dim, want in zip(dims, d["shape"])] == [
                want if isinstance(want, int) else True for want in d["shape"]]
    # batch and sample axes are symbolic
    assert graph_in["wav"].type.tensor_type.shape.dim[0].dim_param
    assert graph_in["wav"].type.tensor_type.shape.dim[1].dim_param
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_failed_export_leaves_previous_files(tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"previous")

    def broken_export(wrapper, path):
        Path(path).write_bytes(b"half-written")
        raise RuntimeError("boom")

    monkeypatch.setattr(e2v, "_export_to", broken_export)
    with pytest.raises(RuntimeError, match="boom"):
        e2v.export_onnx(tmp_path, preset="tiny")
    assert (tmp_path / "model.onnx").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# ---------------------------------------------------------------------------------- real sizes


@pytest.mark.slow
def test_base_padded_batch_equals_unbatched(signals):
    model = e2v.build_model("base", seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 90e6 < n_params < 96e6  # ~93M
    wav, lens = signals
    ref_logits, ref_emb = references(model, wav, lens)
    with torch.no_grad():
        logits, emb = e2v.Emotion2vecWrapper(model)(torch.from_numpy(wav), torch.from_numpy(lens))
    assert emb.shape == (4, 768)
    assert max_err(logits, ref_logits) < TOL_BATCH
    assert max_err(emb, ref_emb) < TOL_BATCH


@pytest.mark.slow
def test_large_parameter_count():
    """`large` is the published plus_large config: 8 blocks after a 4-block prenet at width 1024, about
    164 M parameters (the model card's "~300M" stays in the unconfirmed list)."""
    model = e2v.build_model("large", seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 163e6 < n_params < 165e6
    assert model.proj.in_features == 1024
    assert len(model.blocks) == 8 and len(model.modality_encoders["AUDIO"].context_encoder.blocks) == 4
    assert any("~300M" in note for note in e2v.UNCONFIRMED["large"])
