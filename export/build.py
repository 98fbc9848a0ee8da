"""`toneserve export`: build every model the repository serves, with its variants.

Per exported family (``toneserve.export.families``) a weight source is resolved (hub id, local
directory, or random weights of a preset), exported to ONNX with its parity gate, then the variants
are derived from the fp32 graph: int8 (dynamic, MatMul only; the cpu profile may serve it), fp16
(for the gpu profile), each with a parity report in the manifest and its verdict by the family's gate
(``gates``), and openvino (OpenVINO f32, bf16 and NNCF static int8 for the cpu profile, each judged by the
same gates: ``openvino_variants``).

Sizes say which sources to use when none is given (each family's ``size_presets``):
- ``tiny``: every model shrunk to test size, random weights (seconds to export);
- ``base``: the real models from the hub where it is reachable, otherwise random weights of the
  real architectures (emotion2vec+ base, SenseVoiceSmall), said loudly.

Re-running is cheap: an export whose manifest records the same source and seed, and whose files
still hash as recorded, is reused; so is a variant built from the same fp32 graph.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from toneserve.export.artifacts import atomic_write_json, sha256_file
from toneserve.export.errors import SourceError, SourceUnavailable
from toneserve.export.families import exported, get
from toneserve.export.family import MANIFEST_SCHEMA, ModelFamily
from toneserve.export.gates import gate_report, judge
from toneserve.export.sources import Source, export_resolved, parse_source, resolve
from toneserve.export.variants import convert_fp16, quantize_int8, run_onnx

VARIANTS = ("int8", "fp16", "openvino")
SIZES = ("tiny", "base")


def variant_file(family: ModelFamily, variant: str) -> str:
    assert family.graph is not None
    return f"{family.graph.removesuffix('.onnx')}.{variant}.onnx"


def _log(message: str) -> None:
    tqdm.write(f"[export] {message}", file=sys.stderr)  # prints above a running progress bar


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _intact(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in files.items())


_SOURCE_KEYS = ("kind", "ref", "hub", "revision")  # what names a source (a hub's digests are what it gave)


def is_current(folder: Path, source: Source, seed: int) -> bool:
    """True when `folder` holds a complete, unmodified export of `source` (and `seed` for random)."""
    manifest = _read_manifest(folder)
    if manifest is None or not isinstance(manifest.get("source"), dict):
        return False
    if manifest.get("schema") != MANIFEST_SCHEMA:  # an older exporter's graphs lack what serving now reads
        return False
    recorded = {k: manifest["source"].get(k) for k in _SOURCE_KEYS if k in manifest["source"]}
    if recorded != source.describe():
        return False
    if source.kind == "random" and manifest.get("seed") != seed:
        return False
    return _intact(folder, manifest.get("files", {}))


def build_variants(folder: Path, family: ModelFamily, variants=VARIANTS, progress=None,
                   calibration: Path | None = None) -> dict:
    """Derive `variants` from the fp32 graph in `folder`; record files and parity in the manifest.
    `calibration`: a folder of the user's recordings the openvino variant's int8 calibrates on too."""
    manifest = _read_manifest(folder)
    assert manifest is not None and family.graph is not None
    base_digest = manifest["files"][family.graph]
    recorded = manifest.get("variants", {})
    makers: dict[str, Callable[[Path, Path], None]] = {"int8": quantize_int8, "fp16": convert_fp16}
    feeds: dict | None = None
    options: dict = {}
    reference: dict = {}
    for variant in variants:
        if variant == "openvino":
            recorded[variant] = _openvino_variant(folder, family, base_digest, recorded.get(variant), calibration,
                                                  progress)
            if progress:
                progress.update(1)
            continue
        name = variant_file(family, variant)
        entry = recorded.get(variant)
        # An entry without a gate (recorded before variants were judged) is rebuilt.
        if entry and "gate" in entry and entry.get("from") == base_digest and _intact(folder, entry["files"]):
            _log(f"{family.name}: {variant} variant is current")
        else:
            if progress:
                progress.set_description(f"{family.name}: {variant} variant")
            started = time.perf_counter()
            makers[variant](folder / family.graph, folder / name)
            if feeds is None:
                feeds, options = family.parity_inputs(folder)
                reference = run_onnx(folder / family.graph, feeds)
            # Judged by the family's gate, as OpenVINO's precisions are (gates.py).
            report = gate_report(family, reference, run_onnx(folder / name, feeds), feeds, options)
            passed, gate = judge(family.name, report)
            recorded[variant] = {"from": base_digest, "files": {name: sha256_file(folder / name)},
                                 "parity_vs_fp32": report, "passed": passed, "gate": gate,
                                 "seconds": round(time.perf_counter() - started, 1)}
            _log(f"{family.name}: {variant} -> {name} ({(folder / name).stat().st_size / 1e6:.0f} MB); "
                 f"parity vs fp32: {_summary(report)}; gate {'passed' if passed else 'FAILED'}")
        if progress:
            progress.update(1)
    manifest["variants"] = recorded
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


def _openvino_variant(folder: Path, family: ModelFamily, base_digest: str, entry: dict | None,
                      calibration: Path | None, progress) -> dict:
    from toneserve.export import openvino_variants

    if openvino_variants.is_current(folder, entry, base_digest, calibration):
        _log(f"{family.name}: openvino variant is current")
        assert entry is not None
        return entry
    step = progress.set_description if progress else None
    entry = openvino_variants.build(folder, family, base_digest, calibration, step=step, log=_log)
    _log(f"{family.name}: openvino -> {', '.join(entry['files'])} in {entry['seconds']} s: "
         f"{openvino_variants.summary(entry)}")
    return entry


def _summary(report: dict) -> str:
    parts = []
    for output, entry in report.items():
        if "max_abs_diff" in entry and entry["max_abs_diff"] is not None:
            text = f"{output} max|d| {entry['max_abs_diff']:.3g}"
            if entry.get("top1_agreement") is not None:
                text += f", top-1 {entry['top1_agreement']:.1%}"
            parts.append(text)
    return "; ".join(parts)


def choose_source(family: str, size: str, requested: str | None,
                  revision: str | None = None) -> tuple[Source, Source | None]:
    """The source to try and, for the default of `--size base`, the random fallback."""
    fam = get(family)
    preset = fam.size_presets[size]
    if requested:
        return parse_source(requested, family, revision=revision), None
    if size == "tiny" or fam.default_hub_id is None:
        return Source("random", preset, family), None
    return parse_source(fam.default_hub_id, family), Source("random", preset, family)


def export_family(family: str, folder: Path, source: Source, fallback: Source | None, seed: int, force: bool,
                  cache_dir: Path | None = None, trust_checkpoint: bool = False) -> dict:
    for candidate in (source, fallback):
        if candidate is None:
            continue
        if not force and is_current(folder, candidate, seed):
            _log(f"{family} from {candidate} is current in {folder}")
            manifest = _read_manifest(folder)
            assert manifest is not None
            return manifest
        try:
            model_dir = resolve(candidate, cache_dir)
        except SourceUnavailable as exc:
            if fallback is None or candidate is fallback:
                raise
            _log(f"{family}: {exc}")
            _log(f"{family}: FALLING BACK TO RANDOM WEIGHTS ({fallback}): real architecture, meaningless outputs")
            continue
        if candidate.kind != "random":
            what = f"weights from {model_dir}"
        elif get(family).presets.get(candidate.ref, {}).get("weights") == "package":
            what = "the real weights its package ships"  # a preset whose weights are a wheel's (speaker)
        else:
            what = "RANDOM weights"
        _log(f"{family}: exporting {candidate} ({what}) ...")
        started = time.perf_counter()
        manifest = export_resolved(family, candidate, model_dir, folder, seed=seed, trust_checkpoint=trust_checkpoint)
        _log(f"{family}: exported in {time.perf_counter() - started:.1f} s -> {folder}")
        return manifest
    raise AssertionError("unreachable: a source either exports or raises")


def export_models(models_root: Path, size: str = "tiny", seed: int = 0, force: bool = False,
                  sources: dict[str, str | None] | None = None, variants=VARIANTS,
                  cache_dir: Path | None = None, revision: str | None = None,
                  trust_checkpoint: bool = False, calibration: Path | None = None) -> Path:
    """Export every exported family (and its variants) under `models_root`; returns it. `revision` pins
    the hub sources given in `sources`; `trust_checkpoint` opts in to a full (unpickling) load of
    checkpoints `torch.load(weights_only=True)` refuses; `calibration` is a folder of recordings the
    openvino variant's int8 calibrates on besides the project's speech-like audio."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    sources = sources or {}
    if revision and not any(sources.values()):  # else it would pin nothing, silently
        flags = " / ".join(f"--{f.name.replace('_', '-')}" for f in exported())
        raise SourceError(f"--revision {revision!r} pins the hub ids given ({flags}); none was given")
    families = exported()
    # Resolve every source spec before the long work, so a typo fails in a second, not after an export.
    plans = {f.name: choose_source(f.name, size, sources.get(f.name), revision) for f in families}
    if calibration is not None and "openvino" in variants:  # a bad folder fails now, not after an export
        from toneserve.export.openvino_variants import user_clips

        user_clips(Path(calibration))
    # FunASR prints an ffmpeg notice on import that does not apply (we never load audio through
    # it), and torch's exporter warns about torchvision ops we do not use.
    with contextlib.redirect_stdout(io.StringIO()):
        import funasr  # noqa: F401
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    models_root = Path(models_root)
    steps = sum(1 + (len(variants) if f.graph else 0) for f in families)
    with tqdm(total=steps, desc="export", unit="step", file=sys.stderr, dynamic_ncols=True) as progress:
        for fam in families:
            folder = models_root / fam.name
            source, fallback = plans[fam.name]
            progress.set_description(f"{fam.name}: fp32")
            manifest = export_family(fam.name, folder, source, fallback, seed, force, cache_dir, trust_checkpoint)
            progress.update(1)
            fam.after_export(folder, manifest)
            if fam.graph:
                build_variants(folder, fam, variants, progress, calibration)
    return models_root
