"""One headless Locust run against toneserve (or anything serving toneserve.v1), parsed.

    python -m toneserve.loadtest.run --host 127.0.0.1:50051 --corpus DIR --users 4 \
        [--spawn-rate 4] [--run-time 60] [--mix analyze:3,upload:1] [--durations 15 30] \
        [--formats wav flac] [--rates 8000] [--channels 2] [--triton-host 127.0.0.1:8001] \
        [--out DIR] [--name run] [--warmup 1]

Runs `locust -f loadtest/locustfile.py --headless` as a subprocess and writes, under `--out`:
NAME_stats.csv (+ _failures, _exceptions, _stats_history), NAME.html (Locust's report),
NAME_ledger.json (every request: sent, answered, latency, audio seconds), NAME_locust.log and
NAME.json (the parsed result, printed as well). Before Locust starts, `--warmup` requests go
out one at a time and are not measured: the first requests of a fresh server pay one-off
costs (lazy model loads, first-call allocations) that a steady load never sees.

The result: requests and failures as Locust counted them; requests sent, answered and lost as
the users booked them (the two must agree); exact p50 / p95 / p99 latency; and requests per
second and RTFx (audio seconds answered per wall second) over the steady window (ledger.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc

from toneserve.loadtest import corpus as corpus_module
from toneserve.loadtest.ledger import summarise
from toneserve.loadtest.traffic import user_classes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
GATEWAY_NAMES = ("Analyze", "AnalyzeUpload")


class RunError(RuntimeError):
    """Locust could not run (bad arguments, no server); the message quotes its log."""


def read_stats_csv(path: Path) -> dict[str, dict]:
    """Locust's NAME_stats.csv as {name: {requests, failures, median_ms, p95_ms, p99_ms, rps}}
    ("Aggregated" holds the totals)."""
    out = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            out[row["Name"]] = {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                                "median_ms": float(row["Median Response Time"]), "p95_ms": float(row["95%"]),
                                "p99_ms": float(row["99%"]), "rps": float(row["Requests/s"])}
    if "Aggregated" not in out:
        raise RunError(f"{path} has no Aggregated row: Locust stopped before it wrote its statistics")
    return out


def _joined(values) -> str:
    return ",".join(str(v) for v in values)


def warm_up(host: str, folder: Path, entries: list, count: int, timeout: float) -> list[dict]:
    """`count` Analyze requests, one at a time, shortest recordings first; any failure is fatal.
    Returns the served models as the last answer's metadata names them."""
    if count < 1:
        raise ValueError("warm-up needs at least one request")
    ordered = sorted(entries, key=lambda e: e.seconds)
    with grpc.insecure_channel(host, options=[("grpc.max_send_message_length", 80 * 2**20)]) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        for index in range(count):
            entry = ordered[index % len(ordered)]
            roles = {0: "agent", 1: "customer"} if entry.channels == 2 else {}
            try:
                reply = stub.Analyze(pb.AnalyzeRequest(audio=(folder / entry.file).read_bytes(), channel_roles=roles),
                                     timeout=timeout)
            except grpc.RpcError as exc:
                raise RunError(f"warm-up request to {host} failed: {exc.code().name}: {exc.details()}") from None
    return [{"name": m.name, "family": m.family, "preset": m.preset, "precision": m.precision,
             "weights_origin": m.weights_origin} for m in reply.metadata.models]


def run(host: str, corpus: Path, out: Path, users: int, spawn_rate: float | None = None, run_time: float = 60.0,
        mix: str = "analyze:1", durations=(), formats=(), rates=(), channels=(), triton_host: str | None = None,
        request_timeout: float = 600.0, upload_chunk_kib: int = 256, name: str = "run", warmup: int = 1,
        progress: bool = True) -> dict:
    """Run Locust headless once; return the parsed result (also written to OUT/NAME.json)."""
    if users < 1 or run_time <= 0:
        raise ValueError("--users must be >= 1 and --run-time > 0")
    classes = user_classes(mix)
    corpus = Path(corpus)
    entries = corpus_module.select(corpus_module.load(corpus), durations, formats, rates, channels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / name
    files = {"csv": f"{prefix}_stats.csv", "html": f"{prefix}.html", "ledger": f"{prefix}_ledger.json",
             "log": f"{prefix}_locust.log", "result": f"{prefix}.json"}
    for path in files.values():
        Path(path).unlink(missing_ok=True)
    models = []
    if warmup and ("AnalyzeUser" in classes or "UploadUser" in classes):
        if progress:
            print(f"[run] {name}: {warmup} warm-up request(s) to {host}", file=sys.stderr, flush=True)
        models = warm_up(host, corpus, entries, warmup, request_timeout)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "--users", str(users), "--spawn-rate", str(spawn_rate or users), "--run-time", f"{run_time:g}s",
               # users finish the request in flight when the time is up: nothing is cut off, nothing lost
               "--stop-timeout", f"{request_timeout:g}",
               "--host", host, "--csv", str(prefix), "--html", files["html"], "--logfile", files["log"],
               "--loglevel", "INFO", "--exit-code-on-error", "0",
               "--corpus", str(corpus), "--mix", mix, "--durations", _joined(durations), "--formats", _joined(formats),
               "--rates", _joined(rates), "--channels", _joined(channels), "--request-timeout", f"{request_timeout:g}",
               "--upload-chunk-kib", str(upload_chunk_kib), "--ledger", files["ledger"],
               *(["--triton-host", triton_host] if triton_host else []), *classes]
    if progress:
        print(f"[run] {name}: {users} user(s) ({mix}) for {run_time:g} s against {host}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        # the run, the last requests' drain (--stop-timeout) and Locust's own start and stop
        finished = subprocess.run(command, capture_output=True, text=True, timeout=run_time + request_timeout + 120)
    except subprocess.TimeoutExpired:
        raise RunError(f"locust did not stop within {run_time + request_timeout + 120:g} s; its log: {files['log']}") \
            from None
    if finished.returncode != 0 or not Path(files["ledger"]).is_file() or not Path(files["csv"]).is_file():
        log = Path(files["log"]).read_text() if Path(files["log"]).is_file() else ""
        raise RunError(f"locust exited with {finished.returncode}:\n{finished.stderr[-3000:]}\n{log[-3000:]}")
    locust = read_stats_csv(Path(files["csv"]))
    book = json.loads(Path(files["ledger"]).read_text())
    total = summarise(book)
    by_name = {n: summarise(book, [n]) for n in book["names"]}
    gateway = [n for n in GATEWAY_NAMES if n in book["names"]]
    result = {
        "name": name, "host": host, "users": users, "spawn_rate": spawn_rate or users, "run_time_s": run_time,
        "mix": mix, "filters": {"durations": list(durations), "formats": list(formats), "rates": list(rates),
                                "channels": list(channels)},
        "corpus": str(corpus), "entries": len(entries), "served_models": models,
        "wall_s": time.perf_counter() - started,
        "requests": locust["Aggregated"]["requests"], "failures": locust["Aggregated"]["failures"],
        **{k: total[k] for k in ("sent", "answered", "lost", "audio_seconds", "window_s", "rps", "rtfx", "errors")},
        **{k: total["latency_ms"][k] for k in ("p50", "p95", "p99", "max")},
        # Locust's count must equal the users' own: nothing answered unreported, nothing lost
        "consistent": total["lost"] == 0 and total["answered"] == locust["Aggregated"]["requests"]
        and total["failed"] == locust["Aggregated"]["failures"],
        "gateway_rtfx": summarise(book, gateway)["rtfx"] if gateway else None,
        "by_name": {n: {"requests": s["answered"], "failures": s["failed"], "rps": s["rps"], "rtfx": s["rtfx"],
                        **s["latency_ms"], "locust_requests": locust.get(n, {}).get("requests")}
                    for n, s in by_name.items()},
        "files": files,
    }
    Path(files["result"]).write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    """Markdown: one row per run."""
    lines = ["| run | users | requests | failures | lost | req/s | RTFx | p50 ms | p95 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = [r["name"], r["users"], r["requests"], r["failures"], r["lost"], f"{r['rps']:.2f}",
                 f"{r['rtfx']:.1f}", *(f"{r[k]:.0f}" if r[k] is not None else "–" for k in ("p50", "p95", "p99"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def add_traffic_arguments(p: argparse.ArgumentParser) -> None:
    """What traffic to send: corpus, users, filters, deadlines."""
    p.add_argument("--corpus", type=Path, required=True, help="corpus folder (python -m toneserve.loadtest.corpus)")
    p.add_argument("--mix", default="analyze:1", help="users and weights: analyze, upload, triton (default analyze:1)")
    p.add_argument("--durations", type=float, nargs="*", default=[], help="only calls of these lengths (s)")
    p.add_argument("--formats", nargs="*", default=[], help="only these formats")
    p.add_argument("--rates", type=int, nargs="*", default=[], help="only these sample rates")
    p.add_argument("--channels", type=int, nargs="*", default=[], help="only these channel counts")
    p.add_argument("--triton-host", help="Triton gRPC address (the triton user)")
    p.add_argument("--request-timeout", type=float, default=600.0, help="deadline of each request in s (default 600)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured Analyze requests before the run (default 1)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True, help="gateway (or baseline) gRPC address, e.g. 127.0.0.1:50051")
    add_traffic_arguments(p)
    p.add_argument("--users", type=int, required=True, help="concurrent users (closed loop)")
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    p.add_argument("--run-time", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--out", type=Path, default=Path("loadtest-results"), help="where the reports go")
    p.add_argument("--name", default="run", help="file name prefix of the reports")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = run(args.host, args.corpus, args.out, args.users, args.spawn_rate, args.run_time, args.mix,
                     args.durations, args.formats, args.rates, args.channels, args.triton_host,
                     args.request_timeout, name=args.name, warmup=args.warmup)
    except (RunError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table([result]))
    print(json.dumps({k: v for k, v in result.items() if k != "by_name"}, indent=1))
    if not result["consistent"]:
        print(f"error: requests lost or miscounted: sent {result['sent']}, answered {result['answered']}, "
              f"Locust counted {result['requests']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
