"""What the FunASR-built families (emotion2vec+, SenseVoice) do alike when they load a folder and export.

Each family keeps what is its own (the files it needs, its tokenizer, its frontend checks, its exporter);
the steps around them are the same and live here once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from toneserve.export.artifacts import sha256_file
from toneserve.export.errors import SourceError
from toneserve.export.family import LoadedModel, ModelFiles
from toneserve.export.loading import read_config


def folder_config(family: Any, root: Path) -> tuple[ModelFiles, dict]:
    """The folder's files and its config.yaml, refused unless the config names the family's FunASR class."""
    files = family.locate(root)
    config = read_config(files.config)
    if config.get("model") != family.model_class:
        raise SourceError(f"{files.config}: model is {config.get('model')!r}, expected {family.model_class!r} "
                          f"for a {family.name} model directory")
    return files, config


def folder_arch(family: Any, files: ModelFiles, config: dict) -> dict:
    """The family's architecture config, its errors naming the config file."""
    try:
        return family.arch_config(config)
    except SourceError as e:
        raise SourceError(f"{files.config}: {e}") from None


def loaded_model(family: Any, model: Any, files: ModelFiles, config: dict, arch: dict, stats: dict, *,
                 hash_weights: bool) -> LoadedModel:
    """The loaded model, told which preset its architecture is (the exporters read `toneserve_preset`)."""
    preset = family.detect_preset(arch)
    model.toneserve_preset = preset
    return LoadedModel(family=family.name, model=model, files=files, config=config, preset=preset,
                       arch_config=arch, load=stats, weights_sha256=sha256_file(files.weights) if hash_weights else "")


def export_graphs(export_onnx: Callable[..., dict], family: Any, out_dir: Path, *, preset: str | None, seed: int,
                  model_dir: Path | None, source: dict | None, verify: bool, trust_checkpoint: bool) -> dict:
    """Export a folder's model (loaded as `family.load` does) or random weights of a preset."""
    if model_dir is not None:
        loaded = family.load(model_dir, trust_checkpoint=trust_checkpoint)
        return export_onnx(out_dir, seed=seed, verify=verify, loaded=loaded, source=source)
    return export_onnx(out_dir, preset or family.default_preset, seed, verify=verify, source=source)
