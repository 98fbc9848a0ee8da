"""The soak: a replica under a steady mixed load for half an hour, every process's memory sampled.

    toneserve soak --repository DIR [--minutes 30] [--users 4] [--interval 30] [--window 20]
        [--calls 16] [--short 32] [--corpus DIR] [--out DIR] [-- GATEWAY FLAGS...]

It starts its own tritonserver (the embedded one, on `--repository`) and its own gateway, as the
reliability benchmark does (loadtest/reliability.py), and sends `--users` closed-loop users'
requests for `--minutes`: each picks at random from the call corpus (`--calls` two-speaker calls
of 15-120 s, loadtest/corpus.py) and short clips of varied length (`--short` clips of 0.5-5 s),
so the runtimes see many shapes, the load that makes per-shape caches and arenas grow.

Every `--interval` seconds it samples the resident memory (RSS) of every process: the gateway,
tritonserver, and each model's stubs (process_cpu.py names them); and the replica's proportional set size
(PSS), which counts a page shared by several of them (a library, a /dev/shm region) once, where their RSS sum
counts it in each. The goal (docs/BENCHMARKS.md,
"Memory: one copy of the weights per model, and the soak"): the whole replica grows by at most 5 %
over the last `--window` minutes, and every request is answered without an error (none lost, none
failed). Written to `--out`: soak.json (the summary and every sample), soak.csv (one row per sample,
one column per process) and soak.png (the curves).

Exit code 0 when both hold, 1 when either fails. Not a test: the figures depend on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import grpc

from toneserve.console import CommandError
from toneserve.loadtest import corpus as corpus_mod
from toneserve.loadtest import machine, process_cpu
from toneserve.loadtest.reliability import Bench, Tally, add_stack_arguments, user, wait_serving
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

GOAL_GROWTH = 0.05  # at most 5 % over the window


def recordings(args, folder: Path) -> list[bytes]:
    """The calls and the short clips, generated into `folder` unless `--corpus` names a call corpus."""
    calls_dir = Path(args.corpus) if args.corpus else folder / "calls"
    if not args.corpus:
        corpus_mod.generate(calls_dir, args.calls, seed=args.seed)
    short_dir = folder / "short"
    # 0.5-5 s: --clip-seconds 2.75 +- 1 s per clip would be too narrow, so two sets around 1.5 and 4 s.
    corpus_mod.generate_short(short_dir / "a", args.short // 2, clip_seconds=1.5, seed=args.seed)
    corpus_mod.generate_short(short_dir / "b", args.short - args.short // 2, clip_seconds=4.0, seed=args.seed + 1)
    audio = []
    for directory in (calls_dir, short_dir / "a", short_dir / "b"):
        audio += [(directory / entry.file).read_bytes() for entry in corpus_mod.load(directory)]
    return audio


def growth(samples: list[dict], window_s: float, key: str = "total") -> dict:
    """How much `key` grew over the last `window_s` seconds of `samples` (each {"t_s", key: MB}): from the
    sample at the window's start to the last one, as a fraction, and the least-squares slope in MB/min."""
    if not samples:
        return {"from_mb": None, "to_mb": None, "growth": None, "slope_mb_per_min": None}
    end = samples[-1]["t_s"]
    inside = [s for s in samples if s["t_s"] >= end - window_s - 1e-6]
    first, last = inside[0][key], inside[-1][key]
    slope = None
    if len(inside) >= 2:
        t = [s["t_s"] / 60 for s in inside]
        v = [s[key] for s in inside]
        mean_t, mean_v = sum(t) / len(t), sum(v) / len(v)
        denominator = sum((x - mean_t) ** 2 for x in t)
        slope = round(sum((x - mean_t) * (y - mean_v) for x, y in zip(t, v)) / denominator, 2) if denominator else 0.0
    return {"from_mb": first, "to_mb": last, "growth": round((last - first) / first, 4) if first else None,
            "slope_mb_per_min": slope, "window_s": round(end - inside[0]["t_s"], 1)}


TOTALS = ("total", "anon", "pss")


def sample(bench: Bench, started: float) -> dict:
    """RSS (MB) of the gateway, tritonserver and every model's stubs, their total, the total's anonymous part
    ("anon": less mapped files, which the kernel can drop) and the replica's proportional set size ("pss": every
    page counted once, where the sum of RSS counts a shared page in each process; process_cpu.memory_mb)."""
    assert bench.gateway is not None and bench.triton.process is not None
    gateway = process_cpu.memory_mb(bench.gateway.pid, "gateway", pss=True)
    triton = process_cpu.memory_mb(bench.triton.process.pid, "tritonserver", pss=True)
    parts = {"gateway": gateway["rss"]["gateway"], **triton["rss"]}
    anon = sum(gateway["anon"].values()) + sum(triton["anon"].values())
    pss = sum(gateway["pss"].values()) + sum(triton["pss"].values())
    return {"t_s": round(time.monotonic() - started, 1), **parts, "total": round(sum(parts.values()), 1),
            "anon": round(anon, 1), "pss": round(pss, 1)}


def write_figure(samples: list[dict], path: Path, window_s: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = sorted({k for s in samples for k in s if k not in ("t_s", *TOTALS)},
                   key=lambda k: -max(s.get(k, 0) for s in samples))
    figure, axis = plt.subplots(figsize=(9, 5))
    minutes = [s["t_s"] / 60 for s in samples]
    axis.plot(minutes, [s["total"] for s in samples], label="whole replica", linewidth=2.5, color="black")
    axis.plot(minutes, [s.get("anon", 0) for s in samples], label="whole replica, anonymous", linewidth=1.5,
              color="black", linestyle="--")
    if any("pss" in s for s in samples):
        axis.plot(minutes, [s.get("pss", 0) for s in samples], label="whole replica, PSS (each page once)",
                  linewidth=1.5, color="black", linestyle=":")
    for part in parts[:8]:
        axis.plot(minutes, [s.get(part, 0) for s in samples], label=part)
    if samples:
        axis.axvspan(max(0, minutes[-1] - window_s / 60), minutes[-1], color="0.9", label="growth window")
    axis.set_xlabel("minutes of load")
    axis.set_ylabel("resident memory, MB")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title("toneserve soak: RSS per process")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


async def soak(bench: Bench, args, audio: list[bytes]) -> dict:
    async with grpc.aio.insecure_channel(bench.address, options=[
            ("grpc.max_send_message_length", 256 * 2**20)]) as channel:
        await wait_serving(channel, 180)
        stub = pb_grpc.AnalyzerStub(channel)
        key = bench.keys["steady"]
        for clip in random.Random(args.seed).sample(audio, min(args.warmup, len(audio))):
            await user(stub, key, [clip], Tally(), time.monotonic() + 0.001, args.timeout)
        started = time.monotonic()
        duration = args.minutes * 60
        until = started + duration
        tally = Tally()
        load = [asyncio.create_task(user(stub, key, audio, tally, until, args.timeout)) for _ in range(args.users)]
        samples = [sample(bench, started)]
        say(samples[-1])
        while time.monotonic() < until:
            await asyncio.sleep(min(args.interval, max(0.0, until - time.monotonic())))
            samples.append(sample(bench, started))
            say(samples[-1], tally)
        await asyncio.gather(*load)
        samples.append(sample(bench, started))
    window_s = args.window * 60
    parts = sorted({k for s in samples for k in s if k != "t_s"})
    failed = sum(count for code, count in tally.answered.items() if code != "OK")
    result = {"cpu": machine.cpu(), "minutes": args.minutes, "users": args.users, "interval_s": args.interval,
              "window_min": args.window, "recordings": len(audio), "requests": tally.summary(), "lost": tally.lost,
              "failed": failed, "growth": {part: growth(samples, window_s, part) for part in parts},
              "goal_growth": GOAL_GROWTH, "samples": samples}
    total = result["growth"]["total"]["growth"]
    result["passed"] = bool(tally.lost == 0 and failed == 0 and total is not None and total <= GOAL_GROWTH)
    return result


def say(point: dict, tally: Tally | None = None) -> None:
    answered = f", {sum(tally.answered.values())} answered, {tally.lost} in flight" if tally else ""
    print(f"[soak] {point['t_s'] / 60:5.1f} min: replica {point['total']:.0f} MB ({point['anon']:.0f} anonymous, "
          f"PSS {point['pss']:.0f}){answered}", file=sys.stderr, flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p, users_help="closed-loop users (default 4)",
                        corpus_help="a call corpus (loadtest/corpus.py) to send instead of generating calls",
                        warmup_help="unmeasured requests first (default 8)")
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between memory samples (default 30)")
    p.add_argument("--window", type=float, default=20.0, help="the last minutes the growth is judged on (default 20)")
    p.add_argument("--calls", type=int, default=16, help="calls of 15-120 s to generate (default 16)")
    p.add_argument("--short", type=int, default=32, help="short clips of 0.5-5 s to generate (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="soak", help="folder for soak.json, soak.csv, soak.png (default ./soak)")


def run(args) -> int:
    if not 0 < args.window <= args.minutes or args.interval <= 0 or args.users < 1:
        raise CommandError(f"--window ({args.window:g}) must be above 0 and at most --minutes ({args.minutes:g}), "
                           "--interval above 0 and --users at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toneserve-soak-") as folder:
        audio = recordings(args, Path(folder))
        # The reliability benchmark's server pair, with no kills and no fairness phases.
        bench = Bench(argparse.Namespace(repository=args.repository, gateway_flags=args.gateway_flags), Path(folder))
        result = bench.serve(lambda: soak(bench, args, audio))
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    columns = ["t_s", *TOTALS, *sorted({k for s in result["samples"] for k in s} - {"t_s", *TOTALS})]
    with open(out / "soak.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(result["samples"])
    write_figure(result["samples"], out / "soak.png", args.window * 60)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    total = result["growth"]["total"]
    print(f"[soak] the replica grew {100 * (total['growth'] or 0):.1f} % over the last {args.window:g} min "
          f"({total['from_mb']} -> {total['to_mb']} MB), {result['lost']} requests lost, {result['failed']} failed: "
          f"{'PASSED' if result['passed'] else 'FAILED'} (goal: <= {100 * GOAL_GROWTH:.0f} %, none lost or failed); "
          f"written to {out}/", file=sys.stderr)
    return 0 if result["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toneserve soak", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
