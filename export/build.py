"""`toneserve export`: build every model the repository serves, then render the repository.

Size presets map to one preset per model family:
- ``tiny``: both models shrunk to test size (random weights; seconds to export);
- ``base``: emotion2vec+ base and SenseVoiceSmall at their real sizes (random
  weights when no real ones are given: right compute, meaningless outputs).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from pathlib import Path

from .artifacts import atomic_write_bytes

SIZE_PRESETS = {
    "tiny": {"emotion2vec": "tiny", "sensevoice": "tiny"},
    "base": {"emotion2vec": "base", "sensevoice": "small"},
}


def _log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def _current(folder: Path, preset: str, seed: int) -> bool:
    """True when `folder` already holds a complete export of this preset and seed."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (manifest.get("preset") == preset and manifest.get("seed") == seed
            and all((folder / name).is_file() for name in manifest.get("files", {})))


def softmax_onnx(path: Path, classes: int) -> None:
    """A one-node ONNX graph [B, C] logits -> [B, C] probabilities: the ensemble's last step."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)], "emotion_softmax",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])])
    # IR 9 loads in every ONNX Runtime we serve with (the NGC container's may be older than ours).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())


def export_models(models_root: Path, size: str = "tiny", seed: int = 0, force: bool = False) -> Path:
    """Export both model families under `models_root`; reuses exports that are already current."""
    # FunASR prints an ffmpeg notice on import that does not apply (we never load audio
    # through it), and torch's exporter warns about torchvision ops we do not use.
    with contextlib.redirect_stdout(io.StringIO()):
        import funasr  # noqa: F401
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    from . import emotion2vec, sensevoice

    if size not in SIZE_PRESETS:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZE_PRESETS)}")
    models_root = Path(models_root)
    for family, module in (("emotion2vec", emotion2vec), ("sensevoice", sensevoice)):
        preset = SIZE_PRESETS[size][family]
        folder = models_root / family
        if not force and _current(folder, preset, seed):
            _log(f"{family} ({preset}) is current in {folder}")
        else:
            _log(f"{family}: building {preset} with RANDOM weights (no hub weights on this path) ...")
            started = time.perf_counter()
            module.export_onnx(folder, preset=preset, seed=seed)
            _log(f"{family}: done in {time.perf_counter() - started:.1f} s -> {folder}")
        if family == "emotion2vec":
            labels = json.loads((folder / "manifest.json").read_text())["labels"]
            softmax_onnx(folder / "softmax.onnx", len(labels))
    return models_root

