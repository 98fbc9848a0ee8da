"""Export benchmark: export time, artifact sizes, and CPU milliseconds per 10 s of audio.

    python -m toneserve.export.benchmark --work /tmp/toneserve-bench [--size base] [--threads 2]

For each model family it exports the real-size architecture (random weights: compute does
not depend on weight values), quantises it to int8, and times, in one process and on the
same inputs: PyTorch eager (the baseline), ONNX Runtime fp32 and ONNX Runtime int8, at
batch 1 and batch 8 of 10 s clips. Figures are medians of `--repeat` runs after one warm-up;
the ratio column is eager time / candidate time (higher is faster).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from toneserve.export import emotion2vec, sensevoice
from toneserve.export.families import get
from toneserve.export.sensevoice_frontend import SenseVoiceFrontend, load_cmvn
from toneserve.export.variants import quantize_int8
from toneserve.samples import speechlike

SECONDS = 10.0
RATE = 16000


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up: allocations, ORT graph optimisation caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _clips(batch: int, seed: int = 0) -> np.ndarray:
    return np.stack([speechlike(SECONDS, RATE, seed=seed + i) for i in range(batch)])


def _session(path: Path, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def bench_emotion2vec(work: Path, preset: str, threads: int, repeat: int) -> tuple[list[dict], dict]:
    folder = work / "emotion2vec"
    started = time.perf_counter()
    manifest = emotion2vec.export_onnx(folder, preset=preset)
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
    int8_s = time.perf_counter() - started

    wrapper = emotion2vec.Emotion2vecWrapper(emotion2vec.build_model(preset, manifest["seed"])).eval()
    sessions = {"fp32": _session(folder / "model.onnx", threads), "int8": _session(folder / "model.int8.onnx", threads)}
    rows = []
    for batch in (1, 8):
        wav = _clips(batch)
        lens = np.full(batch, wav.shape[1], np.int64)
        wav_t, lens_t = torch.from_numpy(wav), torch.from_numpy(lens)

        def eager():
            with torch.no_grad():
                wrapper(wav_t, lens_t)
        eager_ms = _median_ms(eager, repeat)
        rows.append({"model": f"emotion2vec {preset}", "engine": "torch eager", "batch": batch,
                     "ms_per_10s": eager_ms / batch, "ratio": 1.0})
        for name, session in sessions.items():
            ms = _median_ms(lambda: session.run(None, {"wav": wav, "wav_lens": lens}), repeat)
            rows.append({"model": f"emotion2vec {preset}", "engine": f"onnxruntime {name}", "batch": batch,
                         "ms_per_10s": ms / batch, "ratio": eager_ms / ms})
    sizes = {"fp32": _size_mb(folder / "model.onnx"), "int8": _size_mb(folder / "model.int8.onnx")}
    return rows, {"family": "emotion2vec", "preset": preset, "export_s": export_s, "int8_s": int8_s,
                  "size_mb": sizes, "params": manifest["serving"]["num_params"]}


def bench_sensevoice(work: Path, preset: str, threads: int, repeat: int) -> tuple[list[dict], dict]:
    folder = work / "sensevoice"
    started = time.perf_counter()
    manifest = sensevoice.export_onnx(folder, preset=preset)
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    quantize_int8(folder / "encoder.onnx", folder / "encoder.int8.onnx")
    int8_s = time.perf_counter() - started

    model = sensevoice.build_model(preset, manifest["serving"]["vocab_size"], manifest["seed"])
    encoder = sensevoice._encoder_wrapper(model).eval()
    frontend_t = SenseVoiceFrontend(load_cmvn(folder / "am.mvn")).eval()
    frontend = _session(folder / "frontend.onnx", threads)
    encoders = {"fp32": _session(folder / "encoder.onnx", threads),
                "int8": _session(folder / "encoder.int8.onnx", threads)}
    assets = json.loads((folder / "decode_assets.json").read_text())
    rows = []
    for batch in (1, 8):
        wav = _clips(batch)
        lens = np.full(batch, wav.shape[1], np.int64)
        language = np.full(batch, assets["language_query_ids"]["auto"], np.int64)
        textnorm = np.full(batch, assets["textnorm_query_ids"]["woitn"], np.int64)
        tensors = [torch.from_numpy(a) for a in (wav, lens, language, textnorm)]

        def eager():
            with torch.no_grad():
                feats, feat_lens = frontend_t(tensors[0], tensors[1])
                encoder(feats, feat_lens, tensors[2], tensors[3])
        eager_ms = _median_ms(eager, repeat)
        rows.append({"model": f"sensevoice {preset}", "engine": "torch eager", "batch": batch,
                     "ms_per_10s": eager_ms / batch, "ratio": 1.0})
        for name, session in encoders.items():
            def run():
                feats, feat_lens = frontend.run(None, {"wav": wav, "wav_lens": lens})
                session.run(None, {"speech": feats, "speech_lengths": feat_lens, "language": language,
                                   "textnorm": textnorm})
            ms = _median_ms(run, repeat)
            rows.append({"model": f"sensevoice {preset}", "engine": f"onnxruntime {name}", "batch": batch,
                         "ms_per_10s": ms / batch, "ratio": eager_ms / ms})
    sizes = {"fp32": _size_mb(folder / "frontend.onnx", folder / "encoder.onnx"),
             "int8": _size_mb(folder / "frontend.onnx", folder / "encoder.int8.onnx")}
    return rows, {"family": "sensevoice", "preset": preset, "export_s": export_s, "int8_s": int8_s,
                  "size_mb": sizes, "params": sum(p.numel() for p in model.parameters())}


def markdown(rows: list[dict], exports: list[dict], threads: int) -> str:
    lines = [f"Machine: {platform.processor() or platform.machine()}, {threads} threads for torch and ONNX Runtime; "
             f"torch {torch.__version__}, onnxruntime {ort.__version__}; {SECONDS:.0f} s clips.", "",
             "| model | export s | int8 quantise s | params | fp32 MB | int8 MB |", "|---|---|---|---|---|---|"]
    for e in exports:
        lines.append(f"| {e['family']} {e['preset']} | {e['export_s']:.1f} | {e['int8_s']:.1f} | "
                     f"{e['params'] / 1e6:.1f} M | {e['size_mb']['fp32']:.0f} | {e['size_mb']['int8']:.0f} |")
    lines += ["", "| model | engine | batch | ms per 10 s of audio | speed-up vs eager |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['engine']} | {r['batch']} | {r['ms_per_10s']:.0f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the exports")
    parser.add_argument("--size", default="base", choices=["tiny", "base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(io.StringIO()):  # FunASR's ffmpeg notice is not for us
        import funasr  # noqa: F401
    rows, exports = [], []
    for bench, family in ((bench_emotion2vec, "emotion2vec"), (bench_sensevoice, "sensevoice")):
        family_rows, export = bench(args.work, get(family).size_presets[args.size], args.threads, args.repeat)
        rows += family_rows
        exports.append(export)
    print(markdown(rows, exports, args.threads))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "exports": exports}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
