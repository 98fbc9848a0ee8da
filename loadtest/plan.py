"""`toneserve plan`: how many concurrent calls one host serves within a latency SLO, and how
many hosts a target load needs, measured against a running `toneserve serve`.

    toneserve plan --gateway 127.0.0.1:50051 --triton-metrics 127.0.0.1:8002 \
        --slo-p95-ms 30000 --users 1 2 4 8 --step-seconds 120 --target-streams 10000 \
        [--corpus DIR] [--mix analyze:1] [--pid SERVE_PID] [--out toneserve-plan]

The sweep raises concurrency step by step: each step is a headless Locust run (run.py) of
`--users` closed-loop users for `--step-seconds`, with Triton's metrics (triton_metrics.py)
and, given `--pid`, the CPU of every part of the server (process_cpu.py) read before and
after. A step meets the SLO when every request was answered without error and the p95
latency is at most `--slo-p95-ms`; the sweep stops at the first step that misses it (in a
closed loop, more users past saturation only add queueing) unless `--keep-going`.

What a "stream" is: one call at real-time pace, 1 s of audio (all its channels) per second.
A replica that answers RTFx seconds of audio per wall second keeps up with RTFx such calls, so
the streams per replica are the RTFx of the highest step that met the SLO.

A host runs as many replicas as both its cores and its memory allow (`--host-cores`,
`--host-memory-gib`; default this machine): a replica takes the cores of the machine it was
measured on, and the peak resident memory of its whole process tree (read each step, given
`--pid`) plus `--memory-headroom`. The streams per host are replicas x streams per replica, the
plan says which of the two limits it, and the hosts for `--target-streams` calls are target /
streams per host, rounded up. The figures hold for the corpus's call lengths and mix, and for the
models, precision and flags the server ran with.

Writes plan.md (tables and the decision), plan.png (p95 and throughput against users),
plan.json (every figure), each step's Locust CSV / HTML / ledger under steps/, and the per-replica
autoscaling targets of the chosen step (kube/autoscaling.py) to autoscaling-targets.env, the file
the Kubernetes overlays take: Triton's queue-to-compute ratio at that load, and its users as the
gateway's requests in flight.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from toneserve.console import say
from toneserve.kube import autoscaling
from toneserve.kube.triton import CPU_MEMORY_HEADROOM
from toneserve.loadtest import corpus as corpus_module
from toneserve.loadtest import process_cpu, triton_metrics
from toneserve.loadtest.run import RunError, run, warm_up
from toneserve.loadtest.traffic import parse_mix
from toneserve.loadtest.triton_metrics import MetricsUnavailable

DEFAULT_USERS = (1, 2, 4, 8)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `toneserve plan` options (also used by `python -m toneserve.loadtest.plan`)."""
    p.add_argument("--gateway", default="127.0.0.1:50051", help="gateway gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--triton-metrics", default="127.0.0.1:8002",
                   help="Triton's metrics address, `toneserve serve --triton-metrics-port` (default 127.0.0.1:8002)")
    p.add_argument("--slo-p95-ms", type=float, required=True, help="p95 latency every chosen load must meet (ms)")
    p.add_argument("--users", type=int, nargs="+", default=list(DEFAULT_USERS),
                   help="concurrency of each step: closed-loop users (default 1 2 4 8)")
    p.add_argument("--step-seconds", type=float, default=120.0,
                   help="load per step; several times the longest request's latency (default 120)")
    p.add_argument("--target-streams", type=int, default=10000,
                   help="concurrent real-time calls to plan hosts for (default 10000)")
    p.add_argument("--corpus", type=Path,
                   help="corpus folder (default: OUT/corpus, generated: 8 calls of 15-60 s, 4 formats, 8/16 kHz)")
    p.add_argument("--mix", default="analyze:1", help="users and weights: analyze, upload (default analyze:1)")
    p.add_argument("--durations", type=float, nargs="*", default=[], help="only calls of these lengths (s)")
    p.add_argument("--formats", nargs="*", default=[], help="only these formats")
    p.add_argument("--rates", type=int, nargs="*", default=[], help="only these sample rates")
    p.add_argument("--channels", type=int, nargs="*", default=[], help="only these channel counts")
    p.add_argument("--request-timeout", type=float, default=600.0, help="deadline of each request in s (default 600)")
    p.add_argument("--warmup", type=int, default=2,
                   help="unmeasured requests before the sweep, at least 1: it also reads the served models (default 2)")
    p.add_argument("--pid", type=int, help="pid of `toneserve serve`: also split CPU by gateway / Triton / model")
    p.add_argument("--host-cores", type=int,
                   help="cores of the hosts to plan for; a replica takes as many as this machine has "
                        "(default: this machine's)")
    p.add_argument("--host-memory-gib", type=float, help="memory of the hosts to plan for, GiB (default: this "
                                                         "machine's)")
    p.add_argument("--memory-headroom", type=float, default=CPU_MEMORY_HEADROOM,
                   help="memory kept above a replica's measured peak, as a fraction (default "
                        f"{CPU_MEMORY_HEADROOM:g}, as the Kubernetes cpu overlay's limit)")
    p.add_argument("--keep-going", action="store_true", help="run every step even after one misses the SLO")
    p.add_argument("--out", type=Path, default=Path("toneserve-plan"), help="report folder (default ./toneserve-plan)")
    p.add_argument("--autoscaling-targets", type=Path,
                   help=f"where to write the per-replica autoscaling targets, e.g. an overlay's "
                        f"{autoscaling.TARGETS_FILE} (default OUT/{autoscaling.TARGETS_FILE})")


def machine_memory_mib() -> float:
    """This machine's memory (MemTotal), MiB; 0 where /proc/meminfo cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def meets(step: dict, slo_ms: float) -> bool:
    run = step["run"]
    return (run["consistent"] and run["failures"] == 0 and run["requests"] > 0
            and run["p95"] is not None and run["p95"] <= slo_ms)


def step(args, corpus: Path, users: int, steps_dir: Path) -> dict:
    """One load level: Locust run plus Triton metrics and CPU before/after."""
    metrics_before = triton_metrics.scrape(args.triton_metrics)
    cpu_before = process_cpu.snapshot(args.pid) if args.pid else None
    result = run(args.gateway, corpus, steps_dir, users, run_time=args.step_seconds, mix=args.mix,
                 durations=args.durations, formats=args.formats, rates=args.rates, channels=args.channels,
                 request_timeout=args.request_timeout, name=f"users-{users}", warmup=0)
    metrics_after = triton_metrics.scrape(args.triton_metrics)
    wall = result["wall_s"]
    counters = triton_metrics.delta(metrics_before, metrics_after)
    record = {"users": users, "run": result, "triton": triton_metrics.summarise(counters),
              "queue_compute_ratio": autoscaling.queue_compute_ratio(counters)}
    if args.pid:
        record["cpu_cores"] = process_cpu.cores(cpu_before, process_cpu.snapshot(args.pid), wall)
        record["rss_mb"] = process_cpu.rss_mb(args.pid, "gateway")
    return record


def replicas_per_host(host: dict, replica_rss_mb: float | None) -> tuple[int, str]:
    """How many replicas a host holds, and what limits it ("cpu" or "memory"). host: cores, memory_mib,
    replica_cores (the cores of the machine the replica was measured on), headroom."""
    by_cpu = host["cores"] // max(1, host["replica_cores"])
    if not replica_rss_mb:
        return by_cpu, "cpu"
    by_memory = int(host["memory_mib"] // (replica_rss_mb * (1 + host["headroom"])))
    return (by_memory, "memory") if by_memory < by_cpu else (by_cpu, "cpu")


def decide(steps: list[dict], slo_ms: float, target: int, host: dict | None = None) -> dict:
    """The highest step within the SLO, and what it means per host. host: see `replicas_per_host`; None:
    a host is one replica (the machine measured)."""
    ok = [s for s in steps if s["meets_slo"]]
    if not ok:
        return {"users": None, "streams_per_host": None, "hosts": None}
    best = max(ok, key=lambda s: s["users"])
    per_replica = best["run"]["gateway_rtfx"] or best["run"]["rtfx"]
    # Memory does not give back what a step took: the replica's peak over every step run.
    peaks = [sum(s["rss_mb"].values()) for s in steps if s.get("rss_mb")]
    replica_rss = round(max(peaks), 1) if peaks else None
    replicas, limit = replicas_per_host(host, replica_rss) if host else (1, "cpu")
    streams = per_replica * replicas
    return {"users": best["users"], "p95_ms": best["run"]["p95"], "streams_per_replica": per_replica,
            "replica_rss_mb": replica_rss, "replicas_per_host": replicas, "limited_by": limit,
            "streams_per_host": streams, "hosts": math.ceil(target / streams) if streams > 0 else None,
            "queue_compute_ratio": best.get("queue_compute_ratio")}


def write_targets(decision: dict, path: Path) -> bool:
    """The chosen step's per-replica autoscaling targets to `path`; False when there is none to write
    (no step met the SLO, or Triton computed nothing during it)."""
    if decision["users"] is None or decision["queue_compute_ratio"] is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(autoscaling.targets_env(decision["queue_compute_ratio"], decision["users"]))
    return True


def plot(steps: list[dict], slo_ms: float, chosen: int | None, path: Path) -> None:
    # Imported here: matplotlib takes a second to load, and its backend must be chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [s["users"] for s in steps]
    fig, left = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, style, color in (("p50", "o:", "tab:blue"), ("p95", "o-", "tab:orange"), ("p99", "o--", "tab:purple")):
        left.plot(users, [(s["run"][key] or 0) / 1000 for s in steps], style, color=color, label=f"{key} latency")
    left.axhline(slo_ms / 1000, color="red", linewidth=1, label=f"SLO p95 {slo_ms / 1000:g} s")
    left.set_xlabel("concurrent users (closed loop)")
    left.set_ylabel("latency (s)")
    left.set_ylim(bottom=0)
    left.set_xscale("log", base=2)
    left.set_xticks(users, [str(u) for u in users])
    right = left.twinx()
    right.plot(users, [s["run"]["gateway_rtfx"] or s["run"]["rtfx"] for s in steps], "s-", color="green",
               label="throughput (RTFx)")
    right.set_ylabel("audio seconds per second (RTFx)")
    right.set_ylim(bottom=0)
    if chosen is not None:
        left.axvline(chosen, color="grey", linestyle=":", label=f"chosen: {chosen} users")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, fontsize=8, loc="upper left")
    left.set_title("toneserve capacity: latency and throughput against load")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _models_line(models: list[dict]) -> str:
    return "; ".join(f"{m['name']}: {m['family']} {m['preset']} {m['precision']} ({m['weights_origin']} weights)"
                     for m in models) or "unknown (no warm-up response)"


def report(plan: dict) -> str:
    a, d = plan["arguments"], plan["decision"]
    lines = ["# toneserve capacity plan", "",
             f"Measured {plan['started']} on {plan['machine']} against the gateway at {a['gateway']} "
             f"(Triton metrics {a['triton_metrics']}). Served models: {_models_line(plan['models'])}.",
             f"Traffic: corpus {a['corpus']} ({plan['entries']} recordings, mix {a['mix']}), closed-loop users, "
             f"{a['step_seconds']:g} s per step. SLO: p95 ≤ {a['slo_p95_ms']:g} ms, no errors, nothing lost.", "",
             "| users | requests | failures | lost | req/s | RTFx | p50 ms | p95 ms | p99 ms | meets SLO |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in plan["steps"]:
        r = s["run"]
        rtfx = r["gateway_rtfx"] or r["rtfx"]
        lines.append(f"| {s['users']} | {r['requests']} | {r['failures']} | {r['lost']} | {r['rps']:.2f} | {rtfx:.1f} "
                     f"| {r['p50'] or 0:.0f} | {r['p95'] or 0:.0f} | {r['p99'] or 0:.0f} | "
                     f"{'yes' if s['meets_slo'] else 'no'} |")
    lines += ["", "## Decision", ""]
    if d["users"] is None:
        lines.append(f"No step met the SLO (p95 ≤ {a['slo_p95_ms']:g} ms with no errors): one host of this profile "
                     "cannot serve these recordings that fast. Relax the SLO, use shorter recordings or a faster "
                     "profile (int8 on CPU, or the gpu profile).")
    else:
        host = plan.get("host", {})
        memory = (f"{d['replica_rss_mb']:.0f} MB at its peak (+{100 * host.get('headroom', 0):.0f} % headroom)"
                  if d.get("replica_rss_mb") else "not measured (no --pid): memory not counted")
        lines += [f"- Highest load within the SLO: **{d['users']} concurrent users**, p95 {d['p95_ms']:.0f} ms.",
                  f"- Streams per replica: **{d['streams_per_replica']:.1f}**. A stream is one call at real-time "
                  "pace (1 s of audio, all channels, per second); the replica answers "
                  f"{d['streams_per_replica']:.1f} s of audio per second at that load.",
                  f"- One replica takes {host.get('replica_cores')} cores and {memory}. A host of "
                  f"{host.get('cores')} cores and {host.get('memory_mib', 0) / 1024:.1f} GiB holds "
                  f"**{d['replicas_per_host']}** (limited by {d['limited_by']}): "
                  f"**{d['streams_per_host']:.1f} streams per host**.",
                  (f"- Hosts for {a['target_streams']} concurrent calls: **{d['hosts']}** "
                   f"(⌈{a['target_streams']} / {d['streams_per_host']:.1f}⌉), with no spare capacity: add hosts "
                   "for failures and peaks." if d["hosts"] else
                   "- A host of this size cannot hold one replica: plan for larger hosts (--host-cores, "
                   "--host-memory-gib)."),
                  "- Valid for this corpus's call lengths and mix, these models and precision, and this server's "
                  "flags; latency is per whole recording (post-call analysis)."]
        if d.get("queue_compute_ratio") is not None:
            lines.append(f"- Autoscaling targets per replica: Triton's queue-to-compute ratio "
                         f"**{d['queue_compute_ratio']:.3f}**, **{d['users']}** requests in flight per gateway "
                         f"(written to {autoscaling.TARGETS_FILE}; docs/kubernetes.md, \"Autoscaling\").")
    lines += ["", "## Where the time goes", ""]
    for s in plan["steps"]:
        lines += [f"### {s['users']} users", "",
                  "Triton, per composing model (queue vs compute per request, from its metrics):", "",
                  triton_metrics.markdown(s["triton"], [m for m in s["triton"] if m not in ("emotion", "asr")]), ""]
        if "cpu_cores" in s:
            parts = ", ".join(f"{part} {cores:.2f}" for part, cores in sorted(s["cpu_cores"].items(),
                                                                              key=lambda kv: -kv[1]) if cores >= 0.01)
            lines += [f"CPU cores used (of {os.cpu_count()}): {parts}.", ""]
    lines += ["![latency and throughput against users](plan.png)", ""]
    return "\n".join(lines)


def run_plan(args) -> int:
    """`toneserve plan`: 0 when some step met the SLO, 1 when none did, 2 when the plan could not run."""
    try:
        return sweep(args)
    except (ValueError, FileNotFoundError, RunError, MetricsUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def sweep(args) -> int:
    """Run the sweep and write the report."""
    if min(args.users) < 1 or args.step_seconds <= 0 or args.slo_p95_ms <= 0:
        raise ValueError("--users must be >= 1, --step-seconds and --slo-p95-ms > 0")
    if parse_mix(args.mix).get("triton"):
        raise ValueError("plan measures the gateway: --mix takes analyze and upload only")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or out / "corpus"
    if args.corpus is None and not (corpus / corpus_module.MANIFEST).is_file():
        say(f"no --corpus: generating one in {corpus}", "plan")
        corpus_module.generate(corpus, 8, durations=(15.0, 30.0, 60.0), weights=[2, 1, 1])
    entries = corpus_module.select(corpus_module.load(corpus), args.durations, args.formats, args.rates, args.channels)
    triton_metrics.scrape(args.triton_metrics)  # fail now, not after the first step
    models = warm_up(args.gateway, corpus, entries, max(args.warmup, 1), args.request_timeout)
    host_cores = args.host_cores or os.cpu_count() or 1
    host_memory_mib = args.host_memory_gib * 1024 if args.host_memory_gib is not None else machine_memory_mib()
    if host_cores < 1 or host_memory_mib <= 0 or args.memory_headroom < 0:
        raise ValueError("--host-cores must be >= 1, --host-memory-gib > 0 (give it where /proc/meminfo cannot be "
                         "read) and --memory-headroom >= 0")
    plan = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "host": {"cores": host_cores, "memory_mib": round(host_memory_mib),
                     "replica_cores": os.cpu_count() or 1, "headroom": args.memory_headroom},
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
            "models": models, "entries": len(entries), "steps": []}
    plan["arguments"]["corpus"] = str(corpus)
    for users in sorted(set(args.users)):
        say(f"step: {users} users for {args.step_seconds:g} s", "plan")
        record = step(args, corpus, users, out / "steps")
        record["meets_slo"] = meets(record, args.slo_p95_ms)
        plan["steps"].append(record)
        r = record["run"]
        say(f"  {r['requests']} requests, {r['failures']} failed, {r['lost']} lost, p95 {r['p95'] or 0:.0f} ms, "
            f"RTFx {r['gateway_rtfx'] or r['rtfx']:.1f}: {'meets' if record['meets_slo'] else 'misses'} the SLO",
            "plan")
        if not record["meets_slo"] and not args.keep_going:
            break
    plan["decision"] = decide(plan["steps"], args.slo_p95_ms, args.target_streams, plan["host"])
    plot(plan["steps"], args.slo_p95_ms, plan["decision"]["users"], out / "plan.png")
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    (out / "plan.md").write_text(report(plan))
    d = plan["decision"]
    targets = args.autoscaling_targets or out / autoscaling.TARGETS_FILE
    if write_targets(d, targets):
        say(f"autoscaling targets per replica in {targets}", "plan")
    if d["users"] is None:
        say(f"no step met p95 <= {args.slo_p95_ms:g} ms; report in {out / 'plan.md'}", "plan")
        return 1
    say(f"{d['streams_per_host']:.1f} streams per host ({d['replicas_per_host']} replica(s), limited by "
        f"{d['limited_by']}) at {d['users']} users (p95 {d['p95_ms']:.0f} ms); "
        f"{d['hosts']} hosts for {args.target_streams} streams; report in {out / 'plan.md'}", "plan")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.plan", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_plan(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
