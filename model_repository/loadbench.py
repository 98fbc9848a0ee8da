"""Load bench for the Triton ensembles: throughput, latency and the batches Triton formed.

    python -m toneserve.model_repository.loadbench --repository DIR \
        [--ensembles emotion asr] [--concurrency 1 4 16] [--requests N | --seconds S] \
        [--lengths 1.0 2.5 4.0 5.0] [--warmup N] [--json out.json] [--url HOST:PORT]

Starts the embedded tritonserver on the repository (free ports), or attaches to a running one
with `--url`. For each ensemble and each concurrency level it runs a closed loop with
`tritonclient.grpc.aio`: exactly `concurrency` requests in flight, each a clip of
`toneserve.samples.speechlike` audio at 16 kHz whose length is drawn round-robin from
`--lengths`. After warm-up requests (not counted anywhere below) it snapshots Triton's
statistics, runs the measured requests, waits for the statistics to settle and snapshots again;
every per-model figure is the difference of the two snapshots.

Per level it reports what the client saw (requests/s, audio seconds per wall second = RTFx,
latency p50/p95/p99, errors) and per composing model what Triton did: inference_count vs
execution_count (average batch size), the batch sizes it formed (from `batch_stats`) and the
average time a request spent queued vs in compute. Any error (warm-up included) is reported
and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tritonclient.grpc import aio
from tritonclient.utils import InferenceServerException

from toneserve import contract
from toneserve.samples import speechlike
from toneserve.triton import EmbeddedTriton, TritonPorts, TritonStartError, free_port

RATE = 16000
DEFAULT_ENSEMBLES = (contract.EMOTION, contract.ASR)
DEFAULT_CONCURRENCY = (1, 4, 16)
DEFAULT_LENGTHS = (1.0, 2.5, 4.0, 5.0)
DEFAULT_REQUESTS = 100
# What the asr ensemble is asked for: automatic language, no inverse text normalisation
# (the gateway's defaults); the ids come from the ensemble's own config parameters.
ASR_LANGUAGE, ASR_TEXTNORM = "auto", "woitn"
_PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_COMPUTE = ("compute_input", "compute_infer", "compute_output")


class BenchError(RuntimeError):
    """The bench could not run (server or ensemble missing); the message says why."""


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Clip:
    seconds: float
    inputs: list  # tritonclient InferInput objects, built once and reused (read-only)


def _tensor(name: str, array: np.ndarray):
    tensor = aio.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
    tensor.set_data_from_numpy(array)
    return tensor


def make_clips(lengths, extra: dict[str, int] | None = None) -> list[Clip]:
    """One clip per length (seconds of speech-like audio at 16 kHz) with the ensemble's inputs."""
    clips = []
    for index, seconds in enumerate(lengths):
        wav = speechlike(float(seconds), RATE, seed=index)
        if wav.size == 0:
            raise ValueError(f"clip length {seconds} s gives no samples at {RATE} Hz")
        inputs = [_tensor(contract.WAV, wav[None, :]),
                  _tensor(contract.WAV_LENS, np.array([[wav.size]], np.int64))]
        inputs += [_tensor(name, np.array([[value]], np.int64)) for name, value in (extra or {}).items()]
        clips.append(Clip(wav.size / RATE, inputs))
    return clips


class _Progress:
    """tqdm over requests (--requests) or over seconds (--seconds); a no-op when disabled."""

    def __init__(self, label: str, requests: int | None, seconds: float | None, enabled: bool):
        self.bar = None
        self.seconds = seconds
        self.errors = 0
        if enabled:
            if requests is not None:
                self.bar = tqdm(total=requests, desc=label, unit="req", file=sys.stderr, leave=True)
            else:
                self.bar = tqdm(total=seconds, desc=label, unit="s", file=sys.stderr, leave=True,
                                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} s{postfix}")
        self.start = time.perf_counter()
        self.done = 0

    def update(self, ok: bool) -> None:
        self.done += 1
        self.errors += not ok
        if self.bar is None:
            return
        if self.seconds is None:
            self.bar.update(1)
        else:
            self.bar.n = min(time.perf_counter() - self.start, self.seconds)
        if self.errors or self.seconds is not None:
            self.bar.set_postfix(requests=self.done, errors=self.errors, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            if self.seconds is not None:
                self.bar.n = self.seconds
                self.bar.refresh()
            self.bar.close()


async def closed_loop(client, model: str, clips: list[Clip], concurrency: int, requests: int | None = None,
                      seconds: float | None = None, timeout: float | None = None,
                      progress: _Progress | None = None) -> dict:
    """`concurrency` workers, each sending its next request as soon as its last one is answered.

    Request i carries clip i mod len(clips). Stops after `requests` requests, or stops starting
    new ones once `seconds` have passed (those in flight are awaited and counted).
    """
    if (requests is None) == (seconds is None):
        raise ValueError("give exactly one of requests and seconds")
    latencies: list[float | None] = []  # per request in send order; None = failed
    clip_seconds: list[float] = []
    errors: Counter[str] = Counter()
    next_index = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else None

    async def worker() -> None:
        nonlocal next_index
        while True:
            if requests is not None and next_index >= requests:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            index, next_index = next_index, next_index + 1
            clip = clips[index % len(clips)]
            latencies.append(None)
            clip_seconds.append(clip.seconds)
            sent = time.perf_counter()
            try:
                await client.infer(model, clip.inputs, client_timeout=timeout)
            except (InferenceServerException, OSError, asyncio.TimeoutError) as exc:
                message = exc.message() if isinstance(exc, InferenceServerException) else repr(exc)
                errors[" ".join(str(message).split())[:300]] += 1
                ok = False
            else:
                latencies[index] = (time.perf_counter() - sent) * 1000.0
                ok = True
            if progress is not None:
                progress.update(ok)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    good = [value for value in latencies if value is not None]
    audio = sum(s for s, value in zip(clip_seconds, latencies) if value is not None)
    latency = None
    if good:
        p50, p95, p99 = np.percentile(good, [50, 95, 99])
        latency = {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(np.mean(good)),
                   "min": float(np.min(good)), "max": float(np.max(good))}
    return {"requests": len(latencies), "ok": len(good), "errors": len(latencies) - len(good),
            "error_messages": dict(errors), "wall_s": wall, "audio_s": audio,
            "requests_per_s": len(good) / wall if wall > 0 else 0.0,
            "rtfx": audio / wall if wall > 0 else 0.0, "latency_ms": latency,
            "latencies_ms": latencies, "clip_seconds": clip_seconds}


# -------------------------------------------------------------------------- statistics


def counters(entry: dict) -> dict:
    """The cumulative counters of one model's statistics (as_json form: uint64 as strings, zeros omitted)."""
    stats = entry.get("inference_stats", {})
    out = {"inference_count": int(entry.get("inference_count", 0)),
           "execution_count": int(entry.get("execution_count", 0))}
    for phase in _PHASES:
        out[f"{phase}_count"] = int(stats.get(phase, {}).get("count", 0))
        out[f"{phase}_ns"] = int(stats.get(phase, {}).get("ns", 0))
    batches = {}
    for batch in entry.get("batch_stats", []):
        batches[int(batch.get("batch_size", 0))] = {
            "executions": int(batch.get("compute_infer", {}).get("count", 0)),
            "compute_ns": sum(int(batch.get(phase, {}).get("ns", 0)) for phase in _COMPUTE)}
    out["batches"] = batches
    return out


def _add(a: dict, b: dict, sign: int = 1) -> dict:
    out = {key: a.get(key, 0) + sign * b.get(key, 0) for key in a.keys() | b.keys() if key != "batches"}
    sizes = a.get("batches", {}).keys() | b.get("batches", {}).keys()
    zero = {"executions": 0, "compute_ns": 0}
    out["batches"] = {size: {key: a.get("batches", {}).get(size, zero)[key]
                             + sign * b.get("batches", {}).get(size, zero)[key] for key in zero}
                      for size in sorted(sizes)}
    return out


async def snapshot(client, names) -> dict[str, dict]:
    """Counters per model name (versions summed) for the models in `names`."""
    reply = await client.get_inference_statistics(as_json=True)
    out: dict[str, dict] = {}
    for entry in reply.get("model_stats", []):
        if entry.get("name") in names:
            found = counters(entry)
            out[entry["name"]] = _add(out[entry["name"]], found) if entry["name"] in out else found
    return out


def delta(before: dict, after: dict) -> dict:
    return _add(after, before, sign=-1)


def _ms(ns: int, count: int) -> float | None:
    return ns / count / 1e6 if count else None


def summarise(d: dict) -> dict:
    """What one model did during a level, from the counter delta `d`."""
    inferences, executions = d["inference_count"], d["execution_count"]
    batch_compute_ns = sum(b["compute_ns"] for b in d["batches"].values())
    compute = {phase: _ms(d[f"{phase}_ns"], d[f"{phase}_count"]) for phase in _COMPUTE}
    return {
        "inference_count": inferences,
        "execution_count": executions,
        "avg_batch_size": inferences / executions if executions else None,
        # batch size -> executions of that size, and their average compute (input+infer+output) time
        "batch_sizes": {str(size): {"executions": b["executions"],
                                    "avg_compute_ms": _ms(b["compute_ns"], b["executions"])}
                        for size, b in d["batches"].items() if b["executions"]},
        "requests_ok": d["success_count"],
        "requests_failed": d["fail_count"],
        "avg_request_ms": _ms(d["success_ns"], d["success_count"]),
        "avg_queue_ms": _ms(d["queue_ns"], d["queue_count"]),
        **{f"avg_{phase}_ms": value for phase, value in compute.items()},
        "avg_compute_ms": (sum(v for v in compute.values() if v is not None)
                           if any(v is not None for v in compute.values()) else None),
        "compute_ms_per_inference": _ms(batch_compute_ns, inferences),
    }


async def settled_snapshot(client, names, ensemble: str, composing, before: dict, sent: int,
                           timeout: float = 10.0, interval: float = 0.05) -> dict:
    """Statistics once Triton has booked every request sent since `before`.

    Triton records a request's figures when it releases the request, which can be a moment
    after the client got the answer (the last step of an ensemble especially). Wait until the
    ensemble has booked `sent` requests, every composing model at least as many inferences as
    the ensemble had successes, and two reads `interval` apart agree.
    """
    empty = counters({})
    deadline = time.monotonic() + timeout
    last = await snapshot(client, names)
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        current = await snapshot(client, names)
        ens = delta(before.get(ensemble, empty), current.get(ensemble, empty))
        booked = ens["success_count"] + ens["fail_count"] >= sent and all(
            delta(before.get(m, empty), current.get(m, empty))["inference_count"] >= ens["success_count"]
            for m in composing)
        if booked and current == last:
            return current
        last = current
    return last


# --------------------------------------------------------------------------------- bench


async def _ensemble_info(client, name: str) -> tuple[list[str], dict[str, str]]:
    if not await client.is_model_ready(name):
        raise BenchError(f"ensemble {name!r} is not ready on the server")
    config = (await client.get_model_config(name, as_json=True))["config"]
    steps = config.get("ensemble_scheduling", {}).get("step", [])
    if not steps:
        raise BenchError(f"model {name!r} is not an ensemble (no ensemble_scheduling steps)")
    parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    return list(dict.fromkeys(step["model_name"] for step in steps)), parameters


def _extra_inputs(name: str, parameters: dict[str, str]) -> dict[str, int]:
    if name != contract.ASR:
        return {}
    try:
        language = int(json.loads(parameters["language_query_ids"])[ASR_LANGUAGE])
        textnorm = int(json.loads(parameters["textnorm_query_ids"])[ASR_TEXTNORM])
    except (KeyError, ValueError) as exc:
        raise BenchError(f"ensemble {name!r}: config parameters lack the query id {exc}") from None
    return {contract.LANGUAGE: language, contract.TEXTNORM: textnorm}


async def bench(url: str, ensembles=DEFAULT_ENSEMBLES, concurrency_levels=DEFAULT_CONCURRENCY,
                requests: int | None = None, seconds: float | None = None, lengths=DEFAULT_LENGTHS,
                warmup: int | None = None, timeout: float | None = 120.0, progress: bool = True) -> dict:
    """Run every level against the Triton at `url` (HOST:PORT, gRPC); returns all figures."""
    if requests is None and seconds is None:
        requests = DEFAULT_REQUESTS
    if (requests is not None and requests < 1) or (seconds is not None and seconds <= 0):
        raise ValueError("--requests must be >= 1 and --seconds > 0")
    if not lengths or min(lengths) <= 0:
        raise ValueError("--lengths needs at least one positive length")
    if not concurrency_levels or min(concurrency_levels) < 1:
        raise ValueError("--concurrency levels must be >= 1")
    client = aio.InferenceServerClient(url)
    try:
        try:
            server = await client.get_server_metadata(as_json=True)
        except InferenceServerException as exc:
            raise BenchError(f"no Triton answers on {url}: {exc.message()}") from None
        results = {
            "meta": {"url": url, "server": {"name": server.get("name"), "version": server.get("version")},
                     "host": socket.gethostname(), "cpus": os.cpu_count(), "platform": platform.platform(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "requests": requests, "seconds": seconds, "lengths_s": list(map(float, lengths)),
                     "concurrency": list(concurrency_levels), "warmup": warmup,
                     "asr_query": {"language": ASR_LANGUAGE, "textnorm": ASR_TEXTNORM}},
            "ensembles": {}}
        for name in ensembles:
            composing, parameters = await _ensemble_info(client, name)
            extra = _extra_inputs(name, parameters)
            clips = make_clips(lengths, extra)
            names = {name, *composing}
            entry = {"composing_models": composing, "inputs": {k: v for k, v in extra.items()},
                     "parameters": {k: parameters[k] for k in ("family", "preset", "weights_origin", "precision")
                                    if k in parameters},
                     "levels": []}
            results["ensembles"][name] = entry
            for concurrency in concurrency_levels:
                warm = warmup if warmup is not None else max(concurrency, len(clips))
                warm_result = None
                before = await snapshot(client, names)
                if warm:
                    warm_result = await closed_loop(client, name, clips, concurrency, requests=warm,
                                                    timeout=timeout)
                    # Let the warm-up requests be booked before the measured level starts.
                    before = await settled_snapshot(client, names, name, composing, before, warm)
                bar = _Progress(f"{name} c={concurrency}", requests, seconds, progress)
                try:
                    measured = await closed_loop(client, name, clips, concurrency, requests=requests,
                                                 seconds=seconds, timeout=timeout, progress=bar)
                finally:
                    bar.close()
                after = await settled_snapshot(client, names, name, composing, before, measured["requests"])
                empty = counters({})
                deltas = {model: delta(before.get(model, empty), after.get(model, empty)) for model in names}
                entry["levels"].append({
                    "concurrency": concurrency,
                    "warmup_requests": warm,
                    "warmup_errors": warm_result["errors"] if warm_result else 0,
                    "warmup_error_messages": warm_result["error_messages"] if warm_result else {},
                    **measured,
                    "ensemble": summarise(deltas[name]),
                    "models": {model: summarise(deltas[model]) for model in composing},
                    "stats_before": before, "stats_after": after,
                })
        results["errors"] = sum(level["errors"] + level["warmup_errors"]
                                for entry in results["ensembles"].values() for level in entry["levels"])
        return results
    finally:
        await client.close()


def run(target, ensembles=DEFAULT_ENSEMBLES, concurrency_levels=DEFAULT_CONCURRENCY,
        requests: int | None = None, lengths=DEFAULT_LENGTHS, *, seconds: float | None = None,
        warmup: int | None = None, timeout: float | None = 120.0, progress: bool = True,
        triton_log: Path | None = None) -> dict:
    """Bench a model repository (a Path, or a str naming a folder: started on free ports) or a
    running Triton (a str HOST:PORT, its gRPC endpoint). Returns what `bench` returns."""
    kwargs = dict(ensembles=list(ensembles), concurrency_levels=list(concurrency_levels), requests=requests,
                  seconds=seconds, lengths=list(lengths), warmup=warmup, timeout=timeout, progress=progress)
    if isinstance(target, Path) or Path(str(target)).is_dir():
        ports = TritonPorts(free_port(), free_port(), free_port())
        with EmbeddedTriton(Path(target), ports, log_path=triton_log) as triton:
            results = asyncio.run(bench(triton.grpc_url, **kwargs))
            results["meta"]["repository"] = str(triton.repository)
            results["meta"]["triton_log"] = str(triton.log_path)
        return results
    return asyncio.run(bench(str(target), **kwargs))


# ------------------------------------------------------------------------------- report


def _f(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    """One section per ensemble: the client's view per level, then what each composing model did."""
    lines = []
    for name, entry in results["ensembles"].items():
        params = entry.get("parameters", {})
        origin = ", ".join(f"{k} {v}" for k, v in params.items())
        lines += [f"### {name}" + (f" ({origin})" if origin else ""), "",
                  "| concurrency | requests | errors | req/s | RTFx | p50 ms | p95 ms | p99 ms | server ms |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for level in entry["levels"]:
            lat = level["latency_ms"] or {}
            errors = level["errors"] + level["warmup_errors"]
            lines.append(f"| {level['concurrency']} | {level['requests']} | {errors} | "
                         f"{level['requests_per_s']:.2f} | {level['rtfx']:.1f} | {_f(lat.get('p50'))} | "
                         f"{_f(lat.get('p95'))} | {_f(lat.get('p99'))} | "
                         f"{_f(level['ensemble']['avg_request_ms'])} |")
        lines += ["", "| concurrency | model | inferences | executions | avg batch | batch sizes (size×executions) "
                      "| queue ms | compute ms/request | compute ms/inference |",
                  "|---:|---|---:|---:|---:|---|---:|---:|---:|"]
        for level in entry["levels"]:
            for model, s in level["models"].items():
                sizes = " ".join(f"{size}×{b['executions']}" for size, b in s["batch_sizes"].items()) or "–"
                lines.append(f"| {level['concurrency']} | {model} | {s['inference_count']} | {s['execution_count']} "
                             f"| {_f(s['avg_batch_size'], 2)} | {sizes} | {_f(s['avg_queue_ms'])} "
                             f"| {_f(s['avg_compute_ms'])} | {_f(s['compute_ms_per_inference'])} |")
        for level in entry["levels"]:
            for kind in ("warmup_error_messages", "error_messages"):
                for message, count in level[kind].items():
                    lines.append(f"\n**{count} error(s)** at concurrency {level['concurrency']}"
                                 f"{' (warm-up)' if kind.startswith('warmup') else ''}: {message}")
        lines.append("")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m toneserve.model_repository.loadbench",
        description="Throughput, latency and dynamic-batching figures of the Triton ensembles.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--repository", type=Path, help="model repository: start the embedded tritonserver on it")
    where.add_argument("--url", help="attach to a running Triton instead (gRPC HOST:PORT)")
    p.add_argument("--ensembles", nargs="+", default=list(DEFAULT_ENSEMBLES), choices=list(DEFAULT_ENSEMBLES))
    p.add_argument("--concurrency", nargs="+", type=int, default=list(DEFAULT_CONCURRENCY),
                   help="requests in flight, one level each (default 1 4 16)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help=f"measured requests per level (default {DEFAULT_REQUESTS})")
    amount.add_argument("--seconds", type=float, help="measure each level for this long instead")
    p.add_argument("--lengths", nargs="+", type=float, default=list(DEFAULT_LENGTHS),
                   help="clip lengths in seconds, used round-robin (default 1.0 2.5 4.0 5.0)")
    p.add_argument("--warmup", type=int,
                   help="warm-up requests before each level, not measured (default max(concurrency, #lengths))")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request client timeout in seconds")
    p.add_argument("--json", type=Path, help="write every figure (per-request latencies, raw statistics) here")
    p.add_argument("--triton-log", type=Path, help="tritonserver log file (embedded server only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        results = run(args.repository if args.repository is not None else args.url, args.ensembles,
                      args.concurrency, args.requests, args.lengths, seconds=args.seconds, warmup=args.warmup,
                      timeout=args.timeout, progress=not args.no_progress, triton_log=args.triton_log)
    except (BenchError, TritonStartError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything stopped", file=sys.stderr)
        return 130
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    if results["errors"]:
        print(f"error: {results['errors']} request(s) failed (see the tables)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
