"""Where one OpenVINO model's memory goes: the SenseVoice encoder of a rendered repository compiled and run
alone in this process, its resident memory read after each step (docs/BENCHMARKS.md, "Memory").

    python -m toneserve.loadtest.openvino_memory --repository DIR [--properties '{"KEY": value}'] [--no-cache]

Compiled as the runner compiles it (openvino_compile.py: the model's config parameters, one stream), from the
graph file, with the compile cache in a temporary folder unless `--no-cache` (run twice: the first run writes
the cache, the second imports it, as a restarted server does). Then 12 requests of different lengths, then
43 more at batch 2: the shapes a served model meets. After each step: RSS, and its anonymous and file-backed
parts (/proc/self/status: RssAnon, RssFile; a mapped cache blob is file-backed, which the kernel can drop).
`--properties` adds or overrides compile properties, e.g. '{"CPU_RUNTIME_CACHE_CAPACITY": 0}'.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from toneserve.loadtest.compute_bound import config_parameters, model_config
from toneserve.model_repository.runners.openvino_compile import compile_properties


def resident() -> dict[str, float]:
    """This process's RSS and its anonymous and file-backed parts, MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024)
    return {"rss": fields.get("VmRSS", 0), "anon": fields.get("RssAnon", 0), "file": fields.get("RssFile", 0)}


def measure(repository: Path, properties: dict, cache: bool) -> list[dict]:
    import openvino as ov

    params = config_parameters(model_config(repository, "sensevoice_encoder"))
    if "graph_file" not in params:
        raise SystemExit(f"{repository}/sensevoice_encoder is not served by OpenVINO (no graph_file parameter)")
    graph = Path(repository) / "sensevoice_encoder" / "1" / params["graph_file"]
    steps = [{"step": "start", **resident()}]
    with tempfile.TemporaryDirectory(prefix="toneserve-ov-memory-") as folder:
        cache_dir = str(Path(repository) / "sensevoice_encoder" / "1" / "ov_cache") if cache else folder
        config = {**compile_properties(params, cache_dir), **properties}
        if not cache:
            config["CACHE_DIR"] = ""
        started = time.perf_counter()
        compiled = ov.Core().compile_model(str(graph), "CPU", config)
        steps.append({"step": f"compiled ({time.perf_counter() - started:.1f} s)", **resident()})
        request = compiled.create_infer_request()
        feat_dim = compiled.inputs[0].get_partial_shape()[2].get_length()
        rng = np.random.default_rng(0)

        def run(frames: list[int]) -> None:
            batch = len(frames)
            speech = rng.standard_normal((batch, max(frames), feat_dim), dtype=np.float32)
            request.infer({0: speech, 1: np.array(frames, np.int64), 2: np.zeros(batch, np.int64),
                           3: np.full(batch, 14, np.int64)})

        for frames in (16, 50, 100, 37, 200, 61, 300, 83, 150, 250, 120, 90):
            run([frames])
        steps.append({"step": "after 12 lengths", **resident()})
        for frames in range(20, 320, 7):
            run([frames, frames - 3])
        steps.append({"step": "after 43 more (batch 2)", **resident()})
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.openvino_memory",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, required=True, help="a rendered cpu repository (OpenVINO encoder)")
    p.add_argument("--properties", default="{}", help="compile properties to add or override (JSON)")
    p.add_argument("--no-cache", action="store_true", help="compile from the graph, no compile cache")
    args = p.parse_args(argv)
    for step in measure(args.repository, json.loads(args.properties), not args.no_cache):
        print(f"{step['step']:28s} RSS {step['rss']:6d} MB  anonymous {step['anon']:6d}  file-backed {step['file']:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
