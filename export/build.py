"""`toneserve export`: build every model the repository serves, with its variants.

Per family (emotion2vec+, SenseVoiceSmall) a weight source is resolved (hub id, local
directory, or random weights of a preset), exported to ONNX with its parity gate, then the
variants are derived from the fp32 graph: int8 (dynamic, MatMul only; the cpu profile may
serve it) and fp16 (for the gpu profile), each with a parity report in the manifest.

Size presets say which sources to use when none is given:
- ``tiny``: both models shrunk to test size, random weights (seconds to export);
- ``base``: the real models from the hub where it is reachable, otherwise random weights of
  the real architectures (emotion2vec+ base, SenseVoiceSmall), said loudly.

Re-running is cheap: an export whose manifest records the same source and seed, and whose
files still hash as recorded, is reused; so is a variant built from the same fp32 graph.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper
from tqdm import tqdm

from toneserve.export.artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from toneserve.export.sources import (
    FAMILIES,
    HUB_IDS,
    Source,
    SourceUnavailable,
    export_from_source,
    parse_source,
    resolve,
)
from toneserve.export.variants import convert_fp16, parity_report, quantize_int8, run_onnx
from toneserve.samples import speechlike

VARIANTS = ("int8", "fp16")
SIZE_PRESETS = {
    "tiny": {"emotion2vec": "tiny", "sensevoice": "tiny"},
    "base": {"emotion2vec": "base", "sensevoice": "small"},
}
# What `--size base` tries first: the real weights.
DEFAULT_HUB = {"emotion2vec": HUB_IDS["emotion2vec"][0], "sensevoice": HUB_IDS["sensevoice"][0]}


def _log(message: str) -> None:
    tqdm.write(f"[export] {message}", file=sys.stderr)  # prints above a running progress bar


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _intact(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in files.items())


def is_current(folder: Path, source: Source, seed: int) -> bool:
    """True when `folder` holds a complete, unmodified export of `source` (and `seed` for random)."""
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("source") != source.describe():
        return False
    if source.kind == "random" and manifest.get("seed") != seed:
        return False
    return _intact(folder, manifest.get("files", {}))


# ---------------------------------------------------------------------------------------------
# Parity inputs per family: the variants are judged on realistic, mixed-length, padded batches.
# ---------------------------------------------------------------------------------------------

def _padded_audio(seconds=(1.5, 2.5, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    clips = [speechlike(s, seed=i) for i, s in enumerate(seconds)]
    lens = np.array([len(c) for c in clips], np.int64)
    wav = np.zeros((len(clips), lens.max()), np.float32)
    for i, clip in enumerate(clips):
        wav[i, :len(clip)] = clip
    return wav, lens


def _emotion2vec_parity(folder: Path) -> tuple[dict, dict]:
    wav, lens = _padded_audio()
    return {"wav": wav, "wav_lens": lens}, {"top1_axis": {"logits": -1}}


def _sensevoice_parity(folder: Path) -> tuple[dict, dict]:
    wav, lens = _padded_audio()
    front = run_onnx(folder / "frontend.onnx", {"wav": wav, "wav_lens": lens})
    assets = json.loads((folder / "decode_assets.json").read_text())
    feeds = {"speech": front["feats"], "speech_lengths": front["feat_lens"],
             "language": np.full(len(lens), assets["language_query_ids"]["auto"], np.int64),
             "textnorm": np.full(len(lens), assets["textnorm_query_ids"]["woitn"], np.int64)}
    return feeds, {"valid_lengths": {"ctc_logits": ("encoder_out_lens", 1)}, "top1_axis": {"ctc_logits": -1}}


@dataclass(frozen=True)
class Family:
    name: str
    graph: str  # the fp32 graph the variants are derived from
    parity_inputs: Callable[[Path], tuple[dict, dict]]

    def variant_file(self, variant: str) -> str:
        stem = self.graph.removesuffix(".onnx")
        return f"{stem}.{variant}.onnx"


FAMILY = {"emotion2vec": Family("emotion2vec", "model.onnx", _emotion2vec_parity),
          "sensevoice": Family("sensevoice", "encoder.onnx", _sensevoice_parity)}


def build_variants(folder: Path, family: Family, variants=VARIANTS, progress=None) -> dict:
    """Derive `variants` from the fp32 graph in `folder`; record files and parity in the manifest."""
    manifest = _read_manifest(folder)
    base_digest = manifest["files"][family.graph]
    recorded = manifest.get("variants", {})
    makers = {"int8": quantize_int8, "fp16": convert_fp16}
    feeds = options = None
    for variant in variants:
        name = family.variant_file(variant)
        entry = recorded.get(variant)
        if entry and entry.get("from") == base_digest and _intact(folder, entry["files"]):
            _log(f"{family.name}: {variant} variant is current")
        else:
            if progress:
                progress.set_description(f"{family.name}: {variant} variant")
            started = time.perf_counter()
            makers[variant](folder / family.graph, folder / name)
            if feeds is None:
                feeds, options = family.parity_inputs(folder)
            report = parity_report(folder / family.graph, folder / name, feeds, **options)
            recorded[variant] = {"from": base_digest, "files": {name: sha256_file(folder / name)},
                                 "parity_vs_fp32": report, "seconds": round(time.perf_counter() - started, 1)}
            _log(f"{family.name}: {variant} -> {name} ({(folder / name).stat().st_size / 1e6:.0f} MB); "
                 f"parity vs fp32: {_summary(report)}")
        if progress:
            progress.update(1)
    manifest["variants"] = recorded
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


def _summary(report: dict) -> str:
    parts = []
    for output, entry in report.items():
        if "max_abs_diff" in entry and entry["max_abs_diff"] is not None:
            text = f"{output} max|d| {entry['max_abs_diff']:.3g}"
            if entry.get("top1_agreement") is not None:
                text += f", top-1 {entry['top1_agreement']:.1%}"
            parts.append(text)
    return "; ".join(parts)


def choose_source(family: str, size: str, requested: str | None) -> tuple[Source, Source | None]:
    """The source to try and, for the default of `--size base`, the random fallback."""
    preset = SIZE_PRESETS[size][family]
    if requested:
        return parse_source(requested, family), None
    if size == "tiny":
        return Source("random", preset, family), None
    return parse_source(DEFAULT_HUB[family], family), Source("random", preset, family)


def export_family(family: str, folder: Path, source: Source, fallback: Source | None, seed: int, force: bool,
                  cache_dir: Path | None = None) -> dict:
    for candidate in (source, fallback):
        if candidate is None:
            continue
        if not force and is_current(folder, candidate, seed):
            _log(f"{family} from {candidate} is current in {folder}")
            return _read_manifest(folder)
        try:
            model_dir = resolve(candidate, cache_dir)
        except SourceUnavailable as exc:
            if fallback is None or candidate is fallback:
                raise
            _log(f"{family}: {exc}")
            _log(f"{family}: FALLING BACK TO RANDOM WEIGHTS ({fallback}): real architecture, meaningless outputs")
            continue
        what = "RANDOM weights" if candidate.kind == "random" else f"weights from {model_dir}"
        _log(f"{family}: exporting {candidate} ({what}) ...")
        started = time.perf_counter()
        manifest = export_from_source(family, candidate, folder, seed=seed, cache_dir=cache_dir)
        _log(f"{family}: exported in {time.perf_counter() - started:.1f} s -> {folder}")
        return manifest
    raise AssertionError("unreachable: a source either exports or raises")


def softmax_onnx(path: Path, classes: int) -> None:
    """A one-node ONNX graph [B, C] logits -> [B, C] probabilities: the emotion ensemble's last step."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)], "emotion_softmax",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])])
    # IR 9 loads in every ONNX Runtime we serve with (the NGC container's may be older than ours).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())


def export_models(models_root: Path, size: str = "tiny", seed: int = 0, force: bool = False,
                  sources: dict[str, str | None] | None = None, variants=VARIANTS,
                  cache_dir: Path | None = None) -> Path:
    """Export both families (and their variants) under `models_root`; returns it."""
    if size not in SIZE_PRESETS:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZE_PRESETS)}")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    sources = sources or {}
    # Resolve every source spec before the long work, so a typo fails in a second, not after an export.
    plans = {family: choose_source(family, size, sources.get(family)) for family in FAMILIES}
    # FunASR prints an ffmpeg notice on import that does not apply (we never load audio through
    # it), and torch's exporter warns about torchvision ops we do not use.
    with contextlib.redirect_stdout(io.StringIO()):
        import funasr  # noqa: F401
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    models_root = Path(models_root)
    steps = len(FAMILIES) * (1 + len(variants))
    with tqdm(total=steps, desc="export", unit="step", file=sys.stderr, dynamic_ncols=True) as progress:
        for family in FAMILIES:
            folder = models_root / family
            source, fallback = plans[family]
            progress.set_description(f"{family}: fp32")
            manifest = export_family(family, folder, source, fallback, seed, force, cache_dir)
            progress.update(1)
            if family == "emotion2vec":
                softmax_onnx(folder / "softmax.onnx", len(manifest["labels"]))
            build_variants(folder, FAMILY[family], variants, progress)
    return models_root
