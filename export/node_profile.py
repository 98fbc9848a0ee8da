"""Where an exported graph's time goes in OpenVINO: time per node type and the slowest nodes.

``python -m toneserve.export.node_profile GRAPH.onnx --seconds 5 [--precision bf16|f32] [--threads 2]
[--input-kind wav|feats] [--runs 10] [--top 15] [--compare OTHER.onnx]``

Compiles the graph on OpenVINO's CPU plugin with ``PERF_COUNT`` on, runs it ``--runs`` times on one
``--seconds`` long item (after warm-up) and prints, per node type of the *compiled* graph (what the plugin
runs after its own fusions: ``Convolution``, ``MVN``, ``Subgraph``, ``Transpose``, ``Reorder``...), the mean
ms per run and its share of the summed node time, then the ``--top`` slowest nodes. It also prints the
whole-graph wall time (median over ``--runs``) of a second compilation without ``PERF_COUNT``, since the
counters add their own overhead. With ``--compare`` the two graphs' runs are interleaved and a Markdown
before/after table per node type follows. Times are medians over runs. Other load on the machine changes absolute times: compare shares and ratios.

Inputs are synthesised from the graph's declared inputs (batch 1):
``wav``: a float ``[1, S]`` input (S = seconds x 16 kHz of a sine plus noise) and its int64 length;
``feats``: a float ``[1, T, F]`` input (T = seconds x ``--frame-rate`` frames, F from the graph) and its int64
length; other int64 inputs (SenseVoice's language / textnorm queries) are zeros. ``auto`` picks by the first
input's rank.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
FEATS_PER_SECOND = 1000.0 / 60.0  # SenseVoice's low-frame-rate features: one frame per 60 ms


@dataclass
class Profile:
    """Per node type and per node: real time per run in ms; wall: whole-graph ms of each timed run."""

    by_type: dict[str, float]  # median over runs of the type's summed time in a run
    by_node: dict[tuple[str, str], float]  # (node name, node type) -> ms
    wall_ms: list[float] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(self.by_type.values())

    def wall_median(self) -> float:
        return statistics.median(self.wall_ms) if self.wall_ms else float("nan")


def synth_inputs(inputs: Sequence, seconds: float, kind: str = "auto",
                 frame_rate: float = FEATS_PER_SECOND) -> dict[str, np.ndarray]:
    """Feeds for a graph's inputs (``(name, element type name, partial shape as a list of int|None)``)."""
    floats = [i for i in inputs if i[1].startswith("f")]
    if not floats:
        raise ValueError("the graph has no float input to feed")
    main = floats[0]
    if kind == "auto":
        kind = "wav" if len(main[2]) == 2 else "feats"
    rng = np.random.default_rng(0)
    if kind == "wav":
        if len(main[2]) != 2:
            raise ValueError(f"--input-kind wav wants a [batch, samples] input, {main[0]} has rank {len(main[2])}")
        n = int(round(seconds * SAMPLE_RATE))
        t = np.arange(n) / SAMPLE_RATE
        x = (0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)[None]
    elif kind == "feats":
        if len(main[2]) != 3 or main[2][2] is None:
            raise ValueError(f"--input-kind feats wants a [batch, frames, F] input with static F, {main[0]} is {main[2]}")
        n = max(1, int(round(seconds * frame_rate)))
        x = rng.standard_normal((1, n, int(main[2][2]))).astype(np.float32)
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    feeds: dict[str, np.ndarray] = {main[0]: x}
    lens_given = False
    for name, etype, _shape in inputs:
        if name == main[0]:
            continue
        if etype.startswith("f"):
            raise ValueError(f"more than one float input ({main[0]}, {name}): cannot synthesise")
        # The first integer input is the length; the rest (queries) are zeros.
        feeds[name] = np.array([n if not lens_given else 0], dtype=np.int64)
        lens_given = True
    return feeds


def _input_descs(model) -> list[tuple[str, str, list[int | None]]]:
    out = []
    for port in model.inputs:
        ps = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in ps]
        out.append((port.get_any_name(), port.get_element_type().get_type_name(), dims))
    return out


def profile(graph: Path, seconds: float = 5.0, precision: str = "bf16", threads: int = 2, kind: str = "auto",
            runs: int = 10, warmup: int = 2, frame_rate: float = FEATS_PER_SECOND) -> Profile:
    return profile_many([graph], seconds, precision, threads, kind, runs, warmup, frame_rate)[0]


def profile_many(graphs: Sequence[Path], seconds: float = 5.0, precision: str = "bf16", threads: int = 2,
                 kind: str = "auto", runs: int = 10, warmup: int = 2,
                 frame_rate: float = FEATS_PER_SECOND) -> list[Profile]:
    """One Profile per graph. Runs are interleaved (graph 1, graph 2, ..., graph 1, ...) so that load from
    other processes falls on every graph alike; per node type and node the median over runs is kept (robust to
    a run that another process slowed down)."""
    import openvino as ov  # type: ignore[import-untyped]

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1,
              "PERFORMANCE_HINT": "LATENCY"}
    plain, counted, feeds = [], [], []
    for graph in graphs:
        model = core.read_model(str(graph))
        feeds.append(synth_inputs(_input_descs(model), seconds, kind, frame_rate))
        # Whole-graph wall time comes from a compilation without the counters' overhead.
        plain.append(core.compile_model(model, "CPU", config).create_infer_request())
        counted.append(core.compile_model(model, "CPU", {**config, "PERF_COUNT": True}).create_infer_request())
    for _ in range(warmup):
        for reqs in (plain, counted):
            for req, f in zip(reqs, feeds):
                req.infer(f)
    walls: list[list[float]] = [[] for _ in graphs]
    types: list[dict[str, list[float]]] = [defaultdict(list) for _ in graphs]
    nodes: list[dict[tuple[str, str], list[float]]] = [defaultdict(list) for _ in graphs]
    for _ in range(runs):
        for i, (req, f) in enumerate(zip(plain, feeds)):
            t0 = time.perf_counter()
            req.infer(f)
            walls[i].append((time.perf_counter() - t0) * 1000.0)
        for i, (req, f) in enumerate(zip(counted, feeds)):
            req.infer(f)
            this_run: dict[str, float] = defaultdict(float)
            for info in req.profiling_info:
                if info.status != info.Status.EXECUTED:
                    continue
                ms = info.real_time.total_seconds() * 1000.0
                this_run[info.node_type] += ms
                nodes[i][(info.node_name, info.node_type)].append(ms)
            for typ, ms in this_run.items():
                types[i][typ].append(ms)
    return [Profile({k: statistics.median(v) for k, v in t.items()}, {k: statistics.median(v) for k, v in n.items()},
                    w) for t, n, w in zip(types, nodes, walls)]


def format_profile(p: Profile, top: int = 15) -> str:
    total = p.total_ms or 1.0
    lines = [f"whole graph (no counters): median {p.wall_median():.1f} ms over {len(p.wall_ms)} runs; "
             f"summed node time {p.total_ms:.1f} ms",
             f"{'node type':<24} {'ms':>9} {'share':>7}"]
    for typ, ms in sorted(p.by_type.items(), key=lambda kv: -kv[1]):
        lines.append(f"{typ:<24} {ms:9.2f} {100 * ms / total:6.1f}%")
    lines.append(f"top {top} nodes")
    for (name, typ), ms in sorted(p.by_node.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {ms:8.2f} ms {100 * ms / total:5.1f}%  {typ:<16} {name}")
    return "\n".join(lines)


def format_comparison(before: Profile, after: Profile, top_types: int = 12) -> str:
    """A Markdown table: node type, ms and share before and after (types ordered by before + after)."""
    tb, ta = before.total_ms or 1.0, after.total_ms or 1.0
    keys = sorted(set(before.by_type) | set(after.by_type),
                  key=lambda k: -(before.by_type.get(k, 0.0) + after.by_type.get(k, 0.0)))
    lines = ["| node type | before ms | before share | after ms | after share |", "|---|---:|---:|---:|---:|"]
    shown = keys[:top_types]
    for k in shown:
        b, a = before.by_type.get(k, 0.0), after.by_type.get(k, 0.0)
        lines.append(f"| {k} | {b:.1f} | {100 * b / tb:.1f} % | {a:.1f} | {100 * a / ta:.1f} % |")
    rb = sum(v for k, v in before.by_type.items() if k not in shown)
    ra = sum(v for k, v in after.by_type.items() if k not in shown)
    lines.append(f"| (other types) | {rb:.1f} | {100 * rb / tb:.1f} % | {ra:.1f} | {100 * ra / ta:.1f} % |")
    lines.append(f"| **sum of nodes** | {before.total_ms:.1f} | | {after.total_ms:.1f} | |")
    lines.append(f"| **whole graph, median** | {before.wall_median():.1f} | | {after.wall_median():.1f} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toneserve.export.node_profile", description=__doc__.split("\n")[0])
    ap.add_argument("graph", type=Path)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--precision", choices=("bf16", "f32"), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input-kind", choices=("auto", "wav", "feats"), default="auto")
    ap.add_argument("--frame-rate", type=float, default=FEATS_PER_SECOND, help="feature frames per second (feats)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--compare", type=Path, default=None,
                    help="a second graph (e.g. after a rewrite): runs interleaved, then a before/after table")
    args = ap.parse_args(argv)
    graphs = [args.graph] + ([args.compare] if args.compare is not None else [])
    for g in graphs:
        if not g.is_file():
            print(f"no such graph: {g}", file=sys.stderr)
            return 2
    profiles = profile_many(graphs, args.seconds, args.precision, args.threads, args.input_kind, args.runs,
                            frame_rate=args.frame_rate)
    for g, p in zip(graphs, profiles):
        print(f"{g}  {args.seconds:g} s  {args.precision}  {args.threads} threads")
        print(format_profile(p, args.top))
        print()
    if len(profiles) == 2:
        print(f"before: {graphs[0]}\nafter: {graphs[1]}")
        print(format_comparison(profiles[0], profiles[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
