"""The speaker family: Resemblyzer's real weights from its wheel (the default), random Resemblyzer and
CAM++ (FunASR's class) weights, CAM++ folders; the graph against each encoder's own code on real speech,
zero-padded batches against rows run alone, manifests, refusals, an unreachable hub."""
from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf  # type: ignore[import-untyped]
import torch

from tests.support import ROOT
from toneserve.export import speaker
from toneserve.export.artifacts import sha256_file
from toneserve.export.build import choose_source, export_family, is_current
from toneserve.export.errors import CheckpointRefused, SourceError, SourceUnavailable
from toneserve.export.families import get
from toneserve.export.family import check_manifest
from toneserve.export.sources import export_from_source, parse_source, resolve

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")

FAMILY = get("speaker")
LIBRISPEECH = sorted((ROOT / "tests" / "data" / "librispeech").glob("*.flac"))
GATE = 1e-4  # graph vs the encoder's own code, normalised embeddings
BATCH_GATE = 1e-5  # zero-padded batch vs each row alone


def _read(path: Path) -> np.ndarray:
    wav, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000 and wav.ndim == 1
    return wav


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Real speech at the lengths that matter: shorter than one partial, at the coverage threshold, exactly
    one partial (1.6 s), a few, a whole clip (many partials); four readers."""
    clips = [_read(p) for p in LIBRISPEECH[::13][:4]]
    whole = clips[0]
    assert len(whole) > 6 * 16000
    return [clips[1][:8000], clips[2][:19200], clips[3][:speaker.RZ_PARTIAL_SAMPLES], whole[:47111], whole]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """What `toneserve export` writes by default (build.py's own path: choose_source, export_family)."""
    folder = tmp_path_factory.mktemp("speaker") / "speaker"
    source, fallback = choose_source("speaker", "tiny", None)
    assert choose_source("speaker", "base", None) == (source, None)  # the default needs no hub
    export_family("speaker", folder, source, fallback, seed=0, force=False)
    return folder


@pytest.fixture(scope="module")
def campplus(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A CAM++ folder in the published layout (random weights, non-trivial BatchNorm statistics), exported
    from the folder as a local source."""
    root = tmp_path_factory.mktemp("campplus")
    model = FAMILY.build_random("campplus", seed=5)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mean, var = m.running_mean, m.running_var
                assert mean is not None and var is not None
                mean.copy_(torch.randn(mean.shape, generator=gen) * 0.2)
                var.copy_(torch.rand(var.shape, generator=gen) + 0.5)
    folder = FAMILY.save_layout(model, root / "speech_campplus_sv_zh-cn_16k-common")
    export_from_source("speaker", str(folder), root / "out")
    return root / "out", model


def _manifest(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    check_manifest(manifest)
    return manifest


# ------------------------------------------------------------------------------------------ Resemblyzer

def test_default_export_is_the_wheels_real_weights(wheel):
    manifest = _manifest(wheel)
    wheel_file = speaker.resemblyzer_wheel_weights()
    assert manifest["weights_origin"] == "package" and manifest["preset"] == "resemblyzer_wheel"
    assert manifest["source"]["sha256"] == sha256_file(wheel_file) and manifest["weights"]["sha256"] == sha256_file(
        wheel_file)
    assert manifest["serving"]["embedding_dim"] == 256 and manifest["serving"]["sample_rate"] == 16000
    assert manifest["serving"]["min_samples"] == 19200
    assert manifest["graphs"] == {"model.onnx": {
        "inputs": [{"name": "wav", "dtype": "float32", "shape": ["batch", "samples"]},
                   {"name": "wav_lens", "dtype": "int64", "shape": ["batch"]}],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": ["batch", 256]}]}}
    parity = manifest["parity"]
    assert parity["gates"] == {"embedding": GATE, "batched_vs_single": BATCH_GATE}
    assert all(parity["max_abs_err"][k] <= parity["gates"][k] for k in parity["gates"])
    assert manifest["files"] == {"model.onnx": sha256_file(wheel / "model.onnx")}
    assert "variants" not in manifest and FAMILY.graph is None  # served fp32, nothing derived


def test_default_export_is_reused_and_a_damaged_one_rebuilt(wheel, tmp_path):
    graph = wheel / "model.onnx"
    stamp = graph.stat().st_mtime_ns
    source, _ = choose_source("speaker", "tiny", None)
    started = time.monotonic()
    export_family("speaker", wheel, source, None, seed=0, force=False)
    assert graph.stat().st_mtime_ns == stamp and time.monotonic() - started < 5
    assert not is_current(wheel, source, 0)  # build.py's check cannot match a package source: the family's does
    copy = tmp_path / "speaker"
    copy.mkdir()
    for name in ("model.onnx", "manifest.json"):
        (copy / name).write_bytes((wheel / name).read_bytes())
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes()[:-10])
    manifest = FAMILY.export(copy, preset="resemblyzer_wheel", verify=False)
    assert sha256_file(copy / "model.onnx") == manifest["files"]["model.onnx"] == sha256_file(graph)


def test_wheel_graph_matches_resemblyzer_on_real_speech(wheel, speech):
    from resemblyzer import VoiceEncoder  # type: ignore[import-untyped]

    reference = VoiceEncoder(device="cpu", verbose=False)  # loads the wheel's weights its own way
    session = speaker.ort_session(wheel / "model.onnx")
    batched = speaker.embed(session, speech)
    expected = np.stack([reference.embed_utterance(c) for c in speech])
    assert np.abs(batched - expected).max() <= GATE
    single = np.concatenate([speaker.embed(session, [c]) for c in speech])
    assert np.abs(batched - single).max() <= BATCH_GATE
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_wheel_embeddings_tell_readers_apart(wheel):
    """Real weights: clips of one LibriSpeech reader are closer to each other than to other readers'."""
    by_reader: dict[str, list[Path]] = {}
    for path in LIBRISPEECH:
        by_reader.setdefault(path.name.split("-")[0], []).append(path)
    readers = sorted(by_reader)[:4]
    clips = [_read(p)[:4 * 16000] for r in readers for p in by_reader[r][:2]]
    emb = speaker.embed(speaker.ort_session(wheel / "model.onnx"), clips)
    sim = emb @ emb.T
    same = [sim[2 * i, 2 * i + 1] for i in range(len(readers))]
    other = [sim[i, j] for i in range(len(clips)) for j in range(len(clips)) if i // 2 != j // 2]
    assert np.mean(same) > np.mean(other) + 0.05, (same, np.mean(other))


@pytest.mark.parametrize("n", [0, 1, 8000, 19199, 19200, 25599, 25600, 25601, 37919, 37920, 38000, 50239, 50240,
                               57119, 57120, 160000, 160001])
def test_partial_counts_are_resemblyzers(n):
    from resemblyzer import VoiceEncoder  # type: ignore[import-untyped]

    wav_slices, _ = VoiceEncoder.compute_partial_slices(n, speaker.RZ_RATE, speaker.RZ_MIN_COVERAGE)
    assert speaker.rz_partials(n) == len(wav_slices)


def test_random_resemblyzer(tmp_path, speech):
    manifest = FAMILY.export(tmp_path, preset="resemblyzer", seed=3, source={"kind": "random", "ref": "resemblyzer"})
    assert manifest["weights_origin"] == "random" and manifest["parity"]["max_abs_err"]["embedding"] <= GATE
    graph = FAMILY.build_random("resemblyzer", seed=3)
    reference = speaker.resemblyzer_reference(graph)
    batched = speaker.embed(speaker.ort_session(tmp_path / "model.onnx"), speech[:3])
    assert np.abs(batched - np.stack([reference.embed_utterance(c) for c in speech[:3]])).max() <= GATE


def test_bad_resemblyzer_checkpoints_are_refused(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"model_state": {}, "extra": argparse.Namespace(lr=1)}, pickled)  # only a full load builds it
    with pytest.raises(CheckpointRefused, match="weights_only=True"):
        speaker.resemblyzer_state(pickled)
    state = torch.load(str(speaker.resemblyzer_wheel_weights()), map_location="cpu", weights_only=True)
    narrow = tmp_path / "narrow.pt"
    torch.save({"model_state": {**state["model_state"], "linear.weight": torch.zeros(128, 256)}}, narrow)
    with pytest.raises(SourceError, match=r"linear.weight \(128, 256\)"):
        speaker.resemblyzer_state(narrow)
    torch.save({"state_dict": state["model_state"]}, tmp_path / "other.pt")
    with pytest.raises(SourceError, match="model_state"):
        speaker.resemblyzer_state(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(speaker.resemblyzer_wheel_weights().read_bytes()[:5000])
    with pytest.raises(SourceError, match="cannot be read"):
        speaker.resemblyzer_state(tmp_path / "cut.pt")


# ------------------------------------------------------------------------------------------ CAM++

def test_campplus_folder_export(campplus):
    out, _ = campplus
    manifest = _manifest(out)
    assert manifest["preset"] == "campplus" and manifest["weights_origin"] == "local"
    assert manifest["weights"]["file"] == "campplus_cn_common.bin" and not manifest["weights"]["left_at_init"]
    assert manifest["serving"]["embedding_dim"] == 192 and manifest["serving"]["encoder"] == "campplus"
    assert manifest["graphs"]["model.onnx"]["outputs"][0]["shape"] == ["batch", 192]
    assert all(manifest["parity"]["max_abs_err"][k] <= v for k, v in manifest["parity"]["gates"].items())


def test_campplus_graph_matches_funasr_on_real_speech(campplus, speech):
    out, model = campplus
    session = speaker.ort_session(out / "model.onnx")
    clips = speech[:4]  # the whole clip adds nothing CAM++-specific, only time
    batched = speaker.embed(session, clips)
    expected = np.stack([speaker.campplus_reference(model, c) for c in clips])
    assert np.abs(batched - expected).max() <= GATE
    single = np.concatenate([speaker.embed(session, [c]) for c in clips])
    assert np.abs(batched - single).max() <= BATCH_GATE


def test_random_campplus_is_funasrs_class_at_the_published_size():
    model = FAMILY.build_random("campplus")
    assert type(model).__module__ == "funasr.models.campplus.model" and type(model).__name__ == "CAMPPlus"
    assert model.xvector.dense.linear.out_channels == 192
    assert 6.5e6 < sum(p.numel() for p in model.parameters()) < 7.5e6


def test_a_folder_of_another_family_or_a_bad_checkpoint_is_refused(campplus, tmp_path):
    out, model = campplus
    folder = FAMILY.save_layout(model, tmp_path / "wrong-family")
    (folder / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: {}\n")
    with pytest.raises(SourceError, match="expected 'CAMPPlus'"):
        FAMILY.export(tmp_path / "o1", model_dir=folder)
    folder = FAMILY.save_layout(model, tmp_path / "junk")
    weights = folder / "campplus_cn_common.bin"
    weights.write_bytes(weights.read_bytes()[:5000])  # truncated
    with pytest.raises(SourceError, match="cannot be read as a torch checkpoint"):
        FAMILY.export(tmp_path / "o2", model_dir=folder)
    folder = FAMILY.save_layout(model, tmp_path / "narrow")
    (folder / "config.yaml").write_text("model: CAMPPlus\nmodel_conf: {embedding_size: 256}\n")
    with pytest.raises(SourceError, match="does not fit"):
        FAMILY.export(tmp_path / "o3", model_dir=folder)
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text", ["iic/speech_campplus_sv_zh-cn_16k-common", "cam++"])
def test_campplus_hub_unreachable_fails_fast(tmp_path, monkeypatch, text):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "empty-cache"))
    src = parse_source(text, "speaker")
    assert (src.kind, src.hub, src.ref) == ("hub", "ms", "iic/speech_campplus_sv_zh-cn_16k-common")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as e:
        resolve(src, cache_dir=tmp_path / "empty-cache", probe_timeout=2.0)
    assert time.monotonic() - started < 10
    message = str(e.value)
    assert "iic/speech_campplus_sv_zh-cn_16k-common" in message and "random:campplus" in message


def test_check_reads_a_campplus_folder(campplus, tmp_path):
    from toneserve.export.check import check

    _, model = campplus
    folder = FAMILY.save_layout(model, tmp_path / "cam")
    report = check(str(folder))
    assert report.loads, str(report)
    assert "family: speaker embeddings (speaker)" in report.lines and "preset: campplus" in report.lines


# ------------------------------------------------------------------------------------------ WeSpeaker

class _WespeakerStandIn(torch.nn.Module):
    """WeSpeaker's published graph's IO (feats [B, T, 80] -> embs [B, 256]) and its kind of layers: 2-d
    convolutions over (freq, time), temporal statistics pooling over every frame given, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 40 * 2, 256)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.permute(0, 2, 1).unsqueeze(1)
        x = torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return self.fc(torch.cat([x.mean(-1), torch.sqrt(x.var(-1) + 1e-7)], dim=-1))


@pytest.fixture(scope="module")
def wespeaker(tmp_path_factory) -> tuple[Path, Path]:
    """(a folder laid out as Wespeaker/wespeaker-voxceleb-resnet34-LM with a stand-in graph, its export)."""
    root = tmp_path_factory.mktemp("wespeaker")
    folder = root / "wespeaker-voxceleb-resnet34-LM"
    folder.mkdir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = _WespeakerStandIn().eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, 150, 80),), str(folder / speaker.WESPEAKER_ONNX), dynamo=False,
                          opset_version=13, input_names=["feats"], output_names=["embs"],
                          dynamic_axes={"feats": {0: "B", 1: "T"}, "embs": {0: "B"}})
    export_from_source("speaker", str(folder), root / "out")
    return folder, root / "out"


def test_wespeaker_folder_is_wrapped_with_its_fbank(wespeaker, speech):
    folder, out = wespeaker
    manifest = _manifest(out)
    assert manifest["preset"] == "wespeaker_resnet34" and manifest["weights_origin"] == "local"
    assert manifest["serving"]["embedding_dim"] == 256 and manifest["serving"]["encoder"] == "wespeaker"
    assert manifest["weights"]["sha256"] == sha256_file(folder / speaker.WESPEAKER_ONNX)
    assert all(manifest["parity"]["max_abs_err"][k] <= v for k, v in manifest["parity"]["gates"].items())
    published = speaker.ort_session(folder / speaker.WESPEAKER_ONNX)
    clips = speech[:4]
    expected = []
    for clip in clips:
        emb = published.run(["embs"], {"feats": speaker.reference_fbank(clip, window="hamming", scale=32768.0)[None]})
        expected.append(emb[0][0] / np.linalg.norm(emb[0][0]))
    session = speaker.ort_session(out / "model.onnx")
    batched = speaker.embed(session, clips)
    assert np.abs(batched - np.stack(expected)).max() <= GATE
    assert np.abs(batched - np.concatenate([speaker.embed(session, [c]) for c in clips])).max() <= BATCH_GATE


def test_wespeaker_has_no_random_weights_and_refuses_other_graphs(tmp_path):
    with pytest.raises(SourceError, match="published ONNX"):
        FAMILY.export(tmp_path / "o", preset="wespeaker_resnet34",
                      source={"kind": "random", "ref": "wespeaker_resnet34"})
    folder = tmp_path / "other"
    folder.mkdir()
    with torch.no_grad():
        torch.onnx.export(torch.nn.Linear(40, 8), (torch.randn(2, 40),), str(folder / speaker.WESPEAKER_ONNX),
                          dynamo=False, input_names=["x"], output_names=["y"])
    with pytest.raises(SourceError, match=r"feats \[B, T, 80\]"):
        FAMILY.export(tmp_path / "o", model_dir=folder)
    (folder / speaker.WESPEAKER_ONNX).write_bytes(b"not onnx")
    with pytest.raises(SourceError, match="cannot be read as an ONNX graph"):
        FAMILY.export(tmp_path / "o", model_dir=folder)
    assert not (tmp_path / "o").exists()


def test_wespeaker_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    src = parse_source("Wespeaker/wespeaker-voxceleb-resnet34-LM", "speaker")
    assert (src.kind, src.hub) == ("hub", "hf")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="Wespeaker/wespeaker-voxceleb-resnet34-LM"):
        resolve(src, cache_dir=tmp_path / "empty-cache", probe_timeout=2.0)
    assert time.monotonic() - started < 10
