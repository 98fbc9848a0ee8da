"""emotion2vec+ as a model family: FunASR's ``Emotion2vec`` (iic/emotion2vec_plus_*), exported as one graph.

Light at import time: torch, funasr and the exporter (``toneserve.export.emotion2vec``) are imported by
the methods that need them.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_bytes
from toneserve.export.emotion2vec_tokens import REAL_TOKENS, read_tokens
from toneserve.export.errors import SourceError
from toneserve.export.families.funasr_common import export_graphs, folder_arch, folder_config, loaded_model
from toneserve.export.family import LoadedModel, ModelFiles
from toneserve.export.layout import checkpoint_bytes, configuration_json_bytes, yaml_bytes
from toneserve.export.loading import build_and_load, locate


class Emotion2vecFamily:
    name = "emotion2vec"
    title = "emotion2vec+"
    presets = presets.EMOTION2VEC
    default_preset = "base"
    size_presets = {"tiny": "tiny", "base": "base"}
    default_hub_id: str | None = "iic/emotion2vec_plus_base"
    hub_ids = {
        "iic/emotion2vec_plus_base": "ms", "iic/emotion2vec_plus_large": "ms", "iic/emotion2vec_plus_seed": "ms",
        "emotion2vec/emotion2vec_plus_base": "hf", "emotion2vec/emotion2vec_plus_large": "hf",
        "emotion2vec/emotion2vec_plus_seed": "hf",
    }
    # Bare names FunASR maps to ids (its name_maps_ms).
    hub_aliases = {"emotion2vec_plus_base": "iic/emotion2vec_plus_base",
                   "emotion2vec_plus_large": "iic/emotion2vec_plus_large",
                   "emotion2vec_plus_seed": "iic/emotion2vec_plus_seed"}
    model_class: str | None = "Emotion2vec"
    funasr_module = "funasr.models.emotion2vec.model"
    required_files = ("config.yaml", "model.pt", "tokens.txt")
    graph: str | None = "model.onnx"
    exported = True
    gate_kind: str | None = "classification"  # one emotion label per clip
    # The data2vec 2.0 pretraining decoder is never run at inference: a checkpoint may lack it.
    tolerated_missing = ("modality_encoders.AUDIO.decoder.",)

    def unconfirmed(self, preset: str) -> list[str]:
        return list(presets.EMOTION2VEC_UNCONFIRMED.get(preset, []))

    def locate(self, root: Path) -> ModelFiles:
        return locate(self.name, root, {
            "config": (("config",), ("config.yaml",)),
            "weights": (("init_param",), ("model.pt",)),
            "tokens": (("tokenizer_conf", "token_list"), ("tokens.txt",)),
        }, self.required_files)

    def arch_config(self, config: dict) -> dict:
        if not isinstance(config.get("model_conf"), dict):
            raise SourceError("config.yaml has no model_conf mapping")
        return copy.deepcopy(config["model_conf"])

    def detect_preset(self, arch_config: dict) -> str:
        """The preset with the same sizes (width, depth, heads and, when given, prenet depth), else custom."""
        def sizes(conf: dict) -> dict:
            audio = ((conf.get("modalities") or {}).get("audio") or {})
            out = {k: conf.get(k) for k in ("embed_dim", "depth", "num_heads")}
            if "prenet_depth" in audio:
                out["prenet_depth"] = audio["prenet_depth"]
            return out

        mine = sizes(arch_config)
        for name, conf in self.presets.items():
            theirs = sizes(conf)
            if all(theirs[k] == v for k, v in mine.items()):
                return name
        return "custom"

    def build_random(self, preset: str, seed: int = 0) -> Any:
        from toneserve.export import emotion2vec

        return emotion2vec.build_model(preset, seed)

    def load(self, root: Path, *, trust_checkpoint: bool = False, hash_weights: bool = True) -> LoadedModel:
        files, config = folder_config(self, root)
        arch = folder_arch(self, files, config)
        model, stats = build_and_load(config, files, module=self.funasr_module, vocab_size=len(read_tokens(files.tokens)),
                                      input_size=None, tolerated=self.tolerated_missing, trust=trust_checkpoint)
        return loaded_model(self, model, files, config, arch, stats, hash_weights=hash_weights)

    def export(self, out_dir: Path, *, preset: str | None = None, seed: int = 0, model_dir: Path | None = None,
               source: dict | None = None, verify: bool = True, trust_checkpoint: bool = False) -> dict:
        from toneserve.export import emotion2vec

        return export_graphs(emotion2vec.export_onnx, self, out_dir, preset=preset, seed=seed, model_dir=model_dir,
                             source=source, verify=verify, trust_checkpoint=trust_checkpoint)

    def parity_inputs(self, folder: Path) -> tuple[dict, dict]:
        from toneserve.export.family_inputs import padded_audio

        wav, lens = padded_audio()
        return self.audio_feeds(folder, wav, lens), {"top1_axis": {"logits": -1}}

    def audio_feeds(self, folder: Path, wav: Any, wav_lens: Any) -> dict:
        return {"wav": wav, "wav_lens": wav_lens}

    def after_export(self, folder: Path, manifest: dict) -> None:
        """Nothing beside the graph: it computes the probabilities itself (serving.probs_output)."""

    def save_layout(self, model: Any, out_dir: Path, **assets) -> Path:
        """Write ``model`` as a folder in the hub's layout (config.yaml, model.pt, tokens.txt,
        configuration.json). Assets: ``wrap``, ``configuration_json`` (see ``layout``), ``tokens``."""
        from omegaconf import OmegaConf

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        wrap = assets.pop("wrap", None)
        with_json = assets.pop("configuration_json", True)
        tokens = list(assets.pop("tokens", REAL_TOKENS))
        if assets:
            raise TypeError(f"unknown assets for {self.name}: {sorted(assets)}")
        if model.proj is not None and model.proj.out_features != len(tokens):
            raise ValueError(f"model has {model.proj.out_features} classes but {len(tokens)} tokens were given")
        config = {"model": "Emotion2vec", "model_conf": OmegaConf.to_container(model.cfg, resolve=True),
                  "tokenizer": "CharTokenizer", "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True}}
        atomic_write_bytes(out / "tokens.txt", "\n".join(tokens).encode("utf-8"))
        atomic_write_bytes(out / "config.yaml", yaml_bytes(config))
        atomic_write_bytes(out / "model.pt", checkpoint_bytes(model, wrap))
        if with_json:
            metas = {"init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"token_list": "tokens.txt"}}
            atomic_write_bytes(out / "configuration.json", configuration_json_bytes("emotion-recognition", metas))
        return out


EMOTION2VEC = Emotion2vecFamily()
