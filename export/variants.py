"""Derived ONNX variants of an exported model, and the parity check that judges them.

* ``quantize_int8(src, dst)``: dynamic int8 quantisation of the MatMul weights, for the
  CPU profile (ONNX Runtime ``MatMulInteger``).
* ``convert_fp16(src, dst)``: float16 weights and compute for the GPU profile, with
  float32 graph inputs/outputs so callers do not change. Values derived from integers
  (lengths, positions, counts) and long sums stay float32 (see ``_fp32_nodes``).
* ``parity_report(reference, candidate, feeds, ...)``: both graphs in ONNX Runtime (CPU EP)
  on the same feeds; per output the max/mean abs difference over *valid* positions only,
  top-1 agreement, exact equality of integer outputs.
* ``is_int8_quantized(path)``: whether a graph carries quantisation ops (TensorRT plans
  must be built from the float graph, never from these).

ONNX Runtime (CPU) and onnx only: no torch. Every writer is atomic: the result is built in a
temporary folder next to ``dst`` and moved into place with ``os.replace`` only once it has
loaded in ONNX Runtime; a failure leaves ``dst`` as it was and no temporary files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import uses_external_data

# onnxruntime is imported in the functions that run or rewrite a graph: tensorrt_plan imports this
# module and checks its arguments (int8 refusal, profiles, TensorRT present) before it runs anything.

__all__ = [
    "QUANT_OP_TYPES",
    "compare_outputs",
    "convert_fp16",
    "is_int8_quantized",
    "max_abs_diff",
    "parity_report",
    "quantize_int8",
    "run_onnx",
]

# Above this the protobuf limit (2 GiB) is near: write the weights as external data.
_EXTERNAL_DATA_BYTES = 1_800_000_000

# Operators that only a quantised graph contains (standard ONNX and ORT's com.microsoft
# contrib ops). "QLinear*" and "Q*Attention"-style names are also caught by prefix below.
QUANT_OP_TYPES = frozenset({
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "MatMulNBits",
    "QGemm",
    "QAttention",
    "QOrderedMatMul",
    "QOrderedAttention",
    "QEmbedLayerNormalization",
    "GatherBlockQuantized",
})


# --------------------------------------------------------------------------------------------
# Graph helpers
# --------------------------------------------------------------------------------------------


def _load(path: Path, *, external: bool = True):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    try:
        model = onnx.load(str(path), load_external_data=external)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a valid ONNX model: {exc}") from exc
    if not model.graph.node or not model.graph.output:
        raise ValueError(f"{path} is not a valid ONNX model: no graph")
    return model


def _all_nodes(graph):
    """Nodes of a graph and of every subgraph (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def _op_types(model) -> set[str]:
    ops = {n.op_type for n in _all_nodes(model.graph)}
    for fn in model.functions:
        ops |= {n.op_type for n in fn.node}
    return ops


def is_int8_quantized(path: Path) -> bool:
    """True when the graph contains quantisation ops (dynamic or static, QOperator or QDQ)."""
    model = _load(Path(path), external=False)
    return any(op in QUANT_OP_TYPES or op.startswith("QLinear") for op in _op_types(model))


def _drop_initializer_value_info(model) -> None:
    """Remove ``value_info`` entries that describe initializers.

    torch's dynamo exporter records one for every weight. ORT's quantizer turns Gemm(transB=1)
    into MatMul by transposing the weight in place, after which the stale entry contradicts
    the new shape and shape inference fails ("Inferred shape and existing shape differ").
    Initializers carry their own type and shape, so the entries are redundant anyway."""
    inits = {i.name for i in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in inits]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def _io_signature(model) -> dict[str, list]:
    def desc(v):
        return v.type.tensor_type.elem_type
    return {
        "inputs": [(v.name, desc(v)) for v in model.graph.input],
        "outputs": [(v.name, desc(v)) for v in model.graph.output],
    }


def _model_bytes_estimate(path: Path) -> int:
    """Size of a model file plus the external data files beside it that it references."""
    total = path.stat().st_size
    m = onnx.load(str(path), load_external_data=False)
    seen = set()
    for t in m.graph.initializer:
        if uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in seen:
                seen.add(loc)
                f = path.parent / loc
                if f.exists():
                    total += f.stat().st_size
    return total


def _session(path: Path, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _Staging:
    """A temporary folder beside ``dst``; ``commit()`` moves what was written there into
    place (external data files first, the model last) and the folder is always removed."""

    def __init__(self, dst: Path):
        self.dst = Path(dst)
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.dst.name}.", suffix=".tmp", dir=self.dst.parent))
        self.path = self.dir / self.dst.name  # same name: external data locations stay valid

    def commit(self) -> None:
        others = sorted(p for p in self.dir.iterdir() if p != self.path)
        for p in [*others, self.path]:
            os.chmod(p, 0o644)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            os.replace(p, self.dst.parent / p.name)

    def __enter__(self) -> "_Staging":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _check_loads(path: Path, expected_io: dict) -> None:
    """The written model must load in ONNX Runtime with the source's graph IO types."""
    _session(path, threads=1)
    io = _io_signature(onnx.load(str(path), load_external_data=False))
    if io != expected_io:
        raise RuntimeError(f"graph inputs/outputs changed: {expected_io} -> {io}")


# --------------------------------------------------------------------------------------------
# int8
# --------------------------------------------------------------------------------------------


def quantize_int8(src: Path, dst: Path, *, per_channel: bool = True, reduce_range: bool = True) -> None:
    """Dynamic int8 quantisation of MatMul ops with constant weights (ONNX Runtime CPU).

    Settings (ORT 1.31 ``quantize_dynamic``), measured on emotion2vec+ and SenseVoiceSmall
    (tiny and full-size, random weights; numbers in tests/export/test_export_variants.py):

    * ``op_types_to_quantize=["MatMul"]``: the transformer's projections and FFNs, where the
      weights and the time go. Convolutions (the wav2vec-style feature extractor, FSMN memory,
      positional convs) stay float32: ConvInteger is slow in ORT and those layers are
      accuracy-sensitive. ORT quantises only MatMuls whose B is a constant
      (``MatMulConstBOnly``), so attention's QK^T and AV products stay float. In dynamic mode
      ORT first rewrites Gemm as MatMul+Add (emotion2vec's 9-class ``proj`` head), so that
      layer is quantised too; it is still a MatMul.
    * ``weight_type=QInt8`` (S8 weights, symmetric: zero point 0). ORT's documented default
      and its fast path on x86 with VNNI and on ARM; activations are always U8 in dynamic mode
      (``DynamicQuantizeLinear``). QUInt8 weights gave no better parity here.
    * ``per_channel=True``: one scale per output column of each weight. Random weights do not
      show the benefit (same parity either way, +1-2 % file size), but trained transformer
      weights have outlier columns that a single per-tensor scale would crush.
    * ``reduce_range=True``: 7-bit weights, so that U8S8 products cannot saturate the int16
      accumulators of x86 kernels without VNNI. On the Xeon (AMX, VNNI) this was first measured
      on, 8-bit weights had half the error; on an AMD EPYC whose /proc/cpuinfo shows AVX2 and no
      AVX-512 or VNNI (2026-12-06), ONNX Runtime 1.31 saturates with 8-bit weights: tiny emotion2vec+ embedding error 0.142
      with 8 bits against 0.021 with 7, tiny SenseVoice CTC logits 0.748 (frame top-1 70 %)
      against 0.068 (96 %). A graph is exported on one machine and served on others, so the
      range that is safe on every x86 CPU is the default.

    No calibration data is needed (activation ranges are computed per call). The result is
    checked to load in ONNX Runtime before it replaces ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    model = _load(src)
    if any(op in QUANT_OP_TYPES or op.startswith("QLinear") for op in _op_types(model)):
        raise ValueError(f"{src} is already quantised; quantise the float32 export")
    expected_io = _io_signature(model)
    _drop_initializer_value_info(model)
    external = _model_bytes_estimate(src) > _EXTERNAL_DATA_BYTES
    with _Staging(dst) as stage:
        # A ModelProto (not a path): ORT then does its shape-inference round trip in a
        # private temporary folder instead of writing "<src>-inferred.onnx" beside src.
        quantize_dynamic(
            model,
            stage.path,
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
            extra_options={"MatMulConstBOnly": True},
        )
        _check_loads(stage.path, expected_io)
        stage.commit()


# --------------------------------------------------------------------------------------------
# fp16
# --------------------------------------------------------------------------------------------

# Ops kept in float32 wherever they occur: ORT's own block list (ops without fp16 kernels,
# Range, CumSum, Min/Max, ...) plus the sums: a ReduceSum over a long time axis overflows
# float16 (max 65504) long before anything else does (sum of x^2 over 10 min of audio).
_FP32_OPS_EXTRA = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp")

# Cheap ops through which "derived from integers" float32-ness is propagated.
_PROPAGATE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow", "Exp", "Log",
    "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Clip", "Min", "Max", "Unsqueeze",
    "Squeeze", "Reshape", "Expand", "Concat", "Slice", "Gather", "GatherElements",
    "Transpose", "Tile", "Identity", "Where", "Flatten", "Pad", "Cast",
})
_CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})
_FLOAT = 1
_FLOAT16 = 10


def _fp16_block_ops() -> set[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return set(DEFAULT_OP_BLOCK_LIST) | set(_FP32_OPS_EXTRA)


def _name_nodes(graph) -> None:
    """Give every node a unique name (node_block_list works by name)."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            base = node.name or node.op_type
            name = f"{base}__{i}"
            while name in seen:
                name += "_"
            node.name = name
        seen.add(node.name)


def _elem_types(model) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _fp32_nodes(model, block_ops: set[str]) -> set[str]:
    """Names of the nodes that must compute *and store* in float32.

    Seeds: the block-listed ops, and every Cast from an integer/bool tensor to float (lengths,
    counts, positions). emotion2vec's per-utterance normalisation divides by the sample count
    (80 000 for 5 s): in float16 that is +inf, the mean is never subtracted and the output
    drifts; SenseVoice's sinusoidal positions lose their precision past a few hundred frames.
    From the seeds, float32 is propagated through cheap elementwise/shape ops as long as every
    float input of the op is already float32 or a constant, i.e. until the value meets
    activations (then that op runs in float16 on a value of ordinary magnitude: a mean, a
    1/sqrt(var), a position encoding). Constants used only by such nodes stay float32 too."""
    types = _elem_types(model)
    g = model.graph
    consts = {t.name for t in g.initializer}
    for node in g.node:
        if node.op_type in _CONSTANT_OPS:
            consts.update(node.output)

    def is_float(name: str) -> bool:
        return types.get(name) == _FLOAT

    forced_nodes: set[str] = set()
    forced: set[str] = set()

    def force(node) -> None:
        forced_nodes.add(node.name)
        forced.update(o for o in node.output if o)

    for node in g.node:
        if node.op_type in block_ops:
            force(node)
        elif node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            src = types.get(node.input[0])
            if to == _FLOAT and src is not None and src not in (_FLOAT, _FLOAT16, 0, 11, 16):
                force(node)  # int*/uint*/bool -> float
    changed = True
    while changed:
        changed = False
        for node in g.node:
            if node.name in forced_nodes or node.op_type not in _PROPAGATE_OPS:
                continue
            if not any(is_float(o) for o in node.output):
                continue
            fins = [i for i in node.input if i and is_float(i)]
            if fins and all(i in forced or i in consts for i in fins) and any(i in forced for i in fins):
                force(node)
                changed = True
    consumers: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for node in g.node:
        if node.op_type in _CONSTANT_OPS and any(is_float(o) for o in node.output):
            users = [u for o in node.output for u in consumers.get(o, [])]
            if users and all(u.name in forced_nodes for u in users):
                forced_nodes.add(node.name)
    return forced_nodes


def _dedupe_nodes(graph) -> None:
    """ORT's converter inserts the *same* Cast node (same name, same output) once per
    blocked consumer when a float16 tensor feeds several blocked nodes; ONNX Runtime then
    rejects the graph ("two nodes with same node name"). Keep one copy of identical nodes."""
    seen: set[bytes] = set()
    outputs: dict[str, bytes] = {}
    keep = []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key in seen:
            continue
        for o in node.output:
            if o and o in outputs:
                raise RuntimeError(f"fp16 conversion produced two different producers of {o!r}")
            outputs[o] = key
        seen.add(key)
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _collapse_round_trips(graph) -> None:
    """Cast(to float32) of Cast(to float16) of x  ->  Cast(to float32) of x.

    The converter stores every float tensor as float16, even the outputs of blocked nodes
    (it casts them to float16 and back before the next blocked node), which would undo the
    float32 islands: 80 000 still becomes +inf on the way. Rewiring the float32 consumer to
    the original tensor removes the rounding (and the overflow); a Cast to float32 is valid
    for any input type, and unused Casts are removed afterwards."""
    producer = {o: n for n in graph.node for o in n.output if o}
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if _cast_to(node) != _FLOAT:
                continue
            p = producer.get(node.input[0])
            if p is not None and _cast_to(p) == _FLOAT16:
                node.input[0] = p.input[0]
                changed = True
    _remove_dead_casts(graph)


def _remove_dead_casts(graph) -> None:
    graph_outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in _all_nodes(graph) for i in n.input} | graph_outputs
        keep = [n for n in graph.node if n.op_type != "Cast" or any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    produced |= {t.name for t in graph.initializer}
    vi = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(vi)


def _subgraph_inputs(node) -> set[str]:
    """Outer-scope names an If/Loop/Scan body uses (implicit inputs, for ordering)."""
    names: set[str] = set()
    for attr in node.attribute:
        for g in ([attr.g] if attr.g is not None and len(attr.g.node) else []) + list(attr.graphs):
            for n in _all_nodes(g):
                names.update(i for i in n.input if i)
    return names


def _topological_sort(graph) -> None:
    """The converter appends its Casts at the end; ONNX (and TensorRT's parser) want nodes
    in topological order."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = list(graph.node)
    needs = [set(n.input) | _subgraph_inputs(n) for n in nodes]
    producers = {o for n in nodes for o in n.output}
    ordered, pending = [], list(range(len(nodes)))
    while pending:
        rest = []
        for k in pending:
            if all(i in available or i not in producers for i in needs[k]):
                ordered.append(nodes[k])
                available.update(nodes[k].output)
            else:
                rest.append(k)
        if len(rest) == len(pending):
            raise RuntimeError("fp16 graph has a cycle")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(src: Path, dst: Path, *, op_block_list: list[str] | None = None,
                 node_block_list: list[str] | None = None) -> None:
    """float16 weights and compute, float32 graph inputs/outputs (``keep_io_types``).

    Converter: ``onnxruntime.transformers.float16.convert_float_to_float16`` (ships with
    onnxruntime, maintained with it), plus three repairs measured to be needed on these
    models: integer-derived values and sums stay float32 (``_fp32_nodes``), float32 islands
    are not rounded through float16 between blocked nodes (``_collapse_round_trips``), and the
    converter's duplicate Cast nodes are removed (``_dedupe_nodes``). Constants are clipped to
    the float16 range (+-65504) by the converter.

    ``op_block_list`` / ``node_block_list`` add op types / node names to keep in float32.
    The result loads and runs in ONNX Runtime CPU (slowly: it is meant for the CUDA and
    TensorRT execution providers and for TensorRT's strongly typed builds)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    model = _load(src)
    ops = _op_types(model)
    if any(op in QUANT_OP_TYPES or op.startswith("QLinear") for op in ops):
        raise ValueError(f"{src} is quantised; convert the float32 export to fp16")
    if any(t.data_type == _FLOAT16 for t in model.graph.initializer):
        raise ValueError(f"{src} already has float16 weights; convert the float32 export")
    expected_io = _io_signature(model)
    _drop_initializer_value_info(model)
    _name_nodes(model.graph)
    model = onnx.shape_inference.infer_shapes(model)
    block_ops = _fp16_block_ops() | set(op_block_list or ())
    block_nodes = _fp32_nodes(model, block_ops) | set(node_block_list or ())
    model = convert_float_to_float16(
        model,
        keep_io_types=True,
        disable_shape_infer=True,  # inferred above
        op_block_list=sorted(block_ops),
        node_block_list=sorted(block_nodes),
    )
    _dedupe_nodes(model.graph)
    _collapse_round_trips(model.graph)
    _topological_sort(model.graph)
    external = model.ByteSize() > _EXTERNAL_DATA_BYTES
    with _Staging(dst) as stage:
        if external:
            onnx.save(model, str(stage.path), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=f"{dst.name}.data")
        else:
            onnx.save(model, str(stage.path))
        _check_loads(stage.path, expected_io)
        stage.commit()


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


def run_onnx(path: Path, feeds: Mapping[str, np.ndarray], *, threads: int = 0) -> dict[str, np.ndarray]:
    """All outputs of a graph in ONNX Runtime (CPU EP), by name."""
    sess = _session(Path(path), threads)
    names = {i.name for i in sess.get_inputs()}
    if set(feeds) != names:
        raise ValueError(f"feeds {sorted(feeds)} do not match the inputs {sorted(names)} of {path}")
    outs = sess.run(None, dict(feeds))
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def _valid_mask(shape: tuple[int, ...], lengths: np.ndarray, axis: int) -> np.ndarray:
    """Boolean mask of ``shape``: position t along ``axis`` of batch item b is valid when
    t < lengths[b] (batch is axis 0)."""
    ndim = len(shape)
    axis = axis % ndim
    if axis == 0:
        raise ValueError("the time axis cannot be the batch axis 0")
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.shape[0] != shape[0]:
        raise ValueError(f"{lengths.shape[0]} lengths for a batch of {shape[0]}")
    t = np.arange(shape[axis])
    bt = t[None, :] < np.clip(lengths, 0, shape[axis])[:, None]  # [B, T]
    view = [1] * ndim
    view[0], view[axis] = shape[0], shape[axis]
    return np.broadcast_to(bt.reshape(view), shape)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    valid_lengths: Mapping[str, tuple[str, int]] | None = None,
    top1_axis: Mapping[str, int] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """The parity report of two sets of outputs (see ``parity_report``); also used for
    TensorRT plans. Lengths named in ``valid_lengths`` are read from the reference outputs,
    or from the feeds when no output has that name."""
    valid_lengths = dict(valid_lengths or {})
    top1_axis = dict(top1_axis or {})
    for name in [*valid_lengths, *top1_axis]:
        if name not in reference:
            raise ValueError(f"unknown output {name!r}; outputs are {sorted(reference)}")
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise ValueError(f"candidate lacks outputs {missing}")
    report: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        ref = np.asarray(ref)
        cand = np.asarray(candidate[name])
        entry: dict[str, Any] = {
            "dtype": str(ref.dtype),
            "candidate_dtype": str(cand.dtype),
            "shape": list(ref.shape),
        }
        if ref.shape != cand.shape:
            raise ValueError(f"output {name!r}: shape {list(cand.shape)} differs from the reference {list(ref.shape)}")
        if ref.dtype.kind not in "fc":
            mismatches = int(np.count_nonzero(ref != cand))
            entry.update(exact=mismatches == 0, mismatches=mismatches)
            report[name] = entry
            continue
        mask = np.ones(ref.shape, dtype=bool)
        if name in valid_lengths:
            len_name, axis = valid_lengths[name]
            if len_name in reference:
                lengths = np.asarray(reference[len_name])
            elif feeds is not None and len_name in feeds:
                lengths = np.asarray(feeds[len_name])
            else:
                raise ValueError(f"lengths {len_name!r} for {name!r} is neither an output nor a feed")
            mask = _valid_mask(ref.shape, lengths, axis)
            entry["valid_lengths"] = {"from": len_name, "axis": int(axis), "lengths": lengths.astype(int).tolist()}
        r = ref.astype(np.float64)[mask]
        c = cand.astype(np.float64)[mask]
        finite = bool(np.isfinite(c).all() and np.isfinite(r).all())
        entry["finite"] = finite
        entry["valid_elements"] = int(r.size)
        if r.size == 0:
            entry.update(max_abs_diff=0.0, mean_abs_diff=0.0, max_abs_reference=0.0)
        elif finite:
            d = np.abs(r - c)
            entry.update(
                max_abs_diff=float(d.max()),
                mean_abs_diff=float(d.mean()),
                max_abs_reference=float(np.abs(r).max()),
            )
        else:  # NaN/inf in a candidate is a failure, reported without non-JSON floats
            entry.update(max_abs_diff=None, mean_abs_diff=None,
                         nonfinite=int(np.count_nonzero(~np.isfinite(c))))
        if name in top1_axis:
            axis = top1_axis[name] % ref.ndim
            if name in valid_lengths and axis == valid_lengths[name][1] % ref.ndim:
                raise ValueError(f"{name!r}: the class axis is the time axis")
            agree = np.argmax(ref, axis=axis) == np.argmax(cand, axis=axis)
            m = np.take(mask, 0, axis=axis) if ref.shape[axis] else np.zeros(agree.shape, bool)
            n = int(np.count_nonzero(m))
            entry["top1_positions"] = n
            entry["top1_agreement"] = float(np.count_nonzero(agree & m) / n) if n else 1.0
        report[name] = entry
    return report


def parity_report(
    reference: Path,
    candidate: Path,
    feeds: dict[str, np.ndarray],
    *,
    valid_lengths: dict[str, tuple[str, int]] | None = None,
    top1_axis: dict[str, int] | None = None,
) -> dict:
    """Run both graphs in ONNX Runtime (CPU EP) on the same feeds and compare, per output.

    Float outputs: ``max_abs_diff`` / ``mean_abs_diff`` / ``max_abs_reference`` over valid
    positions only; ``valid_lengths`` maps an output to ``(lengths name, time axis)``, e.g.
    ``{"ctc_logits": ("encoder_out_lens", 1)}`` (lengths from the reference's outputs, or from
    the feeds), so padding, which a model may fill with anything, is ignored.
    ``top1_agreement``: fraction of valid positions whose argmax over ``top1_axis[name]`` (the
    class axis, e.g. -1) agrees. ``finite``: no NaN/inf (then the diffs are None).
    Integer outputs: ``exact`` and ``mismatches``. JSON-serialisable."""
    ref = run_onnx(Path(reference), feeds)
    cand = run_onnx(Path(candidate), feeds)
    return compare_outputs(ref, cand, valid_lengths=valid_lengths, top1_axis=top1_axis, feeds=feeds)


def max_abs_diff(report: Mapping[str, Mapping[str, Any]]) -> float:
    """Worst float ``max_abs_diff`` of a report; inf when an output is not finite or an
    integer output differs."""
    worst = 0.0
    for entry in report.values():
        if "exact" in entry:
            if not entry["exact"]:
                return float("inf")
        elif entry.get("max_abs_diff") is None:
            return float("inf")
        else:
            worst = max(worst, float(entry["max_abs_diff"]))
    return worst
