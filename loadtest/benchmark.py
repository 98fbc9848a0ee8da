"""toneserve against the baseline and against the compute bound, in one run (docs/BENCHMARKS.md).

    python -m toneserve.loadtest.benchmark --size base --corpus DIR --users 1 2 4 --run-time 180 \
        --systems fp32 int8 fp32:instances=1,threads=2 [--baseline-workers 2 --baseline-threads 1] --out DIR

Needs the exported models (`toneserve export --size base --variants int8`). Renders one cpu
repository per `--systems` entry under OUT: a precision, and optionally scheduling that differs
from the measured defaults (`instances`, `threads`: what `toneserve export --instances
--threads` set), or the gateway's slots (`slots`, `cpu`: its --max-triton-calls and --cpu-slots). Then starts, side by side on free ports, one `toneserve serve` per system and
the baseline (baseline.py, checked for parity against the first system before it serves). For each number
of users, every system gets the same Locust load from the same corpus, one system after the
other (interleaved, so a disturbance of the machine spreads over all systems instead of
landing on one; --one-at-a-time starts one server at a time where several do not fit in memory),
with Triton's metrics, every process's CPU and the machine's state (its CPU and clock, steal time, what
else ran: machine.py) read around each run. Every run is repeated `--repeat` times (default 3),
each repetition running every system in turn, and each ratio against the baseline is the median
(and range) of the ratios within a repetition. Then the
compute bound of each system's repository on the same recordings (compute_bound.py, as many
streams as the repository has instances). Everything is stopped at the end.

Writes OUT/benchmark.json (every figure) and OUT/benchmark.md (the tables), and each run's
Locust CSV / HTML / ledger under OUT/runs/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toneserve import paths
from toneserve.console import say
from toneserve.loadtest import compute_bound, corpus, live_lag, machine, process_cpu, triton_metrics
from toneserve.loadtest.run import run, warm_up
from toneserve.model_repository.catalog import DEFAULT_TUNING, describe
from toneserve.model_repository.render import render_repository
from toneserve.triton import free_port


def _wait(ready, process: subprocess.Popen, log: Path, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _healthy(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status \
                == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


@contextmanager
def _process(command: list[str], log: Path):
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # both servers stop cleanly on Ctrl-C
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def toneserve(repository: Path, log: Path, gateway_args: list[str] = ()):
    """`toneserve serve` on free ports, with `gateway_args` (gateway_args_of); yields (gateway address, Triton
    metrics address, pid)."""
    ports = {name: free_port() for name in ("gateway", "http", "grpc", "metrics")}
    command = [sys.executable, "-m", "toneserve.cli", "serve", "--repository", str(repository),
               "--port", str(ports["gateway"]), "--triton-http-port", str(ports["http"]),
               "--triton-grpc-port", str(ports["grpc"]), "--triton-metrics-port", str(ports["metrics"]),
               "--metrics-port", "0", *gateway_args]
    with _process(command, log) as process:
        address = f"127.0.0.1:{ports['gateway']}"
        _wait(lambda: _healthy(address), process, log, f"toneserve serve ({repository})")
        yield address, f"127.0.0.1:{ports['metrics']}", process.pid


@contextmanager
def baseline(models_dir: Path, workers: int, threads: int, check_against: str, log: Path):
    """The baseline server on a free port, after its parity check; yields (address, pid, parity report)."""
    port = free_port()
    command = [sys.executable, "-m", "toneserve.loadtest.baseline", "--models-dir", str(models_dir),
               "--port", str(port), "--workers", str(workers), "--threads", str(threads),
               "--check-against", check_against]
    with _process(command, log) as process:
        _wait(lambda: "baseline listening" in log.read_text(), process, log, "the baseline")
        line = next(line for line in log.read_text().splitlines() if "parity: " in line)
        yield f"127.0.0.1:{port}", process.pid, json.loads(line.split("parity: ", 1)[1])


# What a --systems entry may change: its key there -> (Tuning.changed argument, type).
SYSTEM_FLAGS: dict[str, tuple[str, Callable[[str], Any]]] = {"instances": ("instances", int), "threads": ("threads", int),
                "streams": ("streams", int),
                "batch": ("max_batch_size", int), "pad": ("max_pad_ratio", float),
                "share": ("share_cores", lambda v: {"1": True, "0": False}[v])}
# What a --systems entry may set of the gateway: its key there -> the `toneserve serve` flag (a count).
GATEWAY_FLAGS = {"slots": "--max-triton-calls", "cpu": "--cpu-slots"}


# A --systems name: RUNTIME-PRECISION, or a bare precision (the catalog's "auto" runtime).
RUNTIMES = {"ort": "onnxruntime", "ov": "openvino"}
PRECISIONS = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8"), "auto": ("fp32", "bf16", "int8")}


def parse_system(spec: str) -> tuple[str, str, dict[str, float]]:
    """'ov-int8:instances=2,threads=1,pad=1.0' -> ('openvino', 'int8', {'instances': 2, 'threads': 1, 'pad': 1.0});
    'int8' -> ('auto', 'int8', {}); 'ort-fp32' -> ('onnxruntime', 'fp32', {})."""
    name, _, rest = spec.partition(":")
    prefix, dash, precision = name.rpartition("-")
    runtime = RUNTIMES.get(prefix) if dash else "auto"
    if runtime is None or precision not in PRECISIONS[runtime]:
        raise ValueError(f"--systems {spec!r}: name a system fp32, bf16, int8 (the runtime the catalog's gates "
                         "choose), ort-fp32, ort-int8 "
                         "(ONNX Runtime), ov-fp32, ov-bf16 or ov-int8 (OpenVINO)")
    flags = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            flags[key] = int(value) if key in GATEWAY_FLAGS else SYSTEM_FLAGS[key][1](value)
        except (KeyError, ValueError):
            flags[key] = 0
        if flags[key] is not False and flags[key] < 1:
            raise ValueError(f"--systems {spec!r}: give instances=N, streams=N, threads=N, batch=N (max batch size), "
                             "pad=R (max pad ratio, at least 1), share=1|0 (instances share the cores) and/or of "
                             "the gateway slots=N (--max-triton-calls) and cpu=N (--cpu-slots)")
    return runtime, precision, flags


def system_name(spec: str) -> str:
    """The report's name of a --systems entry: "toneserve ov-int8 1x2x1" (1 instance of each heavy model,
    2 streams in it, 1 thread each); a bare precision keeps its bare name (the catalog chose the runtime)."""
    runtime, precision, flags = parse_system(spec)
    short = {full: short for short, full in RUNTIMES.items()}
    tuning = tuning_of(flags)
    name = "toneserve " + (f"{short[runtime]}-{precision}" if runtime != "auto" else precision)
    name += f" {tuning.instances}x{tuning.streams}x{tuning.intra_op_threads}" if set(flags) - set(GATEWAY_FLAGS) else ""
    return name + "".join(f" {key}{flags[key]:g}" for key in ("batch", "pad", "share", *GATEWAY_FLAGS) if key in flags)


def reference_system(systems: list[dict]) -> dict:
    """The system the baseline's fp32 weights are checked against: fp32 served by ONNX Runtime if one is
    run (ort-fp32), else the catalog's fp32, else OpenVINO's."""
    order = {"onnxruntime": 0, "auto": 1, "openvino": 2}
    fp32 = [system for system in systems if system.get("precision") == "fp32"]
    if not fp32:
        raise ValueError("--systems needs an fp32 system (ort-fp32): the baseline's parity check compares with it")
    return min(fp32, key=lambda system: order[system["runtime"]])


def tuning_of(flags: dict):
    """The measured defaults with a --systems entry's changes."""
    return DEFAULT_TUNING.changed(**{SYSTEM_FLAGS[key][0]: value for key, value in flags.items()
                                     if key not in GATEWAY_FLAGS})


def gateway_args_of(flags: dict) -> list[str]:
    """A --systems entry's gateway flags as `toneserve serve` arguments."""
    return [arg for key, flag in GATEWAY_FLAGS.items() if key in flags for arg in (flag, str(flags[key]))]


def measure(system: dict, users: int, args, out: Path, corpus_dir: Path | None = None, tag: str = "",
            others: tuple[int, ...] = ()) -> dict:
    """One Locust run against one system, with Triton's metrics (toneserve), CPU per part and the machine's
    state (machine.py: steal, clock, what else ran, `others` being the pids of the other servers of the run,
    idle while this one is measured). `corpus_dir`: another corpus than --corpus (the short clips), all of it."""
    cpu_before = process_cpu.snapshot(system["pid"], system["label"])
    machine_before = machine.times()
    metrics_before = triton_metrics.scrape(system["metrics"]) if system.get("metrics") else None
    filters = ({"durations": args.durations, "formats": args.formats, "rates": args.rates, "channels": args.channels}
               if corpus_dir is None else {})
    result = run(system["address"], corpus_dir or args.corpus, out, users, run_time=args.run_time, mix="analyze:1",
                 request_timeout=args.request_timeout, warmup=0,
                 name=f"{system['name']}-{tag + '-' if tag else ''}users-{users}", **filters)
    wall = result["wall_s"]
    ours = {os.getpid(), *machine.tree(os.getpid()), *(pid for other in others for pid in machine.tree(other))}
    record = {"system": system["name"], "users": users, "run": result,
              "cpu_cores": process_cpu.cores(cpu_before, process_cpu.snapshot(system["pid"], system["label"]), wall),
              "machine": {**machine.between(machine_before, machine.times(), ours), "mhz": machine.cpu()["mhz"]}}
    if metrics_before is not None:
        after = triton_metrics.scrape(system["metrics"])
        record["triton"] = triton_metrics.summarise(triton_metrics.delta(metrics_before, after))
    return record


def spread(values: list[float]) -> dict:
    """The median of repeated figures, and their range."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"median": median, "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def ratios(runs: list[dict], systems: list[str], users_levels: list[int], key: str = "rtfx") -> list[dict]:
    """Each system against the baseline per load, over the repetitions: the median and the range of the ratios
    of runs made in the same repetition (each repetition runs every system once, so a drift of the machine
    between repetitions moves both sides of a ratio alike); p95 likewise (its median)."""
    by = {}
    for r in runs:
        by.setdefault((r["system"], r["users"]), {})[r.get("rep", 0)] = r["run"]
    out = []
    for users in users_levels:
        base = by.get(("baseline", users), {})
        for name in systems:
            mine = by.get((name, users), {})
            reps = sorted(set(mine) & set(base))
            paired = [mine[rep][key] / base[rep][key] for rep in reps if base[rep][key]]
            p95 = [mine[rep]["p95"] / base[rep]["p95"] for rep in reps if base[rep]["p95"] and mine[rep]["p95"]]
            if not paired:
                continue
            out.append({"users": users, "system": name, "throughput": spread(paired)["median"],
                        "throughput_range": spread(paired),
                        "p95": spread(p95)["median"] if p95 else None, "reps": len(reps)})
    return out


def _f(value, digits=0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _cpu_line(cpu: dict | None) -> str:
    if not cpu:
        return "CPU: not recorded."
    return (f"CPU: {cpu['model']}, {cpu['cores']} cores, {cpu['mhz']} MHz at the start; features: "
            f"{', '.join(cpu['features']) or 'none of ' + ', '.join(machine.FLAGS)}.")


def report(bench: dict) -> str:
    a = bench["arguments"]
    lines = [f"Run {bench['started']} on {bench['machine']}; `{bench['command']}`.",
             f"Corpus {a['corpus']}: {bench['recordings']} recordings, {bench['audio_seconds']:.0f} s of audio "
             f"(lengths {bench['lengths']} s; {bench['formats']}; 8 and 16 kHz; two speakers on two channels), "
             f"sent round-robin as `Analyze` by closed-loop Locust users for {a['run_time']:g} s per run"
             + (", one server at a time (--one-at-a-time). " if bench.get("one_at_a_time") else ". ") +
             f"Baseline: {a['baseline_workers']} worker(s) x {a['baseline_threads']} torch thread(s). Parity "
             f"baseline vs {bench.get('parity_against', bench['systems'][0])}: same utterances {bench['parity']['same_utterances']}, emotion "
             f"max |diff| {bench['parity']['max_emotion_diff']:.1e}, transcripts match "
             f"{bench['parity']['transcripts_match']}.", "",
             _cpu_line(bench.get("cpu")), "",
             "| system | users | repetition | requests | failures | req/s | RTFx | p50 ms | p95 ms | p99 ms "
             "| steal | MHz | what else ran (cores) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in bench["runs"]:
        x, m = r["run"], r.get("machine", {})
        others = ", ".join(f"{o['name']} {o['cores']:.2f}" for o in m.get("others", [])) or "nothing"
        lines.append(f"| {r['system']} | {r['users']} | {r.get('rep', 0) + 1} | {x['requests']} "
                     f"| {x['failures'] + x['lost']} | {x['rps']:.3f} | {x['rtfx']:.2f} | {_f(x['p50'])} "
                     f"| {_f(x['p95'])} | {_f(x['p99'])} | {_pct(m.get('steal'))} | {_f(m.get('mhz'))} | {others} |")
    lines += ["", "| users | system | throughput vs baseline: median (range, repetitions) | p95 vs baseline (median) |",
              "|---:|---|---:|---:|"]
    for ratio in bench["ratios"]:
        spread_ = ratio["throughput_range"]
        lines.append(f"| {ratio['users']} | {ratio['system']} | {ratio['throughput']:.2f}x "
                     f"({spread_['min']:.2f}–{spread_['max']:.2f}, {ratio['reps']}) | {_f(ratio['p95'], 2)}x |")
    lines += ["", "| system | streams | compute-bound RTFx (cores used) | best RTFx served (users, cores used) "
              "| serving overhead |", "|---|---:|---:|---:|---:|"]
    for o in bench["overhead"]:
        lines.append(f"| {o['system']} | {o['streams']} | {o['bound_rtfx']:.2f} ({o['bound_cores']:.2f}) | "
                     f"{o['best_rtfx']:.2f} ({o['best_users']}, {o['best_cores']:.2f}) | {o['overhead']:.0%} |")
    if bench.get("short"):
        short = bench["short"]
        lines += ["", f"Short clips: {short['corpus']}, {short['recordings']} recordings, {short['audio_seconds']:.0f} s "
                  "of audio, the same users and run time:", "",
                  "| system | users | requests | failures | RTFx | p50 ms | p95 ms | short RTFx / call RTFx "
                  "| short RTFx vs baseline |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ratios = {(r["system"], r["users"]): r for r in short.get("ratios", [])}
        for r in short["runs"]:
            x, ratio = r["run"], ratios.get((r["system"], r["users"]), {})
            vs_long, vs_base = ratio.get("vs_long"), ratio.get("vs_baseline")
            lines.append(f"| {r['system']} | {r['users']} | {x['requests']} | {x['failures'] + x['lost']} "
                         f"| {x['rtfx']:.2f} | {_f(x['p50'])} | {_f(x['p95'])} "
                         f"| {'–' if vs_long is None else f'{vs_long:.0%}'} "
                         f"| {'–' if vs_base is None else f'{vs_base:.2f}x'} |")
    if bench.get("live"):
        lines += ["", "Live lag: the shortest calls streamed at real time through AnalyzeStream (20 ms chunks, one call "
                  "at a time, nothing else running); a segment's lag is its arrival minus the moment its end "
                  "(the segment's end in audio time) was sent (live_lag.py):", "",
                  "| system | calls | segments | p50 s | p95 s | max s |", "|---|---:|---:|---:|---:|---:|"]
        for name, live in bench["live"].items():
            lines.append(f"| {name} | {len(live['calls'])} | {live['segments']} | {_f(live['p50_s'], 2)} "
                         f"| {_f(live['p95_s'], 2)} | {_f(live['max_s'], 2)} |")
    lines += ["", "Where the time goes (CPU cores used per part, of "
              f"{os.cpu_count()}; Triton's queue and compute per request of the composing models):", ""]
    for r in bench["runs"]:
        parts = ", ".join(f"{p} {c:.2f}" for p, c in sorted(r["cpu_cores"].items(), key=lambda kv: -kv[1]) if c >= 0.01)
        lines += [f"- {r['system']}, {r['users']} users: {parts} (total {sum(r['cpu_cores'].values()):.2f})"]
    for r in bench["runs"]:
        if "triton" in r:
            lines += ["", f"{r['system']}, {r['users']} users:", "",
                      triton_metrics.markdown(r["triton"], [m for m in r["triton"] if m not in ("emotion", "asr")])]
    return "\n".join(lines) + "\n"


def run_benchmark(args) -> dict:
    if not any(parse_system(spec)[1] == "fp32" for spec in args.systems):
        raise ValueError("--systems needs an fp32 system (ort-fp32): the baseline's parity check compares with it")
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    models_dir = Path(args.models_dir or paths.models_dir(args.size))
    entries = corpus.select(corpus.load(args.corpus), args.durations, args.formats, args.rates, args.channels)
    repositories = {}
    kinds = {}
    for spec in args.systems:
        runtime, precision, flags = parse_system(spec)
        name = system_name(spec)
        kinds[name] = {"runtime": runtime, "precision": precision, "gateway_args": gateway_args_of(flags)}
        say(f"rendering the cpu repository of {name} from {models_dir}", "benchmark")
        folder = out / ("repository-" + name.removeprefix("toneserve ").replace(" ", "-"))
        repositories[name] = render_repository(describe(models_dir, precision, tuning_of(flags), runtime=runtime),
                                               "cpu", folder)
    short_entries = corpus.load(args.short_corpus) if args.short_corpus else []
    bench: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M %z"),
             "command": " ".join(["python -m toneserve.loadtest.benchmark", *sys.argv[1:]]),
             "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
             "cpu": machine.cpu(),
             "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
             "recordings": len(entries), "audio_seconds": sum(e.seconds for e in entries),
             "lengths": sorted({e.seconds for e in entries}), "formats": sorted({e.format for e in entries}),
             "systems": list(repositories), "runs": []}
    if short_entries:
        bench["short"] = {"corpus": str(args.short_corpus), "recordings": len(short_entries),
                          "audio_seconds": sum(e.seconds for e in short_entries), "runs": []}
    bench["live"] = {}
    live_files = [Path(args.corpus) / e.file for e in sorted(entries, key=lambda e: (e.seconds, e.file))]

    def start_system(stack: ExitStack, name: str) -> dict:
        say(f"starting {name}", "benchmark")
        repository = repositories[name]
        address, metrics, pid = stack.enter_context(toneserve(repository, out / "logs" / f"serve-{repository.name}.log",
                                                              kinds[name]["gateway_args"]))
        return {"name": name, "address": address, "metrics": metrics, "pid": pid, "label": "gateway", **kinds[name]}

    def start_baseline(stack: ExitStack, reference: dict) -> dict:
        # The baseline runs the fp32 weights: its parity check is against an fp32 system (int8 differs by design).
        say(f"starting the baseline (FunASR AutoModel) and checking parity with {reference['name']}", "benchmark")
        address, pid, parity = stack.enter_context(baseline(models_dir, args.baseline_workers, args.baseline_threads,
                                                            reference["address"], out / "logs" / "baseline.log"))
        bench["parity"], bench["parity_against"] = parity, reference["name"]
        return {"name": "baseline", "address": address, "pid": pid, "label": "baseline"}

    def run_all(systems: list[dict]) -> None:
        """Warm-up, then every phase of every system: per number of users the call corpus, then the short
        clips, then (toneserve only: the baseline has no AnalyzeStream) the live lag, one call at a time."""
        for system in systems:
            say(f"warming up {system['name']}", "benchmark")
            bench.setdefault("models", {})[system["name"]] = warm_up(system["address"], Path(args.corpus), entries, 2,
                                                                     args.request_timeout)
        pids = tuple(system["pid"] for system in systems)
        # Repetition by repetition, each system once per load in turn (A, B, A, B, ...).
        for rep in range(args.repeat):
            for users in args.users:
                for system in systems:
                    say(f"{system['name']}: {users} users for {args.run_time:g} s (repetition {rep + 1} of "
                        f"{args.repeat})", "benchmark")
                    record = measure(system, users, args, out / "runs", tag=f"rep{rep}", others=pids)
                    bench["runs"].append({**record, "rep": rep})
                    x = record["run"]
                    say(f"  {x['requests']} requests, {x['failures']} failed, {x['lost']} lost, RTFx "
                        f"{x['rtfx']:.2f}, p95 {_f(x['p95'])} ms, steal {_f(record['machine']['steal'], 3)}",
                        "benchmark")
            for users in args.users if short_entries else []:  # the same systems and loads on 1-3 s clips
                for system in systems:
                    say(f"{system['name']}: {users} users on short clips for {args.run_time:g} s (repetition "
                        f"{rep + 1})", "benchmark")
                    record = measure(system, users, args, out / "runs", corpus_dir=args.short_corpus,
                                     tag=f"short-rep{rep}", others=pids)
                    bench["short"]["runs"].append({**record, "rep": rep})
                    say(f"  RTFx {record['run']['rtfx']:.2f}, p95 {_f(record['run']['p95'])} ms", "benchmark")
        for system in systems if args.live_calls else []:
            if system["label"] == "baseline":
                continue
            say(f"{system['name']}: live lag of {args.live_calls} call(s) streamed at real time", "benchmark")
            bench["live"][system["name"]] = live_lag.measure_calls(system["address"], live_files[:args.live_calls])
            say(f"  {live_lag.describe(bench['live'][system['name']])}", "benchmark")

    reference = reference_system([{"name": name, **kinds[name]} for name in repositories])
    if args.one_at_a_time:
        # One server at a time (the baseline beside the parity reference only, while it is checked and
        # measured): OpenVINO's base models take ~8 GB per server, and several at once beside the baseline's
        # ~5 GB ran a 24 GB machine out of memory. The cost: a drift of the machine lands on one system.
        bench["one_at_a_time"] = True
        for name in sorted(repositories, key=lambda n: n != reference["name"]):
            with ExitStack() as stack:
                system = start_system(stack, name)
                if name == reference["name"]:
                    with ExitStack() as baseline_stack:
                        run_all([start_baseline(baseline_stack, system)])
                run_all([system])
    else:
        with ExitStack() as stack:
            systems = [start_system(stack, name) for name in repositories]
            systems.append(start_baseline(stack, next(s for s in systems if s["name"] == reference["name"])))
            run_all(systems)
    bench["compute_bound"] = {}
    for name, repository in repositories.items():
        say(f"compute bound of {name}", "benchmark")
        bench["compute_bound"][name] = compute_bound.measure(repository, Path(args.corpus), args.durations,
                                                             args.formats, args.rates, args.channels)
    bench["ratios"] = ratios(bench["runs"], list(repositories), args.users)
    median_rtfx = {(name, users): spread([r["run"]["rtfx"] for r in bench["runs"]
                                          if (r["system"], r["users"]) == (name, users)])["median"]
                   for users in args.users for name in [*repositories, "baseline"]}
    if "short" in bench:
        short_rtfx = {(name, users): spread([r["run"]["rtfx"] for r in bench["short"]["runs"]
                                             if (r["system"], r["users"]) == (name, users)])
                      for users in args.users for name in [*repositories, "baseline"]}
        short_ratios = {(r["system"], r["users"]): r for r in ratios(bench["short"]["runs"], list(repositories),
                                                                      args.users)}
        bench["short"]["ratios"] = [
            {"users": users, "system": name, "rtfx": short_rtfx[(name, users)]["median"],
             "vs_long": (short_rtfx[(name, users)]["median"] / median_rtfx[(name, users)]
                         if median_rtfx[(name, users)] else None),
             "vs_baseline": short_ratios[(name, users)]["throughput"] if (name, users) in short_ratios else None,
             "vs_baseline_range": (short_ratios[(name, users)]["throughput_range"]
                                   if (name, users) in short_ratios else None)}
            for users in args.users for name in [*repositories, "baseline"]]
    bench["overhead"] = []
    for name, bound in bench["compute_bound"].items():
        # The median repetition of the best load.
        best_users = max(args.users, key=lambda users: median_rtfx[(name, users)])
        best = sorted((r for r in bench["runs"] if (r["system"], r["users"]) == (name, best_users)),
                      key=lambda r: r["run"]["rtfx"])[(args.repeat - 1) // 2]
        bench["overhead"].append({"system": name, "streams": bound["streams"], "bound_rtfx": bound["rtfx"],
                                  "bound_cores": bound["cpu_cores"], "best_rtfx": best["run"]["rtfx"],
                                  "best_users": best["users"], "best_cores": sum(best["cpu_cores"].values()),
                                  "overhead": 1 - best["run"]["rtfx"] / bound["rtfx"]})
    (out / "benchmark.json").write_text(json.dumps(bench, indent=1))
    (out / "benchmark.md").write_text(report(bench))
    return bench


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="base", choices=["tiny", "base"], help="which export (default base)")
    p.add_argument("--models-dir", type=Path, help="exported models (default $TONESERVE_HOME/models/SIZE)")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--durations", type=float, nargs="*", default=[])
    p.add_argument("--formats", nargs="*", default=[])
    p.add_argument("--rates", type=int, nargs="*", default=[])
    p.add_argument("--channels", type=int, nargs="*", default=[])
    p.add_argument("--users", type=int, nargs="+", default=[1, 2, 4], help="load levels (default 1 2 4)")
    p.add_argument("--run-time", type=float, default=180.0, help="seconds per run (default 180)")
    p.add_argument("--systems", nargs="+", default=["fp32", "int8"],
                   help="toneserve variants: [ort-|ov-]PRECISION[:instances=N,streams=N,threads=N,batch=N,pad=R,share=1|0,"
                        "slots=N,cpu=N]: fp32, bf16 or int8 (the catalog's runtime per model, by the export's gates: bf16 is what "
                        "`serve` serves on a CPU with native bf16), ort-fp32, ort-int8, ov-fp32, ov-bf16, "
                        "ov-int8; slots and cpu set the gateway's --max-triton-calls and --cpu-slots (default fp32 int8)")
    p.add_argument("--short-corpus", type=Path,
                   help="a short-clip corpus (corpus.py --short): the same runs on it, and its RTFx against the calls'")
    p.add_argument("--live-calls", type=int, default=2,
                   help="after the runs, stream this many of the shortest calls at real time through each system "
                        "alone and report each segment's lag behind its utterance's end (default 2; 0: off)")
    p.add_argument("--repeat", type=int, default=3,
                   help="repetitions of every run, each system once per load in turn in each (A, B, A, B: with "
                        "--one-at-a-time, one system's repetitions in a row); the ratios are the median and "
                        "range over them (default 3)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="start one server at a time (the baseline beside the fp32 reference only) instead of all "
                        "side by side, interleaved: for machines where they do not all fit in memory")
    p.add_argument("--baseline-workers", type=int, default=os.cpu_count(), help="baseline workers (default: cores)")
    p.add_argument("--baseline-threads", type=int, default=1, help="baseline torch threads (default 1)")
    p.add_argument("--request-timeout", type=float, default=900.0)
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run_benchmark(args)
    except (FileNotFoundError, ValueError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(args.out) / "benchmark.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
