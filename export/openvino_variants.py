"""OpenVINO precisions of an exported fp32 graph, for the cpu profile, each judged against ONNX Runtime.

The "openvino" variant (``toneserve export --variants openvino``) records, in the manifest's
``variants.openvino``, which OpenVINO precisions of the family's fp32 graph may be served:

* ``fp32``: the ONNX graph compiled by OpenVINO with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would
  otherwise pick bf16 by itself on a CPU that has it); gate: max abs difference <= 1e-4.
* ``bf16``: the same graph compiled with ``INFERENCE_PRECISION_HINT=bf16``. No file: the serving runner
  compiles the fp32 ONNX graph with that hint. Not passed on a CPU without bf16.
* ``int8w`` and ``int8w-bf16``: int8 weights (``nncf.compress_weights``, INT8_ASYM, one scale and zero point per
  output channel), activations computed in f32, respectively bf16 (not passed on a CPU without bf16). The
  graph's output projection, its last MatMul, keeps float weights: on the base models with random weights,
  SenseVoice's CTC head (512 x 25055) in int8 moved its top-1 agreement from 97.8 % to 96.7 %, below the gate,
  for 51 MB. Saved as OpenVINO IR beside the graph (the weights a quarter of fp32's). OpenVINO's CPU plugin
  keeps such weights in int8 and, on a CPU with VNNI, quantizes the activations of those layers to int8 per
  group at run time (its dynamic quantization): measured on the base SenseVoice encoder (AMD EPYC with
  avx512_bf16 and VNNI, 2 streams x 1 thread) 1.74x the speed of f32 in a third of the memory
  (docs/BENCHMARKS.md, "Int8 weights").
* ``int8``: static int8 by NNCF (``nncf.quantize``), calibrated on the project's own speech-like audio
  (``toneserve.samples.speechlike``) plus, optionally, a folder of the user's recordings
  (``--calibration DIR``); saved as OpenVINO IR (xml + bin) beside the graph. A family whose graph does not
  read audio (text sentiment) gives its own calibration feeds instead (``calibration_feeds``, see
  ``calibration_items``). The graph's first weighted layer (the one reading the input) stays float and
  SmoothQuant is off (``_quantize``, ``QUANTIZE_RECIPE``). The layers left float compute in f32 (``int8``) or,
  judged on its own, in bf16 (``int8-bf16``; not passed on a CPU without bf16).

bf16, int8w, int8 and int8-bf16 are judged by ``gates.judge`` against ONNX Runtime fp32 on the family's parity
inputs, with the gate of the family's ``gate_kind`` (``gates.GATES``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from toneserve.console import CommandError
from toneserve.contract import INFERENCE_PRECISION
from toneserve.export.artifacts import sha256_file
from toneserve.export.families import get
from toneserve.export.family import ModelFamily
from toneserve.export.gates import GATES, gate_report, judge
from toneserve.export.variants import run_onnx
from toneserve.samples import speechlike

RATE = 16000

# Calibration: NNCF collects activation statistics by running the graph once per item, and its
# min/max + SmoothQuant statistics settle within a few items; more items cost export time linearly
# (a base encoder call is ~0.2 s here, and NNCF runs each item more than once). 12 speech-like clips
# of 4 s (plus up to 16 of the user's) keep the int8 build to tens of seconds on base models.
# Every item has the same length: NNCF stacks the per-item statistics and fails on ragged shapes.
CALIBRATION_ITEMS = 12
CALIBRATION_SECONDS = 4.0
CALIBRATION_USER_MAX = 16
CALIBRATION_SEED = 1000  # not the parity clips' seeds (0..2): calibration and judging use other audio
AUDIO_SUFFIXES = (".wav", ".flac")

# NNCF presets tried in this order; the first whose parity passes the gate is kept, else the best
# (``_score``). "performance" (symmetric activations) is the faster kind on CPUs; "mixed" (asymmetric
# activations) was tried too and was no closer on the base models (random weights; emotion2vec max
# probability difference 0.034 vs 0.032, SenseVoice CTC frame top-1 80.4 % vs 82.6 %) while doubling
# the NNCF time (~3 min more for the SenseVoice encoder here), so it is not tried by default.
PRESETS: tuple[str, ...] = ("performance",)

# A compile that fails with the default config is retried with this: OpenVINO's snippets (its fused
# subgraph code generator) failed to compile the int8 SenseVoice encoder.
FALLBACK_COMPILE = {"SNIPPETS_MODE": "DISABLE"}


class CalibrationError(CommandError, ValueError):
    """A calibration folder that cannot be used (missing, unreadable, no decodable audio in it)."""


def ir_name(family: ModelFamily, kind: str = "int8") -> str:
    """The IR file of a variant: ``int8`` (static int8) or ``int8w`` (int8 weights)."""
    assert family.graph is not None
    return f"{family.graph.removesuffix('.onnx')}.openvino-{kind}.xml"


# The precisions the weight-compressed IR is judged at, and the inference precision hint each computes in.
WEIGHT_COMPRESSED = {precision: INFERENCE_PRECISION[precision] for precision in ("int8w", "int8w-bf16")}
# Every precision an entry records: one built by an older toneserve, without some of them, is rebuilt. "int8" and
# "int8-bf16" are the static int8 IR, the layers it leaves float computed in f32 / bf16.
RECORDED = ("fp32", "bf16", *WEIGHT_COMPRESSED, "int8", "int8-bf16")
# How the static int8 IR is quantized (_quantize); an entry whose IR was quantized otherwise is rebuilt.
QUANTIZE_RECIPE = "first layer float, no SmoothQuant, activations per tensor"


# ------------------------------------------------------------------------------------ calibration


def _fit(clip: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros(samples, np.float32)
    out[:min(samples, len(clip))] = clip[:samples]
    return out


def decode_audio(path: Path) -> np.ndarray:
    """A file's first audio stream as 16 kHz mono float32 (PyAV, as the samples are encoded)."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    if not chunks:
        raise ValueError("no audio decoded")
    return np.concatenate(chunks).astype(np.float32)


def user_clips(folder: Path, seconds: float = CALIBRATION_SECONDS, limit: int = CALIBRATION_USER_MAX) -> list:
    """The first ``seconds`` of up to ``limit`` wav/flac files of ``folder`` (sorted by path, searched
    recursively), cut or zero-padded to the same length. Raises CalibrationError when none decodes."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist or is not a folder")
    try:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    except OSError as exc:
        raise CalibrationError(f"calibration folder {folder} cannot be read: {exc}") from None
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no {'/'.join(AUDIO_SUFFIXES)} files")
    samples = int(seconds * RATE)
    clips: list[np.ndarray] = []
    failed: list[str] = []
    for path in files:
        if len(clips) == limit:
            break
        try:
            clips.append(_fit(decode_audio(path), samples))
        except (OSError, ValueError) as exc:  # av's errors are OSError / ValueError subclasses
            failed.append(f"{path.name}: {exc}")
    if not clips:
        raise CalibrationError(f"calibration folder {folder}: no file could be decoded ({'; '.join(failed[:3])})")
    return clips


def calibration_clips(user_folder: Path | None = None, items: int = CALIBRATION_ITEMS,
                      seconds: float = CALIBRATION_SECONDS) -> tuple[list[np.ndarray], list]:
    """Equal-length clips to calibrate on, and their sources (``["speechlike", folder or None]``)."""
    samples = int(seconds * RATE)
    clips = [_fit(speechlike(seconds, RATE, seed=CALIBRATION_SEED + i), samples) for i in range(items)]
    user = None
    if user_folder is not None:
        clips += user_clips(Path(user_folder), seconds)
        user = str(Path(user_folder).expanduser().resolve())
    return clips, ["speechlike", user]


def calibration_items(family: ModelFamily, folder: Path, user_folder: Path | None = None) -> tuple[list[dict], dict]:
    """The feeds the int8 variant calibrates on, and their description for the manifest. An audio family: the
    speech-like clips (and the user's recordings) through its ``audio_feeds``; a family with its own
    ``calibration_feeds(folder, user_folder)`` (one that does not read audio): what that gives."""
    own = getattr(family, "calibration_feeds", None)
    if own is not None:
        return own(Path(folder), user_folder)
    clips, sources = calibration_clips(user_folder)
    items = [family.audio_feeds(folder, clip[None, :], np.array([len(clip)], np.int64)) for clip in clips]
    return items, {"items": len(clips), "item_seconds": CALIBRATION_SECONDS, "sources": sources}


def calibration_sources(family: ModelFamily | None, user_folder: Path | None) -> list:
    """What the manifest records as the int8 calibration's sources for ``family`` and ``user_folder``."""
    own = getattr(family, "calibration_sources", None)
    if own is not None:
        return own(user_folder)
    return ["speechlike", str(Path(user_folder).expanduser().resolve()) if user_folder is not None else None]


# ----------------------------------------------------------------------------------------- OpenVINO


def _name(port, known) -> str:
    """The port's name among ``known``: OpenVINO gives a port every name its tensor had in the ONNX
    graph (``get_any_name`` may return an inner one, e.g. a Cast's output)."""
    names = port.get_names()
    found = [n for n in known if n in names]
    if not found:
        raise ValueError(f"no OpenVINO port named {sorted(names)} among {sorted(known)}")
    return found[0]


def input_names(model, feeds) -> list[str]:
    return [_name(port, feeds) for port in model.inputs]


def port_inputs(names: list[str], feeds: dict) -> list[np.ndarray]:
    """The feeds in port order, each with its canonical numpy dtype: ONNX Runtime returns int64 as
    numpy's ``longlong`` (char "q"), which OpenVINO's Python binding refuses ("Unsupported data type")."""
    return [np.ascontiguousarray(feeds[n], dtype=np.dtype(np.asarray(feeds[n]).dtype.str)) for n in names]


def _run(compiled, feeds: dict, outputs) -> dict[str, np.ndarray]:
    results = compiled(port_inputs(input_names(compiled, feeds), feeds))
    return {_name(o, outputs): np.asarray(results[o]) for o in compiled.outputs}


def _compile_run(core, model, config: dict, feeds: dict, outputs) -> tuple[Any, dict, dict]:
    """Compile on CPU with ``config`` and run ``feeds``; when either fails, retry with
    ``FALLBACK_COMPILE`` added (with dynamic shapes a kernel may first be built at the first call).
    Returns the compiled model, the config that worked and the outputs."""
    try:
        compiled = core.compile_model(model, "CPU", config)
        return compiled, dict(config), _run(compiled, feeds, outputs)
    except Exception:  # noqa: BLE001 - OpenVINO raises its own exception types from C++
        retry = {**config, **FALLBACK_COMPILE}
        compiled = core.compile_model(model, "CPU", retry)
        return compiled, retry, _run(compiled, feeds, outputs)


def cpu_description(core) -> str:
    """What the CPU offers OpenVINO: its name, OpenVINO's capabilities, and the relevant cpuinfo flags."""
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = sorted(f for f in flags if re.fullmatch(r"amx_\w+|avx512_(bf16|vnni|fp16)|avx512f|avx_vnni|avx2", f))
    return (f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}; OpenVINO capabilities {', '.join(caps)}; "
            f"flags {' '.join(wanted) or 'unknown'}")


def _save_ir(model, dst_xml: Path) -> None:
    """``openvino.save_model`` (weights as they are: no fp16 compression) into a temporary folder beside
    ``dst_xml``, then the bin and the xml moved into place; a failure leaves no partial IR."""
    import openvino as ov  # type: ignore[import-untyped]

    tmp = Path(tempfile.mkdtemp(prefix=f".{dst_xml.name}.", suffix=".tmp", dir=dst_xml.parent))
    try:
        staged = tmp / dst_xml.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        for path in (staged.with_suffix(".bin"), staged):  # the xml, which names the bin, last
            os.chmod(path, 0o644)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(path, dst_xml.parent / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def first_layer(model) -> str:
    """The name of the graph's first weighted layer (a Convolution or MatMul with constant weights, in
    topological order): the one that reads the input itself (emotion2vec+'s convolution over the raw waveform,
    SenseVoice's first attention projection of the filterbank features)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul") and \
                op.input_value(1).get_node().get_type_name() in ("Constant", "Convert"):
            return op.get_friendly_name()
    raise ValueError("the graph has no Convolution or MatMul with constant weights")


def _quantize(core, graph: Path, items: list[dict], preset: str):
    import nncf  # type: ignore[import-untyped]
    from nncf.quantization.advanced_parameters import (  # type: ignore[import-untyped]
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        QuantizationParameters,
    )

    model = core.read_model(str(graph))
    names = input_names(model, items[0])
    dataset = nncf.Dataset(items, lambda item: port_inputs(names, item))
    # Activations per tensor: left to itself NNCF gave SenseVoice's FSMN memory block (a depthwise
    # conv after a transpose) one activation scale per *frame* of the calibration length, and the
    # graph then failed on any other length ("Eltwise shape infer ... mismatch").
    # The first layer keeps float weights and inputs, and SmoothQuant is off (QUANTIZE_RECIPE): measured on the
    # base emotion2vec+ (random weights, AMD EPYC with avx512_bf16 and VNNI, docs/BENCHMARKS.md "Static int8,
    # the first layer float"), the largest probability difference was 0.032 with NNCF's defaults, 0.023 without
    # SmoothQuant, 0.003 without SmoothQuant and with the convolution over the raw waveform left float (gate
    # 0.02); leaving every convolution float passed too, but ran 1.3x (bf16) to 2x (f32) slower.
    with _quiet_nncf():
        return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset(preset),
                             model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items),
                             ignored_scope=nncf.IgnoredScope(names=[first_layer(model)]),
                             advanced_parameters=AdvancedQuantizationParameters(
                                 activations_quantization_params=QuantizationParameters(per_channel=False),
                                 smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)))


def _compress_weights(core, graph: Path):
    """``graph`` with int8 weights (NNCF, INT8_ASYM per output channel), its last MatMul (the output
    projection) left float."""
    import nncf  # type: ignore[import-untyped]

    model = core.read_model(str(graph))
    matmuls = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    ignored = nncf.IgnoredScope(names=matmuls[-1:])
    with _quiet_nncf():
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=ignored)


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs what it compressed or left out (through a handler on the stdout it found at import, which
    redirect_stdout does not reach) and draws its own bars on stdout; either would tear the export's own bar on
    stderr, whose step description names what runs."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _score(passed: bool, gate: dict) -> tuple:
    """Which of two int8 attempts to keep: a pass, then the higher agreement, then the smaller
    probability difference (a not-finite one is worst)."""
    prob = gate.get("measured_max_prob_diff", 0.0)
    return passed, gate.get("measured_top1_agreement", 0.0), -(prob if prob is not None else float("inf"))


def is_current(folder: Path, entry: dict | None, base_digest: str, calibration: Path | None) -> bool:
    """A recorded entry built from this fp32 graph, with this OpenVINO and calibration, files intact. The
    calibration sources expected are those of the family whose manifest is in ``folder``."""
    import openvino as ov  # type: ignore[import-untyped]

    if not entry or entry.get("from") != base_digest or entry.get("openvino_version") != ov.__version__:
        return False
    if set(RECORDED) - set(entry.get("precisions") or {}):
        return False
    int8 = (entry.get("precisions") or {}).get("int8") or {}
    if int8.get("recipe") != QUANTIZE_RECIPE:
        return False
    sources = int8.get("calibration", {}).get("sources")
    if sources != calibration_sources(_folder_family(folder), calibration):
        return False
    return all((folder / n).is_file() and sha256_file(folder / n) == d for n, d in entry.get("files", {}).items())


def _folder_family(folder: Path) -> ModelFamily | None:
    try:
        return get(json.loads((Path(folder) / "manifest.json").read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build(folder: Path, family: ModelFamily, base_digest: str, calibration: Path | None = None,
          step: Callable[[str], None] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Build and judge the OpenVINO precisions of ``family``'s fp32 graph in ``folder``; the manifest
    entry. ``step`` is told each phase (a progress bar's description), ``log`` each result."""
    import openvino as ov  # type: ignore[import-untyped]

    step = step or (lambda text: None)
    log = log or (lambda text: None)
    folder = Path(folder)
    assert family.graph is not None
    graph = folder / family.graph
    started = time.perf_counter()
    # Calibration problems (a bad --calibration folder) fail before any slow work.
    items, described = calibration_items(family, folder, calibration)
    feeds, options = family.parity_inputs(folder)
    reference = run_onnx(graph, feeds)
    core = ov.Core()
    source_model = core.read_model(str(graph))
    precisions: dict[str, dict] = {}

    step(f"{family.name}: openvino f32")
    _, _, out = _compile_run(core, source_model, {"INFERENCE_PRECISION_HINT": "f32"}, feeds, reference)
    report = gate_report(family, reference, out, feeds, options)
    passed, gate = judge(family.name, report, "fp32")
    precisions["fp32"] = {"passed": passed, "gate": gate, "parity": report}

    step(f"{family.name}: openvino bf16")
    cpu = cpu_description(core)
    bf16_cpu = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if not bf16_cpu:
        precisions["bf16"] = {"passed": False, "reason": "cpu has no bf16", "gate": {"kind": family.gate_kind,
                              **GATES[str(family.gate_kind)]}, "parity": None, "cpu": cpu}
    else:
        _, _, out = _compile_run(core, source_model, {"INFERENCE_PRECISION_HINT": "bf16"}, feeds, reference)
        report = gate_report(family, reference, out, feeds, options)
        passed, gate = judge(family.name, report, "bf16")
        precisions["bf16"] = {"passed": passed, "gate": gate, "parity": report, "cpu": cpu}

    def judged(precision: str, model, file: str) -> dict:
        """An IR's precision judged at its inference precision (INFERENCE_PRECISION), or failed where that is
        bf16 and the CPU has none."""
        hint = INFERENCE_PRECISION[precision]
        if hint == "bf16" and not bf16_cpu:
            return {"passed": False, "reason": "cpu has no bf16", "file": file, "parity": None, "cpu": cpu,
                    "gate": {"kind": family.gate_kind, **GATES[str(family.gate_kind)]}}
        _, config, out = _compile_run(core, model, {"INFERENCE_PRECISION_HINT": hint}, feeds, reference)
        report = gate_report(family, reference, out, feeds, options)
        passed, gate = judge(family.name, report, precision)
        log(f"{family.name}: openvino {precision}: {'passed' if passed else 'FAILED'} {gate}")
        config.pop("INFERENCE_PRECISION_HINT")  # the served precision's, set by the renderer
        return {"passed": passed, "file": file, "gate": gate, "parity": report, "compile_config": config,
                "cpu": cpu}

    compressed_name = ir_name(family, "int8w")
    step(f"{family.name}: openvino int8 weights")
    t0 = time.perf_counter()
    compressed = _compress_weights(core, graph)
    seconds = round(time.perf_counter() - t0, 1)
    for precision in WEIGHT_COMPRESSED:
        precisions[precision] = {**judged(precision, compressed, compressed_name), "seconds": seconds}
    _save_ir(compressed, folder / compressed_name)
    del compressed

    name = ir_name(family)
    best: dict | None = None
    for preset in PRESETS:
        step(f"{family.name}: openvino int8 (NNCF {preset}, {len(items)} items)")
        t0 = time.perf_counter()
        quantized = _quantize(core, graph, items, preset)
        seconds = round(time.perf_counter() - t0, 1)
        # int8 runs in f32 where it is not int8: the gate judges quantisation, not bf16 on top of it.
        _, config, out = _compile_run(core, quantized, {"INFERENCE_PRECISION_HINT": "f32"}, feeds, reference)
        report = gate_report(family, reference, out, feeds, options)
        passed, gate = judge(family.name, report, "int8")
        log(f"{family.name}: openvino int8 ({preset}): {'passed' if passed else 'FAILED'} {gate}")
        if best is None or _score(passed, gate) > _score(best["passed"], best["gate"]):
            best = {"passed": passed, "file": name, "gate": gate, "parity": report, "preset": preset,
                    "recipe": QUANTIZE_RECIPE, "compile_config": config, "model": quantized,
                    "calibration": {"items": described["items"], "seconds": seconds,
                                    **{k: v for k, v in described.items() if k != "items"}}}
        if passed:
            break
    assert best is not None
    quantized = best.pop("model")
    precisions["int8"] = best
    # The same IR with the layers it leaves float computed in bf16: judged on its own, served before int8 on a bf16
    # CPU where it passes (catalog.BF16_PREFERENCE).
    step(f"{family.name}: openvino int8, the rest bf16")
    precisions["int8-bf16"] = judged("int8-bf16", quantized, name)
    _save_ir(quantized, folder / name)
    del quantized
    files = {}
    for xml in (compressed_name, name):
        for file in (xml, str(Path(xml).with_suffix(".bin"))):
            files[file] = sha256_file(folder / file)
    return {"from": base_digest, "files": files,
            "runtime": "openvino", "openvino_version": ov.__version__, "precisions": precisions,
            "seconds": round(time.perf_counter() - started, 1)}


def summary(entry: dict) -> str:
    parts = []
    for precision, e in entry["precisions"].items():
        gate = e["gate"]
        measured = {k.removeprefix("measured_"): v for k, v in gate.items() if k.startswith("measured_")}
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in measured.items())
        parts.append(f"{precision} {'passed' if e['passed'] else 'FAILED'}"
                     f"{' (' + text + ')' if text else ''}{' ' + e['reason'] if e.get('reason') else ''}")
    return "; ".join(parts)
