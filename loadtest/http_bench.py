"""What the HTTP/JSON API costs beside gRPC: `python -m toneserve.loadtest.http_bench --serve-pid PID ...`.

Against a running `toneserve serve --http-port N` (its pid, its gateway's gRPC and HTTP addresses, no API keys),
the same short clips are analysed one request at a time through three paths, interleaved (A, B, C, then B, C, A,
then C, A, B ...) so that a drift of the machine hits all three alike and none always runs first:

* `grpc Analyze`: the unary RPC, the recording in the request message (what the SDK sends for a small file);
* `grpc AnalyzeUpload`: the client stream, the recording in 64 KiB chunks (the path HTTP takes inside);
* `http POST /v1/analyze`: the recording as the body, the JSON answer (one kept-alive connection, as a client
  library keeps it).

Per path: latency p50 / p95 / mean, and the CPU the `toneserve serve` process itself (the gateway: decoding,
VAD segmentation, the API, JSON) spent per request, summed over the run and divided by the requests; Triton's
CPU per request too, which the path should not change. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from pathlib import Path

import grpc
import numpy as np

from toneserve.loadtest import process_cpu
from toneserve.samples import speechlike, wav_bytes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

PATHS = ("grpc Analyze", "grpc AnalyzeUpload", "http POST /v1/analyze")
CHUNK = 64 * 1024


def clips(count: int, seconds: float) -> list[bytes]:
    """`count` different clips of `seconds` each: speech-like sound between short silences, as 16 kHz WAV."""
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        lead = int(rng.integers(800, 3200))
        voiced = speechlike(seconds - 2 * lead / 16000, seed=seed, f0=float(rng.uniform(100, 220)))
        audio = np.concatenate([np.zeros(lead, np.float32), voiced, np.zeros(lead, np.float32)])
        out.append(wav_bytes(audio, 16000))
    return out


class Paths:
    def __init__(self, gateway: str, http_address: str, key: str = ""):
        self.channel = grpc.insecure_channel(gateway)
        self.stub = pb_grpc.AnalyzerStub(self.channel)
        host, _, port = http_address.rpartition(":")
        self.http = http.client.HTTPConnection(host, int(port), timeout=120)
        self.metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.headers = {"Content-Type": "application/octet-stream", **({"Authorization": f"Bearer {key}"} if key else {})}

    def close(self) -> None:
        self.channel.close()
        self.http.close()

    def __call__(self, path: str, audio: bytes) -> int:
        """Analyse `audio` through `path`; the number of segments in the answer."""
        if path == "grpc Analyze":
            return len(self.stub.Analyze(pb.AnalyzeRequest(audio=audio), timeout=120, metadata=self.metadata).segments)
        if path == "grpc AnalyzeUpload":
            messages = [pb.UploadRequest(options=pb.AnalyzeRequest())]
            messages += [pb.UploadRequest(chunk=audio[i:i + CHUNK]) for i in range(0, len(audio), CHUNK)]
            return len(self.stub.AnalyzeUpload(iter(messages), timeout=120, metadata=self.metadata).segments)
        self.http.request("POST", "/v1/analyze", body=audio, headers=self.headers)
        response = self.http.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:300]!r}")
        return len(json.loads(body)["segments"])


def run(gateway: str, http_address: str, pid: int, audio: list[bytes], rounds: int, key: str = "",
        chosen: tuple[str, ...] = PATHS) -> dict:
    """Per path of `chosen` (first: the one the others are compared with): latency and CPU per request."""
    paths = Paths(gateway, http_address, key)
    try:
        for path in chosen:  # warm: connections open, every model loaded, caches filled
            paths(path, audio[0])
        latency: dict[str, list[float]] = {p: [] for p in chosen}
        gateway_cpu = {p: 0.0 for p in chosen}
        triton_cpu = {p: 0.0 for p in chosen}
        segments = {p: 0 for p in chosen}
        for _ in range(rounds):
            for number, clip in enumerate(audio):
                # Each clip starts with the next path in turn, so that no path always follows another.
                for path in chosen[number % len(chosen):] + chosen[:number % len(chosen)]:
                    before = process_cpu.snapshot(pid, "serve")
                    started = time.perf_counter()
                    segments[path] += paths(path, clip)
                    latency[path].append(time.perf_counter() - started)
                    after = process_cpu.snapshot(pid, "serve")
                    gateway_cpu[path] += after["serve"] - before.get("serve", 0.0)
                    triton_cpu[path] += sum(after[k] - before.get(k, 0.0) for k in after if k != "serve")
    finally:
        paths.close()
    report = {}
    for path in chosen:
        n = len(latency[path])
        ms = sorted(1000 * t for t in latency[path])
        report[path] = {"requests": n, "segments": segments[path],
                        "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (n - 1))], 1),
                        "mean_ms": round(statistics.fmean(ms), 1),
                        "gateway_cpu_ms": round(1000 * gateway_cpu[path] / n, 2),
                        "triton_cpu_ms": round(1000 * triton_cpu[path] / n, 2)}
    base = report[chosen[0]]
    for row in report.values():
        row["p50_vs_analyze"] = round(row["p50_ms"] / base["p50_ms"], 3)
        row["gateway_cpu_vs_analyze"] = round(row["gateway_cpu_ms"] / base["gateway_cpu_ms"], 3) \
            if base["gateway_cpu_ms"] else None
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve-pid", type=int, required=True, help="the `toneserve serve` process")
    p.add_argument("--gateway", default="127.0.0.1:50051", help="its gRPC address")
    p.add_argument("--http", default="127.0.0.1:8080", help="its --http-port address")
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3, help="passes over the clips (each path per clip per pass)")
    p.add_argument("--api-key", default="", help="a key, if the gateway wants one")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), metavar="PATH",
                   help=f"which paths, the first the reference (default: all: {', '.join(PATHS)}); a gateway without "
                        "--http-port takes the gRPC ones")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    audio = clips(args.clips, args.seconds)
    report = run(args.gateway, args.http, args.serve_pid, audio, args.rounds, args.api_key, tuple(args.paths))
    rss = process_cpu.rss_mb(args.serve_pid, "serve")
    print(f"{args.clips} clips of {args.seconds:g} s, {args.rounds} rounds, one request at a time, paths interleaved")
    print(f"{'path':<26}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'x p50':>7}{'gateway CPU ms':>16}{'x':>7}"
          f"{'Triton CPU ms':>15}")
    for path, row in report.items():
        print(f"{path:<26}{row['p50_ms']:>9}{row['p95_ms']:>9}{row['mean_ms']:>9}{row['p50_vs_analyze']:>7}"
              f"{row['gateway_cpu_ms']:>16}{row['gateway_cpu_vs_analyze'] or 0:>7}{row['triton_cpu_ms']:>15}")
    print(f"RSS after the run, MB: {rss['serve']} the `toneserve serve` process (the gateway), "
          f"{sum(rss.values()):.0f} the whole tree")
    for part, mb in sorted(rss.items(), key=lambda kv: -kv[1]):
        print(f"  {part:<40}{mb:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"paths": report, "rss_mb": rss}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
