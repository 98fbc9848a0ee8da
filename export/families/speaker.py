"""Speaker embeddings (diarization) as a model family: one graph ``model.onnx`` whatever the encoder.

Graph contract (``toneserve.export.speaker``): inputs ``wav`` float32 [batch, samples] (16 kHz, zero-padded)
and ``wav_lens`` int64 [batch]; output ``embedding`` float32 [batch, dim], L2-normalised; a zero-padded batch
gives its rows' unbatched embeddings (gated at 1e-5). ``manifest.serving``: ``embedding_dim``,
``sample_rate``, ``min_samples`` (the shortest input whose embedding is meaningful), ``encoder``.

Presets (``presets.SPEAKER``):

* ``resemblyzer_wheel``, the default of ``toneserve export`` (--size tiny and base, no hub needed):
  Resemblyzer's GE2E encoder with the real weights its wheel ships (``resemblyzer/pretrained.pt``, read with
  ``torch.load(weights_only=True)`` only), source kind ``package`` as silero VAD's. The graph computes
  ``VoiceEncoder.embed_utterance(wav)``; parity is judged against Resemblyzer's own ``VoiceEncoder``.
  build.py asks a family for its size default as ``random:<preset>``: this preset's name is what says "the
  wheel's weights", and its manifest's source is ``{"kind": "package", ...}`` whatever spec reached it.
* ``resemblyzer``: the same architecture with random weights (``random:resemblyzer``).
* ``wespeaker_resnet34``: a folder holding WeSpeaker's published ``voxceleb_resnet34_LM.onnx`` (Hugging
  Face Wespeaker/wespeaker-voxceleb-resnet34-LM; feats [B, T, 80] -> embs [B, 256]), wrapped as it is: the
  fbank front end (WeSpeaker's ``compute_fbank``) in torch ops, then the published graph run on each row's
  own frames in an ONNX Loop, then L2 normalisation. No random weights (no architecture code here). Parity:
  ONNX Runtime on the published file itself, fed kaldi-native-fbank features.
* ``campplus``: 3D-Speaker's CAM++ built with FunASR's own ``CAMPPlus`` class: random weights
  (``random:campplus``), or a folder in the ModelScope layout of iic/speech_campplus_sv_zh-cn_16k-common
  (config.yaml naming ``CAMPPlus``, and campplus_cn_common.bin or model.pt; configuration.json's
  ``file_path_metas`` first, as in FunASR), loaded through FunASR's ``load_pretrained_model``; the hub id
  goes through the project's hub code (fails within seconds when the hub is unreachable). Parity is judged
  against FunASR's ``CAMPPlus.inference`` (its fbank and forward).

Light model, served fp32 by ONNX Runtime like the VAD and the SenseVoice fbank frontend: ``graph = None``
and ``gate_kind = None``, so ``build_variants`` derives no int8 / fp16 / openvino graph from it (the
features are computed inside the graph and are precision-sensitive, e.g. Resemblyzer's mel power is not
even log-compressed; the encoders are small next to emotion2vec+ and SenseVoice). Should int8 / fp16 ever
be wanted, set ``graph = "model.onnx"`` and a ``gate_kind`` for embeddings in ``openvino_variants``. ``toneserve export`` writes ``<models_root>/speaker/`` (``exported = True``).

Light at import time: torch, funasr and the graph code are imported by the methods that need them.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_json, check_graph_io, sha256_file, versions
from toneserve.export.errors import SourceError
from toneserve.export.families.funasr_common import folder_arch, folder_config, loaded_model
from toneserve.export.family import (
    MANIFEST_SCHEMA,
    LoadedModel,
    Manifest,
    ModelFiles,
    Parity,
    loaded_weights_entry,
    source_entry,
)

GRAPH = "model.onnx"
SAMPLE_RATE = 16000
PARITY_GATE = 1e-4  # ONNX Runtime vs the encoder's own code, on L2-normalised embeddings
BATCH_GATE = 1e-5  # a zero-padded batch vs its rows run alone
CAMPPLUS_HUB_ID = "iic/speech_campplus_sv_zh-cn_16k-common"
WESPEAKER_HUB_ID = "Wespeaker/wespeaker-voxceleb-resnet34-LM"
# Parity clips (speech-like, toneserve.samples), in samples: shorter than one Resemblyzer partial, at its
# coverage threshold (1.2 s), exactly one partial (1.6 s), several, many (odd lengths off the frame grid).
PARITY_SAMPLES = (8000, 19200, 25600, 42411, 100777)


def _package_source() -> dict:
    from toneserve.export import speaker

    path = speaker.resemblyzer_wheel_weights()
    return {"kind": "package", "ref": f"resemblyzer {metadata.version('resemblyzer')}",
            "file": "resemblyzer/pretrained.pt", "sha256": sha256_file(path)}


@dataclass
class _Plan:
    """How one export writes its graph and what its parity is judged against."""

    preset: str
    conf: dict
    write: Callable[[Path], int]  # writes the graph, returns the embedding dim
    reference: Callable[[Any], Any]  # one clip -> its L2-normalised embedding, by the encoder's own code
    reference_name: str
    weights: dict | None
    config_source: str
    unconfirmed: list[str]
    exporter: dict = field(default_factory=dict)


def _torch_plan(module: Any, preset: str, conf: dict, weights: dict | None, *, config_source: str,
                unconfirmed: list[str]) -> _Plan:
    from toneserve.export import speaker

    module = module.eval()

    def write(path: Path) -> int:
        speaker.export_onnx(module, path)
        return int(module.dim)

    if conf["encoder"] == "resemblyzer":
        voice_encoder = speaker.resemblyzer_reference(module)
        return _Plan(preset, conf, write, voice_encoder.embed_utterance,
                     "resemblyzer VoiceEncoder.embed_utterance (rate 1.3, min_coverage 0.75), the same weights",
                     weights, config_source, unconfirmed)
    return _Plan(preset, conf, write, lambda clip: speaker.campplus_reference(module.model, clip),
                 "FunASR CAMPPlus.inference (its fbank + forward), L2-normalised", weights, config_source, unconfirmed)


def _wespeaker_plan(path: Path) -> _Plan:
    import numpy as np
    import onnx

    from toneserve.export import speaker

    try:
        encoder = onnx.load(str(path))
    except Exception as e:
        raise SourceError(f"{path}: cannot be read as an ONNX graph ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    feats, embs, dim = speaker.wespeaker_io(encoder)
    preset = "wespeaker_resnet34" if dim == 256 else "custom"
    conf = dict(presets.SPEAKER["wespeaker_resnet34"], embedding_dim=dim)
    session = speaker.ort_session(path)

    def reference(clip: Any) -> Any:
        fbank = speaker.reference_fbank(clip, window="hamming", scale=32768.0)
        emb = session.run([embs], {feats: fbank[None]})[0][0].astype(np.float64)
        return (emb / np.linalg.norm(emb)).astype(np.float32)

    return _Plan(preset, conf, lambda out: speaker.wespeaker_graph(encoder, out), reference,
                 f"ONNX Runtime on {path.name} itself, fed kaldi-native-fbank features (hamming, x32768, "
                 f"mean-normalised: WeSpeaker's compute_fbank), L2-normalised",
                 {"file": path.name, "sha256": sha256_file(path), "model_dir": str(path.parent)},
                 str(path), list(presets.SPEAKER_UNCONFIRMED.get("wespeaker_resnet34", [])),
                 {"wrapped": f"{path.name} (as published) in an ONNX Loop over the batch after the fbank graph"})


class SpeakerFamily:
    name = "speaker"
    title = "speaker embeddings"
    presets: dict[str, dict] = presets.SPEAKER
    default_preset = "resemblyzer"  # a bare "random": random weights of Resemblyzer's architecture
    size_presets: dict[str, str] = {"tiny": "resemblyzer_wheel", "base": "resemblyzer_wheel"}
    default_hub_id: str | None = None  # the default needs no hub: the wheel's weights
    hub_ids: dict[str, str] = {CAMPPLUS_HUB_ID: "ms", WESPEAKER_HUB_ID: "hf"}
    hub_aliases: dict[str, str] = {"cam++": CAMPPLUS_HUB_ID}  # FunASR's name_maps_ms
    model_class: str | None = "CAMPPlus"
    funasr_module = "funasr.models.campplus.model"
    required_files: tuple[str, ...] = ("config.yaml", "campplus_cn_common.bin")
    graph: str | None = None  # served fp32 as exported: no variants (module docstring)
    exported = True
    gate_kind: str | None = None

    def unconfirmed(self, preset: str) -> list[str]:
        return list(presets.SPEAKER_UNCONFIRMED.get(preset, []))

    def locate(self, root: Path) -> ModelFiles:
        """A WeSpeaker folder (its published ONNX), else a CAM++ folder in FunASR's layout."""
        from toneserve.export.loading import locate
        from toneserve.export.speaker import WESPEAKER_ONNX

        if (Path(root) / WESPEAKER_ONNX).is_file():
            resolved = Path(root).expanduser().resolve()
            return ModelFiles(family=self.name, root=resolved, parts={"weights": resolved / WESPEAKER_ONNX})
        return locate(self.name, root, {
            "config": (("config",), ("config.yaml",)),
            "weights": (("init_param",), ("campplus_cn_common.bin", "model.pt")),
        }, self.required_files)

    def arch_config(self, config: dict) -> dict:
        conf = config.get("model_conf", {})
        if conf is None:
            conf = {}
        if not isinstance(conf, dict):
            raise SourceError("config.yaml's model_conf is not a mapping")
        return {**presets.SPEAKER["campplus"]["model_conf"], **copy.deepcopy(conf)}

    def detect_preset(self, arch_config: dict) -> str:
        keys = ("feat_dim", "embedding_size", "growth_rate", "bn_size", "init_channels", "config_str", "output_level")
        theirs = presets.SPEAKER["campplus"]["model_conf"]
        return "campplus" if all(arch_config.get(k, theirs[k]) == theirs[k] for k in keys) else "custom"

    def build_random(self, preset: str, seed: int = 0) -> Any:
        """The preset's encoder with random weights: the FunASR ``CAMPPlus`` for campplus, the graph module
        (``ResemblyzerGraph``) for the Resemblyzer presets."""
        import torch

        conf = self._preset(preset)
        if conf["encoder"] == "campplus":
            from toneserve.export.loading import model_class

            cls = model_class("CAMPPlus", self.funasr_module)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(**conf["model_conf"])
            model.toneserve_preset = preset
            return model.eval()
        from toneserve.export import speaker

        return speaker.build_resemblyzer(None, seed)

    def load(self, root: Path, *, trust_checkpoint: bool = False, hash_weights: bool = True) -> LoadedModel:
        """A CAM++ folder, built with FunASR's CAMPPlus and loaded with its ``load_pretrained_model``."""
        from toneserve.export.loading import build_and_load
        from toneserve.export.speaker import WESPEAKER_ONNX

        if (Path(root) / WESPEAKER_ONNX).is_file():
            raise SourceError(f"{root} holds WeSpeaker's {WESPEAKER_ONNX}: it is exported as published (wrapped "
                              f"with its fbank front end), there is no FunASR model to load")
        files, config = folder_config(self, root)
        arch = folder_arch(self, files, config)
        if arch.get("output_level", "segment") != "segment":
            raise SourceError(f"{files.config}: output_level {arch['output_level']!r} gives frame embeddings; "
                              f"the speaker graph needs 'segment'")
        model, stats = build_and_load(config, files, module=self.funasr_module, vocab_size=0, input_size=None,
                                      trust=trust_checkpoint)
        return loaded_model(self, model, files, config, arch, stats, hash_weights=hash_weights)

    def _preset(self, preset: str) -> dict:
        if preset not in self.presets:
            raise SourceError(f"unknown speaker preset {preset!r}; choose from {', '.join(self.presets)}")
        return self.presets[preset]

    # ------------------------------------------------------------------------------------------ export

    def export(self, out_dir: Path, *, preset: str | None = None, seed: int = 0, model_dir: Path | None = None,
               source: dict | None = None, verify: bool = True, trust_checkpoint: bool = False) -> dict:
        """Export into ``out_dir`` (``model.onnx``, ``manifest.json``): a folder (``model_dir``: CAM++ in
        FunASR's layout, or WeSpeaker's published ONNX), or a preset (the wheel's weights for
        ``resemblyzer_wheel``, random weights otherwise). Files are written under temporary names and renamed
        into place only once the graph passed its gates."""
        from toneserve.export import speaker

        out = Path(out_dir)
        started = time.perf_counter()
        if model_dir is not None:
            plan = self._folder_plan(Path(model_dir), trust_checkpoint)
            source = source_entry(source, Path(model_dir), plan.preset)
        else:
            preset = preset or self.default_preset
            conf = self._preset(preset)
            if conf["weights"] == "package":
                source = _package_source()  # whatever spec reached it: the weights are the wheel's
                current = self._current(out, source, verify)
                if current is not None:
                    return current
            else:
                source = source_entry(source, None, preset)
            plan = self._preset_plan(preset, seed, source)

        out.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}.{time.monotonic_ns()}"
        tmp = {name: out / f".{name}.{tag}.tmp" for name in (GRAPH, "manifest.json")}
        try:
            dim = plan.write(tmp[GRAPH])
            graph = {"inputs": speaker.INPUTS, "outputs": speaker.outputs(dim)}
            check_graph_io(tmp[GRAPH], graph, "speaker")
            parity = None
            if verify:
                parity = self._parity(tmp[GRAPH], plan)
                if not parity.passed():
                    raise RuntimeError(f"speaker ONNX parity gate failed: {parity}")
            conf = plan.conf
            serving = {"embedding_dim": dim, "sample_rate": SAMPLE_RATE, "min_samples": int(conf["min_samples"]),
                       "encoder": conf["encoder"], "normalized": True}
            if conf["encoder"] == "resemblyzer":
                serving.update(partial_samples=speaker.RZ_PARTIAL_SAMPLES,
                               partial_step_samples=speaker.RZ_FRAME_STEP * speaker.RZ_HOP)
            manifest = Manifest(
                model=self.name, preset=plan.preset, source=source, seed=seed,
                files={GRAPH: sha256_file(tmp[GRAPH])}, graphs={GRAPH: graph},
                parity=None if parity is None else asdict(parity), serving=serving,
                config={k: v for k, v in conf.items() if k not in ("source", "weights")},
                config_source=plan.config_source, unconfirmed=plan.unconfirmed,
                exporter={"torch.onnx.export": "dynamo=False", "opset": 17, **plan.exporter},
                versions=versions(("torch", "funasr", "onnx", "onnxruntime", "librosa", "resemblyzer")),
                export_seconds=round(time.perf_counter() - started, 3), weights=plan.weights,
                notes=_notes(conf["encoder"])).to_dict()
            atomic_write_json(tmp["manifest.json"], manifest)
            os.replace(tmp[GRAPH], out / GRAPH)
            os.replace(tmp["manifest.json"], out / "manifest.json")
            return manifest
        finally:
            for p in tmp.values():
                if p.exists():
                    p.unlink()

    def _preset_plan(self, preset: str, seed: int, source: dict) -> _Plan:
        from toneserve.export import speaker

        conf = self._preset(preset)
        if conf["encoder"] == "wespeaker":
            raise SourceError(f"{preset} is exported from WeSpeaker's published ONNX, never built with random "
                              f"weights: give the folder holding {speaker.WESPEAKER_ONNX} (Hugging Face "
                              f"{WESPEAKER_HUB_ID})")
        weights = None
        module: Any
        if conf["weights"] == "package":
            path = speaker.resemblyzer_wheel_weights()
            module = speaker.build_resemblyzer(speaker.resemblyzer_state(path))
            weights = {"file": str(path), "sha256": source["sha256"], "loader": "torch.load(weights_only=True)"}
        else:
            built = self.build_random(preset, seed)
            module = speaker.CamppGraph(built) if conf["encoder"] == "campplus" else built
        return _torch_plan(module, preset, conf, weights, config_source=f"preset {preset!r}: {conf['source']}",
                           unconfirmed=self.unconfirmed(preset))

    def _folder_plan(self, root: Path, trust_checkpoint: bool) -> _Plan:
        from toneserve.export import speaker

        if (root / speaker.WESPEAKER_ONNX).is_file():
            return _wespeaker_plan(root / speaker.WESPEAKER_ONNX)
        loaded = self.load(root, trust_checkpoint=trust_checkpoint)
        conf = dict(presets.SPEAKER["campplus"], model_conf=loaded.arch_config,
                    embedding_dim=int(loaded.arch_config.get("embedding_size", 192)))
        return _torch_plan(speaker.CamppGraph(loaded.model), loaded.preset, conf, loaded_weights_entry(loaded),
                           config_source=str(loaded.files.config),
                           unconfirmed=list(presets.SPEAKER_UNCONFIRMED_LOADED.get(loaded.preset, [])))

    @staticmethod
    def _current(out: Path, source: dict, verify: bool) -> dict | None:
        """The manifest of an intact export of the same package weights in ``out`` (build.py's reuse check
        compares sources and cannot match a package source), else None."""
        try:
            manifest = json.loads((out / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if (manifest.get("schema") != MANIFEST_SCHEMA or manifest.get("source") != source
                or (verify and manifest.get("parity") is None)):
            return None
        files = manifest.get("files") or {}
        if GRAPH not in files or not all((out / n).is_file() and sha256_file(out / n) == d for n, d in files.items()):
            return None
        return manifest

    @staticmethod
    def _parity(graph: Path, plan: _Plan) -> Parity:
        import numpy as np

        from toneserve.export import speaker
        from toneserve.samples import speechlike

        clips = [speechlike(n / SAMPLE_RATE + 0.01, seed=i)[:n].astype(np.float32) for i, n in enumerate(PARITY_SAMPLES)]
        expected = np.stack([plan.reference(c) for c in clips])
        session = speaker.ort_session(graph)
        batched = speaker.embed(session, clips)
        single = np.concatenate([speaker.embed(session, [c]) for c in clips])
        return Parity(reference=plan.reference_name,
                      max_abs_err={"embedding": float(np.abs(batched - expected).max()),
                                   "batched_vs_single": float(np.abs(batched - single).max())},
                      gates={"embedding": PARITY_GATE, "batched_vs_single": BATCH_GATE},
                      inputs=f"speech-like clips of {[len(c) for c in clips]} samples, one zero-padded batch "
                             f"and each alone (ONNX Runtime CPU)")

    def parity_inputs(self, folder: Path) -> tuple[dict, dict]:
        from toneserve.export.family_inputs import padded_audio

        wav, lens = padded_audio()
        return self.audio_feeds(folder, wav, lens), {}

    def audio_feeds(self, folder: Path, wav: Any, wav_lens: Any) -> dict:
        return {"wav": wav, "wav_lens": wav_lens}

    def after_export(self, folder: Path, manifest: dict) -> None:
        """Nothing beside the graph: features, partials and normalisation are inside it."""

    def save_layout(self, model: Any, out_dir: Path, **assets) -> Path:
        """Write a FunASR ``CAMPPlus`` as a folder in iic/speech_campplus_sv_zh-cn_16k-common's layout
        (config.yaml, campplus_cn_common.bin: a plain state dict, configuration.json). Assets:
        ``configuration_json`` (default True), ``weights_name``."""
        from toneserve.export.artifacts import atomic_write_bytes
        from toneserve.export.layout import checkpoint_bytes, configuration_json_bytes, yaml_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with_json = assets.pop("configuration_json", True)
        weights_name = assets.pop("weights_name", "campplus_cn_common.bin")
        if assets:
            raise TypeError(f"unknown assets for {self.name}: {sorted(assets)}")
        if type(model).__name__ != "CAMPPlus":
            raise SourceError(f"save_layout writes CAM++ folders (FunASR CAMPPlus), not {type(model).__name__}")
        conf = dict(presets.SPEAKER["campplus"]["model_conf"])
        conf.update(feat_dim=int(model.head.out_channels // 4),  # FCM: 32 channels x feat_dim / 8
                    embedding_size=int(model.xvector.dense.linear.out_channels))
        config = {"model": "CAMPPlus", "model_conf": conf}
        atomic_write_bytes(out / "config.yaml", yaml_bytes(config))
        atomic_write_bytes(out / weights_name, checkpoint_bytes(model, None))
        if with_json:
            metas = {"init_param": weights_name, "config": "config.yaml"}
            atomic_write_bytes(out / "configuration.json", configuration_json_bytes("speaker-verification", metas))
        return out


def _notes(encoder: str) -> dict[str, str]:
    notes = {"padding": "each row of a zero-padded batch gives its unbatched embedding (gated: batched_vs_single)",
             "variants": "none: a light model served fp32 by ONNX Runtime (features inside the graph)"}
    if encoder == "resemblyzer":
        notes["short_inputs"] = ("shorter than one partial (25600 samples, 1.6 s), the wav is zero-padded to one "
                                 "partial, as embed_utterance does: an embedding always comes out, but below "
                                 "min_samples (19200, 1.2 s) it is mostly padding")
        notes["features"] = ("librosa 0.11 melspectrogram (n_fft 400, hop 160, hann, 40 slaney mels, center=True, "
                             "pad_mode constant = zeros), power, not log; a DFT matmul in the graph")
    elif encoder == "wespeaker":
        notes["short_inputs"] = ("fewer than 400 samples give no fbank frame; the graph then feeds one all-zero "
                                 "frame to the encoder (finite, meaningless)")
        notes["features"] = ("80-dim Kaldi fbank as WeSpeaker's compute_fbank (hamming, wav x 32768, snip_edges, "
                             "dither 0) minus its mean over the row's frames; each row runs the published graph "
                             "alone (ONNX Loop), since it pools over every frame it is given")
    else:
        notes["short_inputs"] = ("fewer than 400 samples give no fbank frame (FunASR fails on them); the graph "
                                 "returns a finite but meaningless embedding. One or two frames: FunASR's unbiased "
                                 "std is NaN, the graph's finite (n - 1 clamped to 1)")
        notes["features"] = ("80-dim Kaldi fbank (povey, snip_edges, dither 0, wav unscaled) minus its mean over the "
                             "row's frames, as FunASR's campplus.utils.extract_feature")
    return notes


SPEAKER = SpeakerFamily()
