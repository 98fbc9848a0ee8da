"""TensorRT plans (``model.plan`` for Triton's ``tensorrt_plan`` backend) from exported ONNX.

A plan is specific to the GPU model and the TensorRT version that built it, so plans are
built on the target GPU host, with the TensorRT of the Triton that will serve them (e.g.
inside the NGC ``tritonserver`` container). On a machine without TensorRT or without a CUDA
GPU, ``build_plan`` raises ``TensorRTUnavailable`` and the CLI exits with code 2.

``build_plan``:

1. refuses int8-quantised ONNX (``ValueError``): those are ONNX Runtime CPU artefacts; build
   from the float32 (or fp16) export;
2. checks the optimisation profiles: every input with a dynamic dimension needs explicit
   ``(min, opt, max)`` shapes (``ValueError`` otherwise), static dimensions must match;
3. needs ``tensorrt``, a CUDA GPU and polygraphy (NVIDIA's builder/runner wrapper);
4. precision is decided by the graph, not by builder flags: the network is built *strongly
   typed* (TensorRT 11 removed the weak-typing flags such as ``BuilderFlag.FP16``; 10.x has
   the same mode as an opt-in). With ``fp16=True`` a float32 ONNX is first converted with
   ``variants.convert_fp16`` (float16 compute, float32 IO, lengths/positions/sums kept in
   float32), the same graph that is checked in ONNX Runtime;
5. serialises the plan to a temporary file beside ``plan_path``, runs it (polygraphy
   ``TrtRunner``) and ONNX Runtime CPU on the float32 reference with ``parity_feeds``, and only
   when the max abs difference over valid positions is within ``tolerance`` renames it to
   ``plan_path``. A failed gate raises ``PlanParityError`` and leaves no plan behind (an older
   plan at ``plan_path`` is left untouched).

CLI::

    python -m toneserve.export.tensorrt_plan model.onnx model.plan \\
        --profile wav:1x8000:4x160000:8x480000 --profile wav_lens:1:4:8 [--feeds feeds.npz]
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from toneserve.export.artifacts import sha256_file
from toneserve.export.variants import compare_outputs, convert_fp16, is_int8_quantized, max_abs_diff, run_onnx

Shape = tuple[int, ...]
ProfileShapes = tuple[Shape, Shape, Shape]

BUILD_HOST_HINT = (
    "TensorRT plans are specific to the GPU and the TensorRT version, so they are built on the "
    "target GPU host, e.g. inside the NGC tritonserver container that will serve them "
    "(python -m toneserve.export.tensorrt_plan ...)."
)
DEFAULT_TOLERANCE_FP16 = 5e-2
DEFAULT_TOLERANCE_FP32 = 1e-3


class TensorRTUnavailable(RuntimeError):
    """TensorRT, a CUDA GPU or polygraphy is missing on this machine."""


class PlanParityError(RuntimeError):
    """The built plan disagrees with ONNX Runtime beyond the tolerance; ``report`` says how."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


def _check_order(name: str, shapes: ProfileShapes) -> None:
    mn, opt, mx = (tuple(int(d) for d in s) for s in shapes)
    if not (len(mn) == len(opt) == len(mx)):
        raise ValueError(f"profile {name!r}: min/opt/max ranks differ: {mn} {opt} {mx}")
    for a, b, c in zip(mn, opt, mx):
        if not (1 <= a <= b <= c):
            raise ValueError(f"profile {name!r}: need 1 <= min <= opt <= max per dimension, got {mn} {opt} {mx}")


def parse_profile(spec: str) -> tuple[str, ProfileShapes]:
    """``"wav:1x8000:4x160000:8x480000"`` -> ("wav", ((1, 8000), (4, 160000), (8, 480000)))."""
    parts = spec.rsplit(":", 3)
    if len(parts) != 4 or not parts[0]:
        raise ValueError(f"profile {spec!r}: expected NAME:MIN:OPT:MAX with shapes like 4x160000")
    try:
        shapes = tuple(tuple(int(d) for d in p.lower().split("x")) for p in parts[1:])
    except ValueError:
        raise ValueError(f"profile {spec!r}: shapes are integers joined by 'x', e.g. 4x160000") from None
    _check_order(parts[0], shapes)  # type: ignore[arg-type]
    return parts[0], shapes  # type: ignore[return-value]


def onnx_inputs(onnx_path: Path) -> dict[str, tuple[list[int | None], str]]:
    """Graph inputs (initializers excluded): name -> (dims with None where dynamic, dtype)."""
    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    out = {}
    for v in m.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        out[v.name] = (dims, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name)
    return out


def check_profiles(onnx_path: Path, profiles: Mapping[str, ProfileShapes]) -> dict[str, list[list[int]]]:
    """Validate explicit profiles against the graph's inputs; return them as JSON lists."""
    inputs = onnx_inputs(onnx_path)
    unknown = sorted(set(profiles) - set(inputs))
    if unknown:
        raise ValueError(f"profiles for unknown inputs {unknown}; the inputs are {sorted(inputs)}")
    missing = sorted(n for n, (dims, _) in inputs.items() if any(d is None for d in dims) and n not in profiles)
    if missing:
        raise ValueError(
            f"inputs {missing} have dynamic dimensions but no optimisation profile: give explicit "
            f"min/opt/max shapes for every dynamic input (e.g. --profile {missing[0]}:MINx..:OPTx..:MAXx..)")
    out = {}
    for name, shapes in profiles.items():
        if len(shapes) != 3:
            raise ValueError(f"profile {name!r}: expected (min, opt, max)")
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        _check_order(name, shapes)  # type: ignore[arg-type]
        dims = inputs[name][0]
        if len(shapes[0]) != len(dims):
            raise ValueError(f"profile {name!r}: rank {len(shapes[0])} but the input has rank {len(dims)} ({dims})")
        for k, d in enumerate(dims):
            if d is not None and any(s[k] != d for s in shapes):
                raise ValueError(f"profile {name!r}: dimension {k} is fixed at {d} in the graph")
        out[name] = [list(s) for s in shapes]
    return out


def _check_feeds(profiles: Mapping[str, list[list[int]]], inputs: Mapping, feeds: Mapping[str, np.ndarray]) -> None:
    if set(feeds) != set(inputs):
        raise ValueError(f"parity_feeds {sorted(feeds)} do not match the inputs {sorted(inputs)}")
    for name, arr in feeds.items():
        if name in profiles:
            mn, _, mx = profiles[name]
            shape = list(np.shape(arr))
            if len(shape) != len(mn) or any(not (a <= s <= c) for a, s, c in zip(mn, shape, mx)):
                raise ValueError(f"parity feed {name!r} shape {shape} is outside its profile {mn}..{mx}")


# --------------------------------------------------------------------------------------------
# What this machine has
# --------------------------------------------------------------------------------------------


def _cuda_gpus() -> list[dict[str, Any]]:
    """CUDA devices through the driver API (libcuda), without torch or cuda-python."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise TensorRTUnavailable(
            f"no CUDA GPU: the NVIDIA driver library libcuda.so.1 is not present on this machine. {BUILD_HOST_HINT}"
        ) from None
    rc = lib.cuInit(0)
    if rc != 0:
        raise TensorRTUnavailable(f"no usable CUDA GPU: cuInit failed with CUresult {rc}. {BUILD_HOST_HINT}")
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        raise TensorRTUnavailable(f"no CUDA GPU visible (cuDeviceGetCount = {count.value}). {BUILD_HOST_HINT}")
    gpus = []
    for i in range(count.value):
        dev = ctypes.c_int(0)
        lib.cuDeviceGet(ctypes.byref(dev), i)
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
        gpus.append({"index": i, "name": name.value.decode(errors="replace"),
                     "compute_capability": f"{major.value}.{minor.value}"})
    return gpus


def require_tensorrt() -> tuple[Any, dict[str, Any]]:
    """(tensorrt module, GPU 0 description), or TensorRTUnavailable saying what is missing.

    tensorrt (on GPU build hosts only) and polygraphy (of use only with it) are imported here and in
    the build steps after it, so that the checks before them run on any machine."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not available: the Python module `tensorrt` is not installed on this machine. "
            + BUILD_HOST_HINT
        ) from None
    gpus = _cuda_gpus()
    if importlib.util.find_spec("polygraphy") is None:
        raise TensorRTUnavailable(
            "polygraphy (NVIDIA's TensorRT build/run wrapper) is not installed: pip install the version "
            "pinned in requirements.txt. " + BUILD_HOST_HINT
        )
    return trt, gpus[0]


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def _has_fp16(onnx_path: Path) -> bool:
    m = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)
        for n in m.graph.node)


def _build_serialized(onnx_path: Path, profiles: Mapping[str, list[list[int]]]) -> bytes:
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    profile = Profile()
    for name, (mn, opt, mx) in profiles.items():
        profile.add(name, min=tuple(mn), opt=tuple(opt), max=tuple(mx))
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    plan = EngineBytesFromNetwork(network, config=CreateConfig(profiles=[profile]))()
    return bytes(memoryview(plan))  # IHostMemory supports the buffer protocol


def _run_plan(plan: bytes, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with TrtRunner(EngineFromBytes(plan)) as runner:
        outputs = runner.infer(feed_dict={k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return {k: np.array(v, copy=True) for k, v in outputs.items()}


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
    *,
    fp16: bool = True,
    parity_feeds: dict[str, np.ndarray] | None = None,
    tolerance: float | None = None,
    reference_onnx: Path | None = None,
    valid_lengths: dict[str, tuple[str, int]] | None = None,
    top1_axis: dict[str, int] | None = None,
) -> dict:
    """Build a TensorRT plan with explicit optimisation profiles, gated on parity.

    ``profiles``: input name -> (min, opt, max) shapes; required for every input with a
    dynamic dimension. ``fp16``: build from ``convert_fp16`` of a float32 ONNX (a graph that
    already holds float16 is built as it is). ``parity_feeds``: inputs (within the profiles)
    run through the plan and through ONNX Runtime CPU on ``reference_onnx`` (default
    ``onnx_path``: the float32 export); the plan is kept only when the worst max abs
    difference is <= ``tolerance`` (default 5e-2 for fp16, 1e-3 for fp32) and integer outputs
    are equal. ``valid_lengths`` / ``top1_axis`` as in ``variants.parity_report`` (padding
    positions are not compared). Without ``parity_feeds`` the plan is built but the report
    says ``parity.checked: false``.

    Returns the report: TensorRT version, GPU, profiles, precision, sizes, hashes, parity.
    Raises ValueError (int8 graph, bad profiles or feeds), TensorRTUnavailable (no TensorRT,
    GPU or polygraphy) and PlanParityError (gate failed; no plan written)."""
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX model at {onnx_path}")
    # 1. what can be checked anywhere, before looking for TensorRT
    if is_int8_quantized(onnx_path):
        raise ValueError(
            f"{onnx_path} is int8-quantised (ONNX Runtime QOperator/QDQ ops): TensorRT plans are built "
            "from the float32 (or fp16) ONNX export, not from the int8 CPU variant")
    checked = check_profiles(onnx_path, profiles)
    inputs = onnx_inputs(onnx_path)
    if parity_feeds is not None:
        _check_feeds(checked, inputs, parity_feeds)
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE_FP16 if fp16 else DEFAULT_TOLERANCE_FP32
    # 2. the machine
    trt, gpu = require_tensorrt()
    import polygraphy

    plan_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{plan_path.name}.", suffix=".tmp", dir=plan_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    work = Path(tempfile.mkdtemp(prefix=f".{plan_path.name}.", suffix=".onnx.tmp", dir=plan_path.parent))
    try:
        source_fp16 = _has_fp16(onnx_path)
        build_onnx = onnx_path
        if fp16 and not source_fp16:
            build_onnx = work / "model_fp16.onnx"
            convert_fp16(onnx_path, build_onnx)
        t0 = time.perf_counter()
        plan = _build_serialized(build_onnx, checked)
        build_s = time.perf_counter() - t0
        with open(tmp, "wb") as f:
            f.write(plan)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)

        parity: dict[str, Any] = {"checked": False}
        if parity_feeds is not None:
            reference = Path(reference_onnx) if reference_onnx is not None else onnx_path
            ref_out = run_onnx(reference, parity_feeds)
            plan_out = _run_plan(tmp.read_bytes(), parity_feeds)
            outputs = compare_outputs(ref_out, plan_out, valid_lengths=valid_lengths,
                                      top1_axis=top1_axis, feeds=parity_feeds)
            worst = max_abs_diff(outputs)
            parity = {
                "checked": True,
                "reference": f"onnxruntime CPUExecutionProvider on {reference.name}",
                "tolerance": tolerance,
                "max_abs_diff": worst if np.isfinite(worst) else None,
                "passed": bool(worst <= tolerance),
                "outputs": outputs,
            }
        report = {
            "onnx": str(onnx_path),
            "onnx_sha256": sha256_file(onnx_path),
            "plan": str(plan_path),
            "plan_bytes": len(plan),
            "plan_sha256": sha256_file(tmp),
            "precision": "fp16" if (fp16 or source_fp16) else "fp32",
            "built_from": "convert_fp16(onnx)" if build_onnx != onnx_path else "onnx",
            "strongly_typed": True,
            "profiles": checked,
            "trt_version": getattr(trt, "__version__", "unknown"),
            "polygraphy_version": getattr(polygraphy, "__version__", "unknown"),
            "gpu": gpu,
            "build_seconds": round(build_s, 3),
            "parity": parity,
        }
        if parity["checked"] and not parity["passed"]:
            raise PlanParityError(
                f"TensorRT plan parity gate failed: max abs diff {parity['max_abs_diff']} > tolerance "
                f"{tolerance} (or an integer output differs); no plan written to {plan_path}", report)
        os.replace(tmp, plan_path)
        return report
    finally:
        if tmp.exists():
            tmp.unlink()
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m toneserve.export.tensorrt_plan",
        description="Build a TensorRT plan from an exported ONNX model, with explicit optimisation "
                    "profiles and a parity gate against ONNX Runtime. " + BUILD_HOST_HINT)
    p.add_argument("onnx", type=Path)
    p.add_argument("plan", type=Path)
    p.add_argument("--profile", action="append", default=[], metavar="NAME:MIN:OPT:MAX",
                   help="shapes like wav:1x8000:4x160000:8x480000; one per dynamic input")
    p.add_argument("--fp32", action="store_true", help="build in float32 (default: fp16)")
    p.add_argument("--feeds", type=Path, help=".npz of parity inputs (names = ONNX inputs)")
    p.add_argument("--reference", type=Path, help="float32 ONNX to compare with (default: ONNX)")
    p.add_argument("--tolerance", type=float)
    p.add_argument("--valid-length", action="append", default=[], metavar="OUTPUT:LENGTHS:AXIS",
                   help="compare OUTPUT only at positions < LENGTHS along AXIS")
    args = p.parse_args(argv)
    try:
        profiles = dict(parse_profile(s) for s in args.profile)
        feeds = None
        if args.feeds is not None:
            with np.load(args.feeds) as z:
                feeds = {k: z[k] for k in z.files}
        valid = {}
        for s in args.valid_length:
            out, lens, axis = s.rsplit(":", 2)
            valid[out] = (lens, int(axis))
        report = build_plan(args.onnx, args.plan, profiles, fp16=not args.fp32, parity_feeds=feeds,
                            tolerance=args.tolerance, reference_onnx=args.reference,
                            valid_lengths=valid or None)
    except TensorRTUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PlanParityError as exc:
        print(json.dumps(exc.report, indent=2), file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
