"""Speed and memory of each OpenVINO precision of an exported model, in-process, no server: what the catalog's
choice among the precisions that pass their gates (catalog.BF16_PREFERENCE) and its run cap rest on.

    python -m toneserve.loadtest.openvino_precisions --models-dir DIR [--family sensevoice emotion2vec]
        [--precisions fp32 bf16 int8w int8w-bf16] [--items 4] [--batch 1] [--repeat 3] [--json out.json]

Each precision of each family is compiled in a process of its own (so its resident memory is its own), from the
graph it is served from (the fp32 ONNX export for fp32 / bf16, the int8-weight IR for int8w / int8w-bf16, the
static int8 IR for int8 / int8-bf16) with the properties the runner compiles it with (openvino_compile.py: 2
streams of 1 thread, the served defaults, no compile cache). ``onnxruntime-int8`` (catalog.ORT_INT8), the other
candidate of the encoder's order, is ONNX Runtime's dynamic int8 variant in one session running 2 items at once
on threads of 1 intra-op thread, as onnx_runner.py holds it. It then computes a fixed workload on both streams at once,
``--repeat`` times after one unmeasured pass: the served shapes of the family (sensevoice: utterances of 2, 10
and 30 s; emotion2vec: windows of 5 s; text_sentiment: sentences of 24 and 64 tokens), ``--items`` of each,
``--batch`` items per run. Reported: the median seconds of a pass (and the spread), the resident memory after
compiling and after the passes (its anonymous part: /proc/self/status), and whether the precision passed its
accuracy gate at export (a failed one is measured all the same, not served by default).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from toneserve.contract import INFERENCE_PRECISION
from toneserve.loadtest import machine
from toneserve.loadtest.openvino_memory import resident
from toneserve.model_repository.catalog import ORT_INT8
from toneserve.model_repository.runners.openvino_compile import compile_properties

FAMILIES = ("sensevoice", "emotion2vec", "text_sentiment")
PRECISIONS = ("fp32", "bf16", "int8w", "int8w-bf16", "int8", "int8-bf16", ORT_INT8)
ITEMS = 4  # of each shape, by default
SERVED = {"streams": "2", "intra_op_threads": "1"}  # catalog.Tuning's defaults


def _entry(manifest: dict, precision: str) -> dict:
    """What the export recorded of a precision (its files and its gate); {} where nothing."""
    variants = manifest.get("variants", {})
    if precision == ORT_INT8:
        return variants.get("int8") or {}
    return variants.get("openvino", {}).get("precisions", {}).get(precision) or {}


def graph_of(folder: Path, manifest: dict, precision: str) -> Path:
    """The graph a precision is served from."""
    from toneserve.export.families import get

    if precision in ("fp32", "bf16"):
        return folder / str(get(manifest["model"]).graph)
    entry = _entry(manifest, precision)
    if precision == ORT_INT8:
        if not entry:
            raise SystemExit(f"{folder}: no int8 variant; run `toneserve export --variants int8`")
        (name,) = entry["files"]
        return folder / name
    if "file" not in entry:
        raise SystemExit(f"{folder}: no openvino {precision} graph; run `toneserve export --variants openvino`")
    return folder / entry["file"]


def workload(family: str, folder: Path, items: int = ITEMS) -> list[dict]:
    """The family's items, one feed each (batch 1), in graph input order."""
    from toneserve.export.families import get
    from toneserve.samples import speechlike

    fam = get(family)
    if family == "text_sentiment":
        from tokenizers import Tokenizer

        rng = np.random.default_rng(0)
        vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
        return [{"input_ids": rng.integers(5, vocab, (1, n)).astype(np.int64),
                 "input_lens": np.array([n], np.int64)} for n in (24, 64) for _ in range(items)]
    seconds = (2.0, 10.0, 30.0) if family == "sensevoice" else (5.0,)
    feeds = []
    for s in seconds:
        for seed in range(items):
            wav = speechlike(s, seed=seed, pauses=False)[None, :]
            feeds.append(fam.audio_feeds(folder, wav, np.array([wav.shape[1]], np.int64)))
    return feeds


def _batches(items: list[dict], batch: int, per_shape: int = ITEMS) -> list[dict]:
    """Items of one shape joined `batch` at a time (items are grouped by shape, `per_shape` of each)."""
    out = []
    for block in range(0, len(items), per_shape):
        for start in range(block, min(block + per_shape, len(items)), batch):
            group = items[start:min(start + batch, block + per_shape)]
            out.append({name: np.concatenate([item[name] for item in group]) for name in group[0]})
    return out


def _openvino(graph: Path, precision: str, feeds: list[dict]) -> Callable[[], None]:
    """The graph compiled as the runner compiles it; a function computing `feeds` on both streams at once."""
    import openvino as ov

    from toneserve.export.openvino_variants import input_names, port_inputs

    config = compile_properties({**SERVED, "inference_precision": INFERENCE_PRECISION[precision]}, "",
                                int(SERVED["streams"]))
    config.pop("CACHE_DIR")
    compiled = ov.Core().compile_model(str(graph), "CPU", config)
    queue = ov.AsyncInferQueue(compiled, int(SERVED["streams"]))
    names = input_names(compiled, feeds[0])
    arrays = [dict(enumerate(port_inputs(names, feed))) for feed in feeds]

    def one_pass() -> None:
        for feed in arrays:
            queue.start_async(feed)
        queue.wait_all()
    return one_pass


def _onnxruntime(graph: Path, feeds: list[dict]) -> Callable[[], None]:
    """The graph in one ONNX Runtime session as the runner holds it: `streams` runs at once on threads of the
    session, each of `intra_op_threads` threads."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(SERVED["intra_op_threads"])
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    arrays = [{n: feed[n] for n in names} for feed in feeds]
    pool = ThreadPoolExecutor(int(SERVED["streams"]))

    def one_pass() -> None:
        list(pool.map(lambda feed: session.run(None, feed), arrays))
    return one_pass


def measure(family: str, folder: Path, precision: str, batch: int, repeat: int, items: int = ITEMS) -> dict:
    """One precision of one family, in this process."""
    manifest = json.loads((folder / "manifest.json").read_text())
    graph = graph_of(folder, manifest, precision)
    feeds = _batches(workload(family, folder, items), batch, items)
    gate = _entry(manifest, precision)
    before = resident()
    started = time.perf_counter()
    one_pass = _onnxruntime(graph, feeds) if precision == ORT_INT8 else _openvino(graph, precision, feeds)
    compile_s = time.perf_counter() - started
    compiled_mem = resident()

    def timed() -> float:
        t0 = time.perf_counter()
        one_pass()
        return time.perf_counter() - t0

    timed()
    passes = [timed() for _ in range(repeat)]
    return {"family": family, "precision": precision, "graph": graph.name, "items": items, "batch": batch,
            "gate_passed": gate.get("passed"), "compile_s": round(compile_s, 1),
            "pass_s": round(statistics.median(passes), 3), "pass_s_all": [round(p, 3) for p in passes],
            "start": before, "compiled": compiled_mem, "after_passes": resident()}


def _child(args: tuple, out) -> None:
    try:
        out.put(measure(*args))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        out.put({"family": args[0], "precision": args[2], "error": f"{type(exc).__name__}: {exc}"})


def run(models_dir: Path, families, precisions, batch: int, repeat: int, items: int = ITEMS) -> list[dict]:
    context = multiprocessing.get_context("spawn")  # a fresh process each: its memory is the precision's own
    results = []
    for family in families:
        for precision in precisions:
            out = context.Queue()
            process = context.Process(target=_child, args=((family, Path(models_dir) / family, precision, batch,
                                                            repeat, items), out))
            process.start()
            result = out.get()
            process.join()
            print(line(result), file=sys.stderr, flush=True)
            results.append(result)
    return results


def line(r: dict) -> str:
    if "error" in r:
        return f"{r['family']} {r['precision']}: {r['error']}"
    gate = {True: "passed", False: "FAILED", None: "-"}[r["gate_passed"]]
    return (f"{r['family']:15s} {r['precision']:11s} gate {gate:6s} pass {r['pass_s']:.3f} s "
            f"({min(r['pass_s_all']):.3f}-{max(r['pass_s_all']):.3f}), RSS compiled {r['compiled']['rss']} MB, "
            f"after {r['after_passes']['rss']} MB ({r['after_passes']['anon']} anonymous)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.openvino_precisions",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, required=True, help="exported models (`toneserve export`)")
    p.add_argument("--family", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS[:4]), choices=PRECISIONS)
    p.add_argument("--items", type=int, default=ITEMS, help="items of each shape (default %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="items per run (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="measured passes (default %(default)s)")
    p.add_argument("--json", type=Path, help="write the results and the machine here")
    args = p.parse_args(argv)
    if min(args.items, args.batch, args.repeat) < 1:
        p.error("--items, --batch and --repeat must be at least 1")
    cpu = machine.cpu()
    print(f"{cpu['model']}, {cpu['cores']} cores, {cpu['mhz']} MHz, {' '.join(cpu['features'])}", file=sys.stderr)
    results = run(args.models_dir, args.family, args.precisions, args.batch, args.repeat, args.items)
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu, "items": args.items, "batch": args.batch, "repeat": args.repeat,
                                         "results": results}, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
