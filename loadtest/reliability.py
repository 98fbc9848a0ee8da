"""The reliability benchmark: a steady load with Triton killed and restarted, then a noisy tenant.

    python -m toneserve.loadtest.reliability --repository DIR [--users 4] [--duration 600] [--kills 2]
        [--fair-seconds 120] [--noisy-factor 4] [--quiet-share 0.25] [--seconds 20] [--corpus DIR] [--out FILE]
        [-- GATEWAY FLAGS...]

It starts its own tritonserver (the embedded one, on `--repository`) and its own gateway
(`toneserve gateway`, with a key file of three tenants), because it kills Triton: twice (`--kills`)
during `--duration` seconds of `--users` closed-loop users (the planned load), each kill a SIGKILL
to the server and its stubs, restarted at once on the same ports and repository. Users do what a
client should: an answer with a retry hint is retried after the hint; every call has a deadline.

Then the fairness phases, `--fair-seconds` each: a quiet tenant alone, then the same quiet tenant beside a
noisy one of `--noisy-factor` times half the planned users (closed loop: it floods). The quiet tenant sends
`--quiet-share` of the capacity the steady load measured (requests answered per second), open loop at Poisson
times, the same requests at the same offsets in both phases; with `--quiet-share 0` it is half the planned users,
closed loop (which alone keeps a small host busy: its p95 then doubles beside anyone).

Reported (printed as JSON, and to `--out`): requests sent, answered, failed by code, lost (sent
but never answered: must be 0); the gateway's and Triton's RSS at start and end; each restart's
time to SERVING; the quiet tenant's p50 / p95 alone and beside the noisy one, and their ratio.
Not a test: figures depend on the machine (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toneserve.contract import ERROR_CODE_METADATA, RETRY_PUSHBACK_METADATA
from toneserve.triton import EmbeddedTriton, TritonPorts, free_port
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

TENANTS = ("steady", "quiet", "noisy")
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Tally:
    """What one tenant's users sent and got back."""
    sent: int = 0
    answered: Counter = field(default_factory=Counter)  # OK or the toneserve code -> count
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only

    @property
    def lost(self) -> int:
        return self.sent - sum(self.answered.values())

    def summary(self) -> dict:
        ms = np.array(self.latencies) * 1000
        return {"sent": self.sent, "answered": sum(self.answered.values()), "ok": self.answered["OK"],
                "failed_by_code": {k: v for k, v in sorted(self.answered.items()) if k != "OK"}, "lost": self.lost,
                "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None}


def clips(corpus: str | None, seconds: float, count: int = 8) -> list[bytes]:
    """Recordings to send: the load-test corpus's files, or synthetic speech of `seconds`."""
    if corpus:
        from toneserve.loadtest.corpus import load
        return [(Path(corpus) / entry.file).read_bytes() for entry in load(Path(corpus))]
    from toneserve.samples import speechlike, wav_bytes
    return [wav_bytes(speechlike(seconds, seed=seed, f0=120.0 + 10 * seed), 16000) for seed in range(count)]


async def request(stub, key: str, clip: bytes, tally: Tally, timeout: float) -> float:
    """One request, counted in `tally`; returns the retry hint's wait in seconds (0 after a success)."""
    tally.sent += 1
    started = time.monotonic()
    try:
        await stub.Analyze(pb.AnalyzeRequest(audio=clip), metadata=(("authorization", f"Bearer {key}"),),
                           timeout=timeout)
        tally.answered["OK"] += 1
        tally.latencies.append(time.monotonic() - started)
        return 0.0
    except grpc.aio.AioRpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        tally.answered[trailers.get(ERROR_CODE_METADATA, f"grpc:{error.code().name}")] += 1
        return min(5.0, int(trailers.get(RETRY_PUSHBACK_METADATA, 250)) / 1000)


async def user(stub, key: str, audio: list[bytes], tally: Tally, until: float, timeout: float) -> None:
    """One closed-loop user: a request, its answer, the next; after a refusal, the hinted wait."""
    rng = random.Random(id(tally) ^ hash(key) ^ int(until))
    while time.monotonic() < until:
        wait = await request(stub, key, rng.choice(audio), tally, timeout)
        if wait:
            await asyncio.sleep(wait)


def schedule(rate: float, seconds: float, count: int, seed: int) -> list[tuple[float, int]]:
    """Open-loop arrivals: Poisson at `rate` per second for `seconds`, as (offset in seconds, clip index).
    The same seed gives the same schedule, so two phases send the same requests at the same offsets."""
    rng = random.Random(seed)
    arrivals, at = [], rng.expovariate(rate)
    while at < seconds:
        arrivals.append((at, rng.randrange(count)))
        at += rng.expovariate(rate)
    return arrivals


async def open_loop(stub, key: str, audio: list[bytes], tally: Tally, arrivals: list[tuple[float, int]],
                    timeout: float) -> None:
    """Send each request at its arrival time whatever the answers before it (a tenant at a steady rate), and
    wait for every answer."""
    started = time.monotonic()
    sent = []
    for offset, index in arrivals:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
        sent.append(asyncio.create_task(request(stub, key, audio[index], tally, timeout)))
    await asyncio.gather(*sent)


def rss_mb(pid: int, tree: bool = False) -> float:
    """Resident memory of a process (and, with `tree`, every descendant: Triton's model stubs)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *(root.children(recursive=True) if tree else [])]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 2**20, 1)


def kill(triton: EmbeddedTriton) -> None:
    """A crash, not a shutdown: SIGKILL to the server and its stubs."""
    process, triton.process = triton.process, None
    if process is not None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


async def wait_serving(channel, timeout: float) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if (await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == SERVING:
                return round(time.monotonic() - started, 2)
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the gateway was not SERVING {timeout} s after Triton's restart")


class Bench:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.ports = TritonPorts(free_port(), free_port(), free_port())
        self.triton = EmbeddedTriton(Path(args.repository), self.ports, log_path=workdir / "triton.log")
        self.keys = {tenant: secrets.token_hex(32) for tenant in TENANTS}
        self.gateway: subprocess.Popen | None = None
        self.address = f"127.0.0.1:{free_port()}"

    def start(self) -> None:
        self.triton.start()
        key_file = self.workdir / "keys"
        key_file.write_text("".join(f"{key} {tenant}\n" for tenant, key in self.keys.items()))
        key_file.chmod(0o600)
        command = [sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", self.triton.grpc_url,
                   "--port", self.address.rsplit(":", 1)[1], "--metrics-port", "0", "--api-keys", str(key_file),
                   *self.args.gateway_flags]
        with open(self.workdir / "gateway.log", "wb") as log:
            self.gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGINT)
            try:
                self.gateway.wait(60)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
        self.triton.stop()

    def serve(self, work):
        """Start the pair, run `work()` (a coroutine function) to its end and stop the pair; on a failure the
        last lines of both logs go to stderr first."""
        try:
            self.start()
            return asyncio.run(work())
        except BaseException:
            for name in ("gateway.log", "triton.log"):
                log = self.workdir / name
                if log.is_file():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    sys.stderr.write(f"--- last lines of {name}\n{tail}\n")
            raise
        finally:
            self.stop()

    def memory(self) -> dict:
        assert self.gateway is not None and self.triton.process is not None
        return {"gateway_rss_mb": rss_mb(self.gateway.pid), "triton_rss_mb": rss_mb(self.triton.process.pid, True)}

    async def run(self) -> dict:
        args = self.args
        audio = clips(args.corpus, args.seconds)
        async with grpc.aio.insecure_channel(self.address, options=[
                ("grpc.max_send_message_length", 256 * 2**20)]) as channel:
            await wait_serving(channel, 120)
            stub = pb_grpc.AnalyzerStub(channel)
            for index in range(args.warmup):  # one-off costs of a fresh server (lazy loads), not measured
                clip = [audio[index % len(audio)]]
                await user(stub, self.keys["steady"], clip, Tally(), time.monotonic() + 0.001, args.timeout)
            result: dict = {"users": args.users, "duration_s": args.duration, "kills": args.kills,
                            "clip_seconds": None if args.corpus else args.seconds, "memory_start": self.memory()}

            # The steady load, Triton killed `kills` times at equal intervals.
            steady = Tally()
            until = time.monotonic() + args.duration
            load = [asyncio.create_task(user(stub, self.keys["steady"], audio, steady, until, args.timeout))
                    for _ in range(args.users)]
            restarts = []
            for index in range(args.kills):
                await asyncio.sleep(args.duration / (args.kills + 1) - (restarts[-1]["down_s"] if restarts else 0))
                killed = time.monotonic()
                kill(self.triton)
                await asyncio.to_thread(self.triton.start)
                restarted = time.monotonic()
                serving = await wait_serving(channel, 60)
                restarts.append({"at_s": round(killed - (until - args.duration), 1),
                                 "triton_restart_s": round(restarted - killed, 2), "serving_after_restart_s": serving,
                                 "down_s": round(time.monotonic() - killed, 2)})
            await asyncio.gather(*load)
            result.update(steady=steady.summary(), restarts=restarts, memory_end=self.memory())

            # Fairness: the quiet tenant alone, then beside a noisy one. Open loop (--quiet-share > 0): the quiet
            # tenant sends a share of the capacity the steady load measured, the same requests at the same times in
            # both phases; closed loop (0): half the planned users.
            quiet_users = max(1, args.users // 2)
            noisy_users = quiet_users * args.noisy_factor
            capacity = steady.answered["OK"] / args.duration  # requests per second the planned load got answered
            arrivals = (schedule(args.quiet_share * capacity, args.fair_seconds, len(audio), seed=22)
                        if args.quiet_share > 0 and capacity > 0 else None)

            def quiet(tally: Tally, until: float) -> list:
                if arrivals is not None:
                    return [open_loop(stub, self.keys["quiet"], audio, tally, arrivals, args.timeout)]
                return [user(stub, self.keys["quiet"], audio, tally, until, args.timeout) for _ in range(quiet_users)]

            alone = Tally()
            await asyncio.gather(*quiet(alone, time.monotonic() + args.fair_seconds))
            beside, noisy = Tally(), Tally()
            until = time.monotonic() + args.fair_seconds
            await asyncio.gather(*quiet(beside, until),
                                 *(user(stub, self.keys["noisy"], audio, noisy, until, args.timeout)
                                   for _ in range(noisy_users)))
            ratio = (round(beside.summary()["p95_ms"] / alone.summary()["p95_ms"], 2)
                     if alone.latencies and beside.latencies else None)
            result["fairness"] = {"seconds": args.fair_seconds, "noisy_users": noisy_users,
                                  "capacity_rps": round(capacity, 3),
                                  **({"quiet_share": args.quiet_share, "quiet_rps": round(args.quiet_share * capacity, 3),
                                      "quiet_requests": len(arrivals)} if arrivals is not None
                                     else {"quiet_users": quiet_users}),
                                  "quiet_alone": alone.summary(), "quiet_beside_noisy": beside.summary(),
                                  "noisy": noisy.summary(), "quiet_p95_ratio": ratio, "goal_ratio": 1.5}
            result["lost"] = steady.lost + alone.lost + beside.lost + noisy.lost
            return result


def add_stack_arguments(p: argparse.ArgumentParser, users_help: str, corpus_help: str, warmup_help: str) -> None:
    """The arguments of a run against a server pair of its own (Bench): this tool's and the soak's."""
    p.add_argument("--repository", required=True, help="rendered model repository (cpu profile) to serve")
    p.add_argument("--users", type=int, default=4, help=users_help)
    p.add_argument("--corpus", help=corpus_help)
    p.add_argument("--timeout", type=float, default=300.0, help="deadline of each request (default 300)")
    p.add_argument("--warmup", type=int, default=8, help=warmup_help)
    p.add_argument("gateway_flags", nargs="*", help="after `--`: more `toneserve gateway` flags")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.reliability", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_arguments(p, users_help="closed-loop users of the steady load: the planned load (default 4, "
                                      "docs/BENCHMARKS.md's capacity plan)",
                        corpus_help="send the load-test corpus's recordings instead (loadtest/corpus.py)",
                        warmup_help="unmeasured requests first, one per recording in turn; the start RSS is taken "
                                    "after them (default 8)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of steady load (default 600)")
    p.add_argument("--kills", type=int, default=2, help="times Triton is killed and restarted (default 2)")
    p.add_argument("--fair-seconds", type=float, default=120.0, help="seconds of each fairness phase (default 120)")
    p.add_argument("--noisy-factor", type=int, default=4, help="the noisy tenant's closed-loop users: this many per "
                                                                "half the planned users (default 4: 8 for 4 users)")
    p.add_argument("--quiet-share", type=float, default=0.25,
                   help="the quiet tenant sends this share of the capacity the steady load measured, at Poisson times "
                        "(the same requests in both fairness phases); 0: half the planned users, closed loop, as "
                        "before (default 0.25)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic recordings (default 20)")
    p.add_argument("--out", help="write the result here as JSON too")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.out:  # the run takes minutes: its result gets its place first
        if Path(args.out).is_dir():
            p.error(f"--out {args.out} is a folder; give the JSON file to write")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toneserve-reliability-") as folder:
        bench = Bench(args, Path(folder))
        result = bench.serve(bench.run)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
