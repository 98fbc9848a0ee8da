"""SenseVoiceSmall as a model family: FunASR's ``SenseVoiceSmall`` (iic/SenseVoiceSmall), exported as a
frontend graph (fbank + LFR + CMVN) and an encoder graph, with the decode assets its runner reads.

Light at import time: torch, funasr and the exporter (``toneserve.export.sensevoice``) are imported by
the methods that need them.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_bytes
from toneserve.export.errors import SourceError
from toneserve.export.families.funasr_common import export_graphs, folder_arch, folder_config, loaded_model
from toneserve.export.family import LoadedModel, ModelFiles
from toneserve.export.layout import checkpoint_bytes, configuration_json_bytes, yaml_bytes
from toneserve.export.loading import build_and_load, locate, read_config

BPE_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
# Frontend settings the exported frontend implements; a folder asking for others cannot be exported faithfully.
FRONTEND_FIXED = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                  "lfr_m": 7, "lfr_n": 6}


class SenseVoiceFamily:
    name = "sensevoice"
    title = "SenseVoiceSmall"
    presets = presets.SENSEVOICE
    default_preset = "small"
    size_presets = {"tiny": "tiny", "base": "small"}
    default_hub_id: str | None = "iic/SenseVoiceSmall"
    hub_ids = {"iic/SenseVoiceSmall": "ms", "FunAudioLLM/SenseVoiceSmall": "hf"}
    hub_aliases = {"SenseVoiceSmall": "iic/SenseVoiceSmall"}
    model_class: str | None = "SenseVoiceSmall"
    funasr_module = "funasr.models.sense_voice.model"
    required_files = ("config.yaml", "model.pt", "am.mvn", BPE_NAME)
    graph: str | None = "encoder.onnx"
    exported = True
    gate_kind: str | None = "ctc_frames"  # one CTC token per encoder frame

    def unconfirmed(self, preset: str) -> list[str]:
        return list(presets.SENSEVOICE_UNCONFIRMED.get(preset, []))

    def locate(self, root: Path) -> ModelFiles:
        root = Path(root).expanduser().resolve()
        bpe_names = ["bpe.model", BPE_NAME]
        config_path = root / "config.yaml"
        if config_path.is_file():  # config.yaml may name the bpe model (a relative path)
            try:
                tconf = read_config(config_path).get("tokenizer_conf") or {}
            except SourceError:  # reported when the config is read for real
                tconf = {}
            named = tconf.get("bpemodel") if isinstance(tconf, dict) else None
            if isinstance(named, str) and named and not os.path.isabs(named):
                bpe_names.insert(0, named)
        if not any((root / n).is_file() for n in bpe_names):
            bpe_names.insert(0, BPE_NAME)  # the name reported missing
        return locate(self.name, root, {
            "config": (("config",), ("config.yaml",)),
            "weights": (("init_param",), ("model.pt",)),
            "cmvn": (("frontend_conf", "cmvn_file"), ("am.mvn",)),
            "bpe_model": (("tokenizer_conf", "bpemodel"), tuple(bpe_names)),
        }, self.required_files)

    def arch_config(self, config: dict) -> dict:
        fconf = dict(config.get("frontend_conf") or {})
        if config.get("encoder") is None or not isinstance(config.get("encoder_conf"), dict):
            raise SourceError("config.yaml has no encoder / encoder_conf")
        return {"encoder": config["encoder"], "encoder_conf": copy.deepcopy(config["encoder_conf"]),
                "input_size": int(fconf.get("n_mels", 80)) * int(fconf.get("lfr_m", 1))}

    def detect_preset(self, arch_config: dict) -> str:
        keys = ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks")
        enc = arch_config.get("encoder_conf") or {}
        for name, conf in self.presets.items():
            if all(enc.get(k) == conf["encoder_conf"].get(k) for k in keys):
                return name
        return "custom"

    def build_random(self, preset: str, seed: int = 0) -> Any:
        from toneserve.export import sensevoice

        return sensevoice.build_model(preset, self.presets[preset]["vocab_size"], seed=seed)

    def load(self, root: Path, *, trust_checkpoint: bool = False, hash_weights: bool = True) -> LoadedModel:
        import sentencepiece as spm

        files, config = folder_config(self, root)
        sp = spm.SentencePieceProcessor()
        try:
            ok = sp.Load(str(files.bpe_model))
        except (OSError, RuntimeError):
            ok = False
        if not ok:
            raise SourceError(f"cannot load sentencepiece model {files.bpe_model}")
        if config.get("frontend", "WavFrontend") != "WavFrontend":
            raise SourceError(f"{files.config}: frontend {config.get('frontend')!r} is not supported (only WavFrontend)")
        fconf = dict(config.get("frontend_conf") or {})
        diff = {k: fconf[k] for k, v in FRONTEND_FIXED.items() if k in fconf and fconf[k] != v}
        if diff:
            raise SourceError(f"{files.config}: frontend_conf {diff} differs from the exported frontend's {FRONTEND_FIXED}")
        arch = folder_arch(self, files, config)
        model, stats = build_and_load(config, files, module=self.funasr_module, vocab_size=sp.GetPieceSize(),
                                      input_size=arch["input_size"], trust=trust_checkpoint)
        model.toneserve_encoder_conf = copy.deepcopy(arch["encoder_conf"])
        model.toneserve_model_conf = copy.deepcopy(config.get("model_conf") or {})
        return loaded_model(self, model, files, config, arch, stats, hash_weights=hash_weights)

    def export(self, out_dir: Path, *, preset: str | None = None, seed: int = 0, model_dir: Path | None = None,
               source: dict | None = None, verify: bool = True, trust_checkpoint: bool = False) -> dict:
        from toneserve.export import sensevoice

        return export_graphs(sensevoice.export_onnx, self, out_dir, preset=preset, seed=seed, model_dir=model_dir,
                             source=source, verify=verify, trust_checkpoint=trust_checkpoint)

    def parity_inputs(self, folder: Path) -> tuple[dict, dict]:
        from toneserve.export.family_inputs import padded_audio

        wav, lens = padded_audio()
        return (self.audio_feeds(folder, wav, lens),
                {"valid_lengths": {"ctc_logits": ("encoder_out_lens", 1)}, "top1_axis": {"ctc_logits": -1}})

    def audio_feeds(self, folder: Path, wav: Any, wav_lens: Any) -> dict:
        """The encoder's inputs for a batch of audio: the exported frontend's features (run in ONNX
        Runtime), language "auto", no inverse text normalisation."""
        import numpy as np

        from toneserve.export.variants import run_onnx

        front = run_onnx(Path(folder) / "frontend.onnx", {"wav": wav, "wav_lens": wav_lens})
        assets = json.loads((Path(folder) / "decode_assets.json").read_text())
        return {"speech": front["feats"], "speech_lengths": front["feat_lens"],
                "language": np.full(len(wav_lens), assets["language_query_ids"]["auto"], np.int64),
                "textnorm": np.full(len(wav_lens), assets["textnorm_query_ids"]["woitn"], np.int64)}

    def after_export(self, folder: Path, manifest: dict) -> None:
        pass

    def save_layout(self, model: Any, out_dir: Path, **assets) -> Path:
        """Write ``model`` as a folder in the hub's layout. Assets: ``wrap``, ``configuration_json``,
        ``bpe_model`` (path; default a stand-in trained with the model's vocabulary size), ``cmvn_file``
        (path; default a generated am.mvn), ``encoder_conf`` (default the one the model carries)."""
        from toneserve.export.sensevoice_frontend import standin_cmvn_text
        from toneserve.export.sensevoice_tokenizer import train_standin_bpe

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        wrap = assets.pop("wrap", None)
        with_json = assets.pop("configuration_json", True)
        encoder_conf = assets.pop("encoder_conf", None) or getattr(model, "toneserve_encoder_conf", None)
        if encoder_conf is None:
            raise ValueError("encoder_conf unknown: pass encoder_conf=... (models from sensevoice.build_model "
                             "or a family's load carry it)")
        bpe_src = assets.pop("bpe_model", None)
        cmvn_src = assets.pop("cmvn_file", None)
        if assets:
            raise TypeError(f"unknown assets for {self.name}: {sorted(assets)}")
        if bpe_src is not None:
            shutil.copyfile(bpe_src, out / BPE_NAME)
        else:
            train_standin_bpe(out / BPE_NAME, int(model.vocab_size), seed=0)
        if cmvn_src is not None:
            shutil.copyfile(cmvn_src, out / "am.mvn")
        else:
            atomic_write_bytes(out / "am.mvn", standin_cmvn_text(0).encode("utf-8"))
        model_conf = dict(getattr(model, "toneserve_model_conf", None) or {
            "length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1})
        config = {
            "encoder": "SenseVoiceEncoderSmall", "encoder_conf": copy.deepcopy(dict(encoder_conf)),
            "model": "SenseVoiceSmall", "model_conf": model_conf,
            "tokenizer": "SentencepiecesTokenizer",
            "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
            "frontend": "WavFrontend", "frontend_conf": {**FRONTEND_FIXED, "cmvn_file": None},
        }
        atomic_write_bytes(out / "config.yaml", yaml_bytes(config))
        atomic_write_bytes(out / "model.pt", checkpoint_bytes(model, wrap))
        if with_json:
            metas = {"init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"bpemodel": BPE_NAME},
                     "frontend_conf": {"cmvn_file": "am.mvn"}}
            atomic_write_bytes(out / "configuration.json", configuration_json_bytes("auto-speech-recognition", metas))
        return out


SENSEVOICE = SenseVoiceFamily()
