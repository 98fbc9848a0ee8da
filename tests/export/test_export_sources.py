"""Weight sources: hub ids (fail fast when the hub is unreachable), local model directories in
the real FunASR/ModelScope layout, random weights. Offline, tiny models."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import torch

from tests.export.emotion2vec_reference import funasr_reference
from toneserve.export import emotion2vec as e2v
from toneserve.export import sensevoice as sv
from toneserve.export import sources
from toneserve.export.artifacts import sha256_file
from toneserve.export.families import get
from toneserve.export.sources import MissingModelFiles, SourceUnavailable
from toneserve.export.variants import run_onnx

SR = 16000
UNRESOLVABLE = "https://modelscope.invalid"  # .invalid never resolves (RFC 6761)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def e2v_model():
    return e2v.build_model("tiny", seed=11)


@pytest.fixture(scope="module")
def sv_model():
    return sv.build_model("tiny", 320, seed=21)


@pytest.fixture
def e2v_dir(tmp_path, e2v_model):
    return sources.save_local_layout(e2v_model, "emotion2vec", tmp_path / "e2v")


@pytest.fixture
def sv_dir(tmp_path, sv_model):
    return sources.save_local_layout(sv_model, "sensevoice", tmp_path / "sv")


# ---------------------------------------------------------------------------------- parse_source


def test_preset_names_match_the_exporters():
    assert sources.PRESET_NAMES["emotion2vec"] == tuple(e2v.PRESETS)
    assert sources.PRESET_NAMES["sensevoice"] == tuple(sv.PRESETS)
    assert all(sources.DEFAULT_PRESETS[f] in sources.PRESET_NAMES[f] for f in sources.FAMILIES)


# ---------------------------------------------------------------------------------- hub


def _assert_helpful(msg: str, model_id: str, family: str):
    assert model_id in msg
    assert "local directory" in msg and "random:" in msg
    for name in sources.REQUIRED_FILES[family]:
        assert name in msg
    for preset in sources.PRESET_NAMES[family]:
        assert f"random:{preset}" in msg


@pytest.fixture
def no_network_download(monkeypatch):
    """Record snapshot_download calls; a call that would go online fails the test."""
    import modelscope

    real = modelscope.snapshot_download
    calls = []

    def guarded(model_id, *args, **kwargs):
        calls.append((model_id, kwargs))
        assert kwargs.get("local_files_only"), "hub download attempted although the probe failed"
        return real(model_id, *args, **kwargs)

    monkeypatch.setattr(modelscope, "snapshot_download", guarded)
    return calls


@pytest.mark.parametrize("family,model_id", [
    ("sensevoice", "iic/SenseVoiceSmall"), ("emotion2vec", "iic/emotion2vec_plus_large")])
def test_hub_unreachable_fails_fast(tmp_path, monkeypatch, no_network_download, family, model_id):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", UNRESOLVABLE)  # honoured like modelscope does
    src = sources.parse_source(model_id, family)
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable) as e:
        sources.resolve(src, cache_dir=tmp_path / "cache")
    elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed
    assert isinstance(e.value, RuntimeError)
    msg = str(e.value)
    _assert_helpful(msg, model_id, family)
    assert "modelscope.invalid" in msg and str(tmp_path / "cache") in msg
    assert no_network_download and all(c[1]["local_files_only"] for c in no_network_download)


def test_hub_refused_and_blackholed_endpoints_fail_fast(tmp_path, no_network_download):
    src = sources.parse_source("iic/SenseVoiceSmall", "sensevoice")
    for endpoint, timeout in ((f"http://127.0.0.1:{_closed_port()}", 3.0),
                              ("http://10.255.255.1:443", 1.0)):  # refused / unroutable
        t0 = time.monotonic()
        with pytest.raises(SourceUnavailable) as e:
            sources.resolve(src, cache_dir=tmp_path, probe_timeout=timeout, endpoint=endpoint)
        assert time.monotonic() - t0 < timeout + 3
        _assert_helpful(str(e.value), "iic/SenseVoiceSmall", "sensevoice")


def test_probe_endpoint():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert sources.probe_endpoint(f"http://127.0.0.1:{server.getsockname()[1]}", 2.0) is None
    assert "DNS" in sources.probe_endpoint(UNRESOLVABLE, 2.0)
    assert "TCP connect" in sources.probe_endpoint(f"http://127.0.0.1:{_closed_port()}", 2.0)
    assert sources.hub_endpoint("example.org") == "https://example.org"


def test_hub_endpoint_precedence(monkeypatch):
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    assert sources.hub_endpoint() == "https://modelscope.cn"
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "www.modelscope.cn")
    assert sources.hub_endpoint() == "https://www.modelscope.cn"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://mirror.local:8080/")
    assert sources.hub_endpoint() == "http://mirror.local:8080"
    assert sources.hub_endpoint("https://arg.example") == "https://arg.example"


def test_hub_download_error_is_source_unavailable(tmp_path, monkeypatch):
    """Probe passes (a local listener), the download itself fails: still SourceUnavailable."""
    import modelscope

    seen = {}

    def failing(model_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise AssertionError("cache lookup not expected when the hub answers")
        seen.update(kwargs, model_id=model_id)
        raise ConnectionError("simulated 502")

    monkeypatch.setattr(modelscope, "snapshot_download", failing)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(SourceUnavailable, match="simulated 502") as e:
            sources.resolve(sources.parse_source("iic/emotion2vec_plus_base", "emotion2vec"),
                            cache_dir=tmp_path, endpoint=endpoint)
    assert seen == {"model_id": "iic/emotion2vec_plus_base", "cache_dir": str(tmp_path), "endpoint": endpoint}
    _assert_helpful(str(e.value), "iic/emotion2vec_plus_base", "emotion2vec")


def test_hub_unreachable_uses_modelscope_cache(tmp_path, monkeypatch, sv_model, no_network_download):
    """A model already in the ModelScope cache (MODELSCOPE_CACHE, or cache_dir) is used offline."""
    cache = tmp_path / "mscache"
    sources.save_local_layout(sv_model, "sensevoice", cache / "models" / "iic" / "SenseVoiceSmall")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", UNRESOLVABLE)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    src = sources.parse_source("iic/SenseVoiceSmall", "sensevoice")
    assert sources.resolve(src) == cache / "models" / "iic" / "SenseVoiceSmall"
    monkeypatch.delenv("MODELSCOPE_CACHE")
    assert sources.resolve(src, cache_dir=cache) == cache / "models" / "iic" / "SenseVoiceSmall"


# ---------------------------------------------------------------------------------- local dirs


def test_resolve_local_and_random(e2v_dir):
    assert sources.resolve(sources.parse_source("random:tiny", "emotion2vec")) is None
    assert sources.resolve(sources.parse_source(str(e2v_dir), "emotion2vec")) == e2v_dir.resolve()
    files = sources.locate_files("emotion2vec", e2v_dir)
    assert (files.config.name, files.weights.name, files.tokens.name) == ("config.yaml", "model.pt", "tokens.txt")


def test_real_layout_files(e2v_dir, sv_dir):
    assert sorted(p.name for p in e2v_dir.iterdir()) == [
        "config.yaml", "configuration.json", "model.pt", "tokens.txt"]
    assert sorted(p.name for p in sv_dir.iterdir()) == [
        "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model", "config.yaml", "configuration.json", "model.pt"]
    metas = json.loads((sv_dir / "configuration.json").read_text())["file_path_metas"]
    assert metas == {"init_param": "model.pt", "config": "config.yaml",
                     "tokenizer_conf": {"bpemodel": "chn_jpn_yue_eng_ko_spectok.bpe.model"},
                     "frontend_conf": {"cmvn_file": "am.mvn"}}
    # model.pt is a plain state dict, as torch.save(model.state_dict()) writes it
    state = torch.load(e2v_dir / "model.pt", weights_only=True)
    assert "proj.weight" in state


@pytest.mark.parametrize("family,remove", [
    ("emotion2vec", ["model.pt"]),
    ("emotion2vec", ["tokens.txt", "config.yaml"]),
    ("sensevoice", ["chn_jpn_yue_eng_ko_spectok.bpe.model"]),
    ("sensevoice", ["am.mvn", "model.pt"]),
])
def test_missing_files_are_named(tmp_path, e2v_model, sv_model, family, remove):
    model = e2v_model if family == "emotion2vec" else sv_model
    d = sources.save_local_layout(model, family, tmp_path / family)
    for name in remove:
        (d / name).unlink()
    src = sources.parse_source(str(d), family)
    with pytest.raises(MissingModelFiles) as e:
        sources.resolve(src)
    assert sorted(e.value.missing) == sorted(remove)
    for name in remove:
        assert name in str(e.value)
    # The exporter refuses the same way and writes nothing.
    out = tmp_path / "out"
    with pytest.raises(MissingModelFiles):
        get(family).export(out, model_dir=d, verify=False)
    assert not out.exists() or not any(out.iterdir())


def test_missing_file_named_by_configuration_json(tmp_path, sv_model):
    d = sources.save_local_layout(sv_model, "sensevoice", tmp_path / "sv")
    conf = json.loads((d / "configuration.json").read_text())
    conf["file_path_metas"]["tokenizer_conf"]["bpemodel"] = "other.bpe.model"
    (d / "configuration.json").write_text(json.dumps(conf))
    with pytest.raises(MissingModelFiles, match="other.bpe.model"):
        sources.locate_files("sensevoice", d)


def test_without_configuration_json_conventional_names(tmp_path, sv_model):
    d = sources.save_local_layout(sv_model, "sensevoice", tmp_path / "sv", configuration_json=False)
    files = sources.locate_files("sensevoice", d)
    assert files.bpe_model.name == "chn_jpn_yue_eng_ko_spectok.bpe.model" and files.cmvn.name == "am.mvn"
    assert files.configuration_json is None


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "model_state_dict", "module."])
def test_checkpoint_wrappings_load_like_funasr(tmp_path, e2v_model, wrap):
    """FunASR's load_pretrained_model unwraps "state_dict" / "model_state_dict" / "model" and
    accepts DDP "module." prefixes; so does the loader, with the same tensors as FunASR's."""
    from funasr.train_utils.load_pretrained_model import load_pretrained_model

    d = sources.save_local_layout(e2v_model, "emotion2vec", tmp_path / "m",
                                  wrap=None if wrap == "module." else wrap)
    if wrap == "module.":
        state = torch.load(d / "model.pt", weights_only=True)
        torch.save({"module." + k: v for k, v in state.items()}, d / "model.pt")
    loaded = sources.load_local_model("emotion2vec", d)
    assert _same_state(loaded.model, e2v_model) and not loaded.model.training
    assert loaded.load["tensors_loaded"] == len(e2v_model.state_dict())
    other = e2v.build_model("tiny", seed=99)
    assert not _same_state(other, e2v_model)
    load_pretrained_model(path=str(d / "model.pt"), model=other)
    assert _same_state(other, loaded.model)


def test_funasr_automodel_reads_the_layout(tmp_path, e2v_model, sv_model):
    """FunASR's own AutoModel.build_model (no hub: local path) builds the same weights from the
    directories save_local_layout writes, with and without configuration.json."""
    from funasr import AutoModel

    threads = torch.get_num_threads()
    try:
        for family, model, json_ in (("emotion2vec", e2v_model, True), ("emotion2vec", e2v_model, False),
                                     ("sensevoice", sv_model, True)):
            d = sources.save_local_layout(model, family, tmp_path / f"{family}-{json_}",
                                          configuration_json=json_)
            fm, kwargs = AutoModel.build_model(model=str(d), device="cpu", disable_update=True, ncpu=threads)
            assert _same_state(fm, model), family
            assert _same_state(fm, sources.load_local_model(family, d).model), family
            if family == "sensevoice":
                assert kwargs["input_size"] == 560 and kwargs["vocab_size"] == 320
                assert kwargs["frontend_conf"]["cmvn_file"] == str(d / "am.mvn")
            else:
                assert kwargs["vocab_size"] == 9
    finally:
        torch.set_num_threads(threads)


def test_checkpoint_that_does_not_fit_is_refused(tmp_path, e2v_model):
    d = sources.save_local_layout(e2v_model, "emotion2vec", tmp_path / "m")
    state = torch.load(d / "model.pt", weights_only=True)
    del state["proj.bias"]
    state["proj.weight"] = torch.zeros(3, 64)
    torch.save(state, d / "model.pt")
    with pytest.raises(ValueError, match=r"does not fit.*proj\.bias.*proj\.weight"):
        sources.load_local_model("emotion2vec", d)


def test_tolerated_missing_pretraining_decoder(tmp_path):
    """emotion2vec checkpoints may lack the pretraining decoder (never run at inference)."""
    conf = e2v.preset_config("tiny")
    conf["modalities"]["audio"]["decoder"] = dict(e2v._DECODER_BASE, decoder_dim=16, decoder_layers=1)
    model = e2v.build_from_config(conf, seed=3)
    assert any(k.startswith("modality_encoders.AUDIO.decoder.") for k in model.state_dict())
    d = sources.save_local_layout(model, "emotion2vec", tmp_path / "m")
    state = torch.load(d / "model.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if ".decoder." not in k}, d / "model.pt")
    loaded = sources.load_local_model("emotion2vec", d)
    assert loaded.load["left_at_init"] and all(".decoder." in k for k in loaded.load["left_at_init"])


def test_config_naming_another_model_is_refused(tmp_path, e2v_model, sv_dir):
    with pytest.raises(ValueError, match="expected 'Emotion2vec'"):
        # a SenseVoice directory with a tokens.txt added still is not an emotion2vec model
        (sv_dir / "tokens.txt").write_text("a\nb\n")
        sources.load_local_model("emotion2vec", sv_dir)


def test_detect_preset():
    assert sources.detect_preset("emotion2vec", e2v.preset_config("base")) == "base"
    assert sources.detect_preset("emotion2vec", {"embed_dim": 768, "depth": 8, "num_heads": 12}) == "base"
    assert sources.detect_preset("emotion2vec", e2v.preset_config("large")) == "large"
    assert sources.detect_preset("emotion2vec", {"embed_dim": 512, "depth": 8, "num_heads": 8}) == "custom"
    assert sources.detect_preset("sensevoice", {"encoder_conf": sv.PRESETS["small"]["encoder_conf"]}) == "small"
    odd = dict(sv.PRESETS["small"]["encoder_conf"], num_blocks=30)
    assert sources.detect_preset("sensevoice", {"encoder_conf": odd}) == "custom"


# ---------------------------------------------------------------------------------- exports


def _signals(lengths, seed=5):
    rng = np.random.default_rng(seed)
    wav = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        wav[i, :n] = 0.3 * np.sin(2 * np.pi * (140 + 60 * i) * t) + 0.05 * rng.standard_normal(n)
    return wav, np.asarray(lengths, dtype=np.int64)


def test_emotion2vec_export_from_local_dir(tmp_path, e2v_model):
    # Tokens spelled unlike the built-in copy: the exported file must be the directory's.
    tokens = ["愤怒/angry", "厌恶/disgusted", "恐惧/fearful", "高兴/happy", "中性/neutral",
              "其它/other", "悲伤/sad", "惊讶/surprised", "<unk>"]
    d = sources.save_local_layout(e2v_model, "emotion2vec", tmp_path / "my e2v", tokens=tokens)
    out = tmp_path / "out"
    manifest = sources.export_from_source("emotion2vec", str(d), out)  # parse + resolve + export

    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert manifest["weights_origin"] == "local"
    assert manifest["source"] == {"kind": "local", "ref": str(d.resolve())}
    assert manifest["preset"] == "tiny"  # derived from config.yaml (embed_dim 64, depth 2, heads 4)
    assert manifest["config"]["embed_dim"] == 64 and manifest["unconfirmed"] == []
    assert manifest["weights"]["sha256"] == sha256_file(d / "model.pt")
    assert (out / "tokens.txt").read_bytes() == (d / "tokens.txt").read_bytes()
    assert manifest["serving"]["labels"] == e2v.read_labels(d / "tokens.txt") == list(e2v.EXPECTED_LABELS)

    wav, lens = _signals([SR, 12345, 7777])
    outputs = run_onnx(out / "model.onnx", {"wav": wav, "wav_lens": lens})
    logits, emb = outputs["logits"], outputs["embedding"]
    with torch.no_grad():
        ref_logits, ref_emb = e2v.Emotion2vecWrapper(e2v_model).eval()(torch.from_numpy(wav), torch.from_numpy(lens))
        other_logits, _ = e2v.Emotion2vecWrapper(e2v.build_model("tiny", seed=12))(
            torch.from_numpy(wav), torch.from_numpy(lens))
    assert np.abs(logits - ref_logits.numpy()).max() < 1e-5
    assert np.abs(emb - ref_emb.numpy()).max() < 1e-5
    # FunASR's own unpadded inference path agrees as well
    for i, n in enumerate(lens):
        f_logits, _ = funasr_reference(e2v_model, wav[i, :n])
        assert np.abs(logits[i] - f_logits).max() < 1e-4
    # ...and a model of another seed does not: the test would notice weights not loaded
    assert np.abs(logits - other_logits.numpy()).max() > 1e-2


def test_sensevoice_export_from_local_dir(tmp_path, sv_model):
    import sentencepiece as spm

    from toneserve.export import sensevoice_frontend as svf
    from toneserve.export import sensevoice_tokenizer as svt

    assets = tmp_path / "assets"
    assets.mkdir()
    svt.train_standin_bpe(assets / "x.model", 320, seed=4)
    (assets / "am.mvn").write_text(svf.standin_cmvn_text(seed=9), encoding="utf-8")
    d = sources.save_local_layout(sv_model, "sensevoice", tmp_path / "sv", wrap="state_dict",
                                  bpe_model=assets / "x.model", cmvn_file=assets / "am.mvn")
    out = tmp_path / "out"
    # As resolve() hands it over for a hub id: weights_origin "hub".
    manifest = get("sensevoice").export(out, model_dir=d, seed=1,
                                        source={"kind": "hub", "ref": "iic/SenseVoiceSmall"})
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert manifest["weights_origin"] == "hub"
    assert manifest["source"] == {"kind": "hub", "ref": "iic/SenseVoiceSmall"}
    assert manifest["preset"] == "tiny"
    assert manifest["serving"]["tokenizer_origin"] == "model" and manifest["serving"]["cmvn_origin"] == "model"
    assert (out / "bpe.model").read_bytes() == (assets / "x.model").read_bytes()
    assert (out / "am.mvn").read_bytes() == (assets / "am.mvn").read_bytes()
    assert manifest["serving"]["vocab_size"] == 320 and manifest["unconfirmed"] == []
    decode = json.loads((out / "decode_assets.json").read_text(encoding="utf-8"))
    sp = spm.SentencePieceProcessor(model_file=str(d / "chn_jpn_yue_eng_ko_spectok.bpe.model"))
    assert decode["tokens"] == [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
    assert decode["language_query_ids"] == sv_model.lid_dict
    assert decode["textnorm_query_ids"] == sv_model.textnorm_dict

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 23, 560)).astype(np.float32)
    lens = np.asarray([23, 15], dtype=np.int64)
    language = np.asarray([sv_model.lid_dict["auto"], sv_model.lid_dict["en"]], dtype=np.int64)
    textnorm = np.asarray([sv_model.textnorm_dict["woitn"]] * 2, dtype=np.int64)
    import onnxruntime as ort

    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    o_logits, o_lens = enc.run(None, {"speech": feats, "speech_lengths": lens,
                                      "language": language, "textnorm": textnorm})
    t_logits, t_lens = sv.encoder_torch(sv_model, feats, lens, language, textnorm)
    x_logits, _ = sv.encoder_torch(sv.build_model("tiny", 320, seed=22), feats, lens, language, textnorm)
    assert np.array_equal(o_lens, t_lens)
    for i, n in enumerate(o_lens):
        assert np.abs(o_logits[i, :n] - t_logits[i, :n]).max() < 1e-5
    assert max(np.abs(o_logits[i, :n] - x_logits[i, :n]).max() for i, n in enumerate(o_lens)) > 1e-2

    # The frontend uses the directory's am.mvn: same features as the reference with that CMVN.
    fe = ort.InferenceSession(str(out / "frontend.onnx"), providers=["CPUExecutionProvider"])
    wav, wlens = _signals([SR])
    f, _ = fe.run(None, {"wav": wav, "wav_lens": wlens})
    ref = svf.reference_features(wav[0], svf.load_cmvn(d / "am.mvn"))
    assert np.abs(f[0, : ref.shape[0]] - ref).max() < 1e-3


def test_export_arguments_are_consistent(tmp_path, sv_dir):
    loaded = sources.load_local_model("sensevoice", sv_dir)
    with pytest.raises(ValueError, match="either a loaded folder or bpe_model"):
        sv.export_onnx(tmp_path / "o", loaded=loaded, cmvn_file=sv_dir / "am.mvn")
    with pytest.raises(ValueError, match="needs model_dir"):
        e2v.export_onnx(tmp_path / "o", source={"kind": "hub", "ref": "iic/emotion2vec_plus_base"})
    with pytest.raises(ValueError, match="does not match a model_dir"):
        sv.export_onnx(tmp_path / "o", loaded=loaded, source={"kind": "random", "ref": "tiny"})
    with pytest.raises(ValueError, match="another preset"):
        e2v.export_onnx(tmp_path / "o", preset="tiny", source={"kind": "random", "ref": "base"})


def test_hub_export_records_what_was_downloaded(tmp_path, monkeypatch, e2v_model, no_network_download):
    """A hub source's manifest names the hub and revision and holds the sha256 of every file it got
    (here from the ModelScope cache, the hub being unreachable); the export is then current for that source."""
    from toneserve.export.build import is_current

    cache = tmp_path / "mscache"
    folder = sources.save_local_layout(e2v_model, "emotion2vec", cache / "models" / "iic" / "emotion2vec_plus_base")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", UNRESOLVABLE)
    src = sources.parse_source("iic/emotion2vec_plus_base", "emotion2vec")
    manifest = sources.export_from_source("emotion2vec", src, tmp_path / "out", cache_dir=cache, verify=False)
    recorded = manifest["source"]
    assert (recorded["kind"], recorded["ref"], recorded["hub"], recorded["revision"]) == (
        "hub", "iic/emotion2vec_plus_base", "ms", None)
    assert recorded["sha256"] == {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()}
    assert manifest["weights"]["sha256"] == recorded["sha256"]["model.pt"]
    assert is_current(tmp_path / "out", src, seed=0)
    assert not is_current(tmp_path / "out", sources.parse_source("iic/emotion2vec_plus_base", "emotion2vec",
                                                                 revision="v2"), seed=0)
