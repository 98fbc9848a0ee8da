"""SenseVoiceSmall exporter: frontend/encoder ONNX parity, decode assets, CTC decode, manifest.

Tiny preset, random weights, stand-in tokenizer: no hub, no real weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
spm = pytest.importorskip("sentencepiece")

from toneserve.export import sensevoice as sv  # noqa: E402
from toneserve.export import sensevoice_frontend as svf  # noqa: E402
from toneserve.export import sensevoice_tokenizer as svt  # noqa: E402
from toneserve.export.artifacts import sha256_file  # noqa: E402
from toneserve.export.family import check_manifest  # noqa: E402
from toneserve.model_repository.runners import sensevoice_decode as svd  # noqa: E402

SR = 16000
# Mixed lengths 0.5 .. 3 s, deliberately not multiples of the hop or of 6 frames.
LENGTHS = [8000, 48000, 23456, 16001, 31111]

FE_TOL = 1e-3
ENC_TOL = 1e-4


def _signal(n: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(100 + k)
    t = np.arange(n) / SR
    x = (
        0.3 * np.sin(2 * np.pi * (150 + 70 * k) * t)
        + 0.1 * np.sin(2 * np.pi * (900 + 400 * k) * t * (1 + 0.5 * t))
        + 0.03 * rng.standard_normal(n)
        + 0.02  # DC offset, removed per frame by the frontend
    )
    x[: n // 10] *= 0.01  # a quiet lead-in
    return x.astype(np.float32)


def _padded(lengths):
    wavs = [_signal(n, k) for k, n in enumerate(lengths)]
    batch = np.zeros((len(wavs), max(lengths)), dtype=np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return wavs, batch, np.asarray(lengths, dtype=np.int64)


def _session(path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("sensevoice_tiny")
    manifest = sv.export_onnx(out, preset="tiny", seed=0)
    return out, manifest


@pytest.fixture(scope="module")
def frontend_out(exported):
    out, _ = exported
    wavs, batch, lens = _padded(LENGTHS)
    feats, feat_lens = _session(out / "frontend.onnx").run(None, {"wav": batch, "wav_lens": lens})
    return wavs, feats, feat_lens


# ---------------------------------------------------------------------------------- frontend
def test_frontend_matches_kaldi_native_fbank_and_funasr_lfr_cmvn(exported, frontend_out):
    out, _ = exported
    cmvn = svf.load_cmvn(out / "am.mvn")
    wavs, feats, feat_lens = frontend_out
    assert feats.dtype == np.float32 and feat_lens.dtype == np.int64
    assert feats.shape[0] == len(LENGTHS) and feats.shape[2] == 560
    worst = 0.0
    for i, w in enumerate(wavs):
        ref = svf.reference_features(w, cmvn)
        n = ref.shape[0]
        assert int(feat_lens[i]) == n
        err = float(np.abs(feats[i, :n] - ref).max())
        worst = max(worst, err)
        assert err < FE_TOL, f"item {i}: max abs err {err}"
        assert np.all(feats[i, n:] == 0.0), "padded frames must be zero"
    print(f"frontend max abs err vs kaldi-native-fbank+FunASR LFR/CMVN: {worst:.3g}")


def test_frontend_padded_batch_equals_unbatched(exported, frontend_out):
    out, _ = exported
    sess = _session(out / "frontend.onnx")
    wavs, feats, feat_lens = frontend_out
    for i, w in enumerate(wavs):
        one, one_len = sess.run(None, {"wav": w[None], "wav_lens": np.asarray([len(w)], np.int64)})
        n = int(one_len[0])
        assert n == int(feat_lens[i]) and one.shape[1] == n
        np.testing.assert_allclose(feats[i, :n], one[0], rtol=0, atol=1e-6)


def test_frontend_too_short_gives_no_frames(exported):
    out, _ = exported
    sess = _session(out / "frontend.onnx")
    feats, lens = sess.run(None, {"wav": np.zeros((2, 399), np.float32), "wav_lens": np.asarray([399, 10], np.int64)})
    assert feats.shape == (2, 0, 560) and lens.tolist() == [0, 0]
    feats, lens = sess.run(None, {"wav": np.zeros((2, 600), np.float32), "wav_lens": np.asarray([600, 399], np.int64)})
    assert lens.tolist() == [1, 0] and np.all(feats[1] == 0)
    # A length past the padded tensor is clipped to it, never read beyond.
    over, over_lens = sess.run(None, {"wav": np.ones((1, 600), np.float32) * 0.1, "wav_lens": np.asarray([700], np.int64)})
    same, same_lens = sess.run(None, {"wav": np.ones((1, 600), np.float32) * 0.1, "wav_lens": np.asarray([600], np.int64)})
    assert over_lens.tolist() == same_lens.tolist() == [1]
    np.testing.assert_array_equal(over, same)


def test_generated_am_mvn_loads_like_funasr(exported):
    from funasr.frontends.wav_frontend import load_cmvn as funasr_load_cmvn

    out, _ = exported
    ours = svf.load_cmvn(out / "am.mvn")
    theirs = funasr_load_cmvn(str(out / "am.mvn")).numpy()
    assert ours.shape == (2, 560)
    np.testing.assert_array_equal(ours, theirs)
    assert np.all(ours[0] < 0) and np.all(ours[1] > 0)  # AddShift = -mean, Rescale = 1/std


# ----------------------------------------------------------------------------------- encoder
def test_encoder_padded_batch_equals_unbatched_and_torch(exported, frontend_out):
    out, manifest = exported
    _, feats, feat_lens = frontend_out
    assets = svd.load_decode_assets(out / "decode_assets.json")
    lid, tn = assets["language_query_ids"], assets["textnorm_query_ids"]
    language = np.asarray([lid["auto"], lid["zh"], lid["en"], lid["ja"], lid["auto"]], dtype=np.int64)
    textnorm = np.asarray([tn["woitn"], tn["withitn"], tn["woitn"], tn["withitn"], tn["withitn"]], dtype=np.int64)
    enc = _session(out / "encoder.onnx")
    feed = {"speech": feats, "speech_lengths": feat_lens, "language": language, "textnorm": textnorm}
    logits, lens = enc.run(None, feed)
    vocab = manifest["serving"]["vocab_size"]
    assert logits.dtype == np.float32 and lens.dtype == np.int64
    assert logits.shape == (len(LENGTHS), feats.shape[1] + 4, vocab)
    assert lens.tolist() == (feat_lens + 4).tolist()

    model = sv.build_model("tiny", vocab, seed=manifest["seed"])
    t_logits, t_lens = sv.encoder_torch(model, feats, feat_lens, language, textnorm)
    assert t_lens.tolist() == lens.tolist()

    err_unbatched = err_torch = err_torch_one = 0.0
    for i in range(len(LENGTHS)):
        n = int(feat_lens[i])
        one = {
            "speech": feats[i : i + 1, :n],
            "speech_lengths": feat_lens[i : i + 1],
            "language": language[i : i + 1],
            "textnorm": textnorm[i : i + 1],
        }
        o_logits, o_lens = enc.run(None, one)
        assert int(o_lens[0]) == n + 4 and o_logits.shape[1] == n + 4
        err_unbatched = max(err_unbatched, float(np.abs(logits[i, : n + 4] - o_logits[0]).max()))
        err_torch = max(err_torch, float(np.abs(logits[i, : n + 4] - t_logits[i, : n + 4]).max()))
        u_logits, _ = sv.encoder_torch(model, *one.values())
        err_torch_one = max(err_torch_one, float(np.abs(o_logits[0] - u_logits[0]).max()))
    print(f"encoder max abs err: batched vs unbatched {err_unbatched:.3g}, onnx vs torch {err_torch:.3g}")
    assert err_unbatched < ENC_TOL
    assert err_torch < ENC_TOL
    assert err_torch_one < ENC_TOL
    # The query frames really depend on the requested language / textnorm.
    assert np.abs(logits[1, 0] - logits[2, 0]).max() > 1e-3


# ------------------------------------------------------------------------------ decode assets
def test_decode_assets_contain_every_tag_with_sentencepiece_ids(exported):
    out, _ = exported
    assets = svd.load_decode_assets(out / "decode_assets.json")
    sp = spm.SentencePieceProcessor(model_file=str(out / "bpe.model"))
    assert len(assets["tokens"]) == sp.GetPieceSize() == assets["vocab_size"]
    assert assets["tokens"] == [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
    for family, names in svd.TAG_FAMILIES.items():
        assert set(names) <= set(assets[family])
        for name, i in assets[family].items():
            assert i == sp.PieceToId(f"<|{name}|>") and not sp.IsUnknown(i)
    # Real forms, as FunASR's rich_transcription_postprocess expects them.
    for piece in ["<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>", "<|HAPPY|>",
                  "<|EMO_UNKNOWN|>", "<|Speech|>", "<|BGM|>", "<|Event_UNK|>", "<|withitn|>", "<|woitn|>"]:
        assert sp.PieceToId(piece) != sp.unk_id(), piece
    assert assets["blank_id"] == 0 and sp.IsUnknown(0) and assets["blank_piece"] == "<unk>"

    model = sv.build_model("tiny", 64)
    assert assets["language_query_ids"] == model.lid_dict
    assert assets["textnorm_query_ids"] == model.textnorm_dict
    # The ids of the published SenseVoiceSmall, as a tripwire if FunASR ever changes them.
    assert model.lid_dict == {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
    assert model.textnorm_dict == {"withitn": 14, "woitn": 15}


# --------------------------------------------------------------------------------- CTC decode
def test_ctc_greedy_decode_hand_built(exported):
    out, _ = exported
    assets = svd.load_decode_assets(out / "decode_assets.json")
    sp = spm.SentencePieceProcessor(model_file=str(out / "bpe.model"))
    vocab, blank = len(assets["tokens"]), assets["blank_id"]
    text = "thank you for calling 您好"
    ids = sp.EncodeAsIds(text)
    assert len(ids) >= 4 and sp.DecodeIds(ids) == text
    ids = ids + [ids[-1]]  # a genuinely repeated token: only a blank between keeps both

    # CTC path: leading blanks, repeats, blanks between, the doubled token split by blank.
    path, starts = [blank, blank], []
    for k, tok in enumerate(ids):
        starts.append(len(path))
        path += [tok] * (1 + k % 3)
        if k % 2 == 0 or (k + 1 < len(ids) and ids[k + 1] == tok):
            path.append(blank)
    path += [blank]
    length = 4 + len(path)
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 1.0, (length + 3, vocab)).astype(np.float32)
    for f, tok in enumerate(path):
        logits[4 + f, tok] = 20.0
    logits[length:, ids[0]] = 50.0  # padding frames: must be ignored
    # Query frames: one clear winner per family, and known logit values to check softmax.
    winners = {"language": "en", "emotion": "HAPPY", "event": "Laughter", "itn": "withitn"}
    for family, frame in svd.FAMILY_FRAME.items():
        for j, (name, i) in enumerate(assets[family].items()):
            logits[frame, i] = 0.1 * j
        logits[frame, assets[family][winners[family]]] = 3.0

    res = svd.ctc_greedy_decode(logits, length, assets)
    assert res["token_ids"] == ids
    assert res["text"] == sp.DecodeIds(ids)
    assert res["text"].startswith("thank you for calling 您好")
    assert [t["frame"] for t in res["tokens"]] == [s for s in starts]
    assert [t["start_ms"] for t in res["tokens"]] == [max(60 * s - 30, 0) for s in starts]  # FunASR's times
    assert all(t["end_ms"] > t["start_ms"] for t in res["tokens"])
    assert [t["piece"] for t in res["tokens"]] == [sp.IdToPiece(i) for i in ids]
    for family, winner in winners.items():
        dist = res[family]
        assert set(dist) == set(assets[family])
        assert abs(sum(dist.values()) - 1.0) < 1e-9
        assert max(dist, key=dist.get) == winner
        z = np.asarray([logits[svd.FAMILY_FRAME[family], i] for i in assets[family].values()], np.float64)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        np.testing.assert_allclose(list(dist.values()), p, rtol=1e-6)

    # Log-softmax input decodes identically (ctc_output is "logits" in the manifest).
    z = logits.astype(np.float64)
    log_probs = (z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True))
    res2 = svd.ctc_greedy_decode(log_probs, length, assets, sp=sp)
    assert res2["text"] == res["text"]
    for family in winners:
        np.testing.assert_allclose(list(res2[family].values()), list(res[family].values()), rtol=1e-9)

    empty = svd.ctc_greedy_decode(logits, 4, assets)
    assert empty["text"] == "" and empty["tokens"] == []
    with pytest.raises(ValueError):
        svd.ctc_greedy_decode(logits, 3, assets)


def test_end_to_end_decode_on_exported_models(exported, frontend_out):
    out, _ = exported
    _, feats, feat_lens = frontend_out
    assets = svd.load_decode_assets(out / "decode_assets.json")
    b = len(LENGTHS)
    logits, lens = _session(out / "encoder.onnx").run(None, {
        "speech": feats, "speech_lengths": feat_lens,
        "language": np.full(b, assets["language_query_ids"]["auto"], np.int64),
        "textnorm": np.full(b, assets["textnorm_query_ids"]["woitn"], np.int64),
    })
    for i in range(b):
        res = svd.ctc_greedy_decode(logits[i], int(lens[i]), assets)
        for family in ("language", "emotion", "event", "itn"):
            assert abs(sum(res[family].values()) - 1.0) < 1e-9
        assert all(0 <= t["frame"] < int(lens[i]) - 4 for t in res["tokens"])
        assert isinstance(res["text"], str)


# ---------------------------------------------------------------------------------- manifest
def test_manifest_hashes_and_contract(exported):
    import onnx

    out, manifest = exported
    on_disk = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(manifest))
    assert set(on_disk["files"]) == {"frontend.onnx", "encoder.onnx", "am.mvn", "bpe.model", "decode_assets.json"}
    for name, digest in on_disk["files"].items():
        assert sha256_file(out / name) == digest, name
    assert sorted(p.name for p in out.iterdir()) == sorted([*on_disk["files"], "manifest.json"])
    assert on_disk["model"] == "sensevoice" and on_disk["preset"] == "tiny"
    check_manifest(on_disk)
    serving = on_disk["serving"]
    assert on_disk["weights_origin"] == "random" and serving["tokenizer_origin"] == "stand-in"
    assert serving["sample_rate"] == 16000 and serving["frame_shift_ms"] == 60
    assert serving["ctc_output"] == "logits" and serving["frontend"]["dither"] == 0.0
    assert "dither 0" in on_disk["notes"]["dither"] and "silence" in on_disk["notes"]["dither"]
    assert set(on_disk["versions"]) == {"torch", "funasr", "onnx", "onnxruntime"}
    assert on_disk["parity"]["max_abs_err"]["frontend_vs_kaldi_native_fbank"] < FE_TOL
    assert on_disk["parity"]["max_abs_err"]["encoder_onnx_vs_torch"] < ENC_TOL

    elem = {1: "float32", 7: "int64", 6: "int32"}
    for part in ("frontend", "encoder"):
        m = onnx.load(str(out / f"{part}.onnx"))
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
        for kind, values in (("inputs", m.graph.input), ("outputs", m.graph.output)):
            spec = on_disk["graphs"][f"{part}.onnx"][kind]
            assert [v.name for v in values] == [s["name"] for s in spec]
            for v, s in zip(values, spec):
                assert elem[v.type.tensor_type.elem_type] == s["dtype"]
                dims = v.type.tensor_type.shape.dim
                assert len(dims) == len(s["shape"])
                for d, want in zip(dims, s["shape"]):
                    if isinstance(want, int):
                        assert d.dim_value == want
                    else:
                        assert d.dim_param, f"{part}.{v.name} axis must be dynamic"
    assert on_disk["graphs"]["encoder.onnx"]["outputs"][0]["shape"][-1] == serving["vocab_size"]


def test_failed_export_leaves_previous_files_intact(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text('{"old": true}', encoding="utf-8")

    def boom(*a, **k):
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(sv, "export_encoder_onnx", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        sv.export_onnx(tmp_path, preset="tiny", seed=0, verify=False)
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"old": True}


def test_export_with_given_tokenizer_and_cmvn(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    svt.train_standin_bpe(src / "my.bpe.model", 333, seed=7)
    (src / "am.mvn").write_text(svf.standin_cmvn_text(seed=7), encoding="utf-8")
    out = tmp_path / "out"
    manifest = sv.export_onnx(out, preset="tiny", seed=3, bpe_model=src / "my.bpe.model",
                              cmvn_file=src / "am.mvn", verify=False)
    assert manifest["serving"]["tokenizer_origin"] == "model" and manifest["serving"]["cmvn_origin"] == "model"
    assert manifest["serving"]["vocab_size"] == 333
    assert (out / "bpe.model").read_bytes() == (src / "my.bpe.model").read_bytes()
    assert (out / "am.mvn").read_bytes() == (src / "am.mvn").read_bytes()
    enc = _session(out / "encoder.onnx")
    logits, lens = enc.run(None, {"speech": np.zeros((1, 5, 560), np.float32), "speech_lengths": np.asarray([5]),
                                  "language": np.asarray([0]), "textnorm": np.asarray([15])})
    assert logits.shape == (1, 9, 333) and lens.tolist() == [9]
