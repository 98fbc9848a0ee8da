"""What the words' sentiment costs: `python -m toneserve.loadtest.text_bench --serve-pid PID ...`.

Against a running `toneserve serve` (its pid, its gateway and its Triton), three measurements:

1. Batching, on Triton directly: the sentences of the team's call-centre set (tests/data/sentiment) scored
   one request at a time (the baseline), as concurrent one-sentence requests (Triton's dynamic batcher
   merges them: what the gateway sends), as requests of 32 rows (padded to their longest), sorted by
   length or not, and as concurrent requests of 8 rows; then through the gateway's AnalyzeText, each
   language's sentences as one text. Sentences per second and the ratio to the baseline, in one run.
2. Cost per sentence and per call: the CPU seconds of the text model's two parts (the tokenizer and the
   classifier stubs) per sentence scored, from the batched run; a call's cost follows from its sentence
   count (`--sentences-per-call`, 90 by default: a 5-minute call-centre call of about 60 turns).
3. Its share of a call's compute: calls (synthetic two-channel audio, `--call-seconds`) analysed through the
   gateway, CPU seconds per part of the serving process tree over the run (loadtest/process_cpu.py), the
   text model's share. With random ASR weights the transcripts are random tokens, so the sentence count
   per call is whatever they give; the report prints it.

Run it alone on the machine; it prints one table per measurement and `--json` keeps the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from toneserve import contract
from toneserve.loadtest import process_cpu
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

TEXT_PARTS = ("model text_sentiment_tokenizer", "model text_sentiment_classifier")


def rows(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every line of a lang/label/text TSV."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(line.split("\t")[0], line.split("\t")[2]) for line in lines if line.strip()]


def sentences(path: Path) -> list[str]:
    return [text for _, text in rows(path)]


def analyze_text(gateway: str, pid: int, by_language: dict[str, list[str]], rounds: int) -> dict:
    """Each language's sentences as one text (a line each) through the gateway's AnalyzeText, one at a time."""
    import grpc

    with grpc.insecure_channel(gateway) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        requests = [pb.AnalyzeTextRequest(text="\n".join(texts), language=lang) for lang, texts in by_language.items()]
        stub.AnalyzeText(requests[0], timeout=600)
        before = process_cpu.snapshot(pid, "serve")
        started = time.perf_counter()
        scored = sum(len(stub.AnalyzeText(r, timeout=600).segments) for _ in range(rounds) for r in requests)
        wall = time.perf_counter() - started
        after = process_cpu.snapshot(pid, "serve")
    text_cpu = sum(after[p] - before.get(p, 0.0) for p in TEXT_PARTS)
    return {"texts": rounds * len(requests), "sentences": scored, "wall_s": round(wall, 2),
            "ms_per_text": round(1000 * wall / (rounds * len(requests)), 1),
            "sentences_per_s": round(scored / wall, 1), "gateway_cpu_ms_per_sentence":
                round(1000 * (after["serve"] - before.get("serve", 0.0)) / scored, 3),
            "text_model_cpu_ms_per_sentence": round(1000 * text_cpu / scored, 3)}


def _infer(client: triton.InferenceServerClient, texts: list[str]) -> np.ndarray:
    tensor = triton.InferInput(contract.TEXT, [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    return client.infer(contract.TEXT_SENTIMENT, [tensor]).as_numpy(contract.PROBS)


def batching(triton_url: str, texts: list[str], pid: int, rounds: int) -> dict:
    client = triton.InferenceServerClient(triton_url)
    _infer(client, texts[:8])  # warm
    out = {}

    def measure(name, run):
        before = process_cpu.snapshot(pid, "serve")
        started = time.perf_counter()
        for _ in range(rounds):
            run()
        wall = time.perf_counter() - started
        after = process_cpu.snapshot(pid, "serve")
        text_cpu = sum(after[p] - before.get(p, 0.0) for p in TEXT_PARTS)
        n = rounds * len(texts)
        out[name] = {"sentences": n, "wall_s": round(wall, 3), "sentences_per_s": round(n / wall, 1),
                     "ms_per_sentence": round(1000 * wall / n, 3),
                     "text_model_cpu_ms_per_sentence": round(1000 * text_cpu / n, 3)}

    measure("one at a time", lambda: [_infer(client, [t]) for t in texts])
    clients = [triton.InferenceServerClient(triton_url) for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        measure("16 concurrent one-sentence requests",
                lambda: list(pool.map(lambda i: _infer(clients[i % 16], [texts[i]]), range(len(texts)))))
    measure("requests of 32 rows", lambda: [_infer(client, texts[i:i + 32]) for i in range(0, len(texts), 32)])
    # Rows of one request are padded to its longest: sorted by length, a request's rows are alike.
    ordered = sorted(texts, key=len)
    measure("requests of 32 rows, sorted by length",
            lambda: [_infer(client, ordered[i:i + 32]) for i in range(0, len(ordered), 32)])
    with ThreadPoolExecutor(4) as pool:
        measure("4 concurrent requests of 8 rows, sorted by length",
                lambda: list(pool.map(lambda i: _infer(clients[i // 8 % 16], ordered[i:i + 8]),
                                      range(0, len(ordered), 8))))
    base = out["one at a time"]["sentences_per_s"]
    for row in out.values():
        row["vs_one_at_a_time"] = round(row["sentences_per_s"] / base, 2)
    return out


def in_process(path: Path, texts: list[str], rounds: int) -> float:
    """Microseconds per sentence of `tokenizers` encoding them in this process, a batch at a time."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_batch(texts)
    started = time.process_time()
    for _ in range(rounds * 10):
        tokenizer.encode_batch(texts)
    return round(1e6 * (time.process_time() - started) / (rounds * 10 * len(texts)), 2)


def calls(gateway: str, pid: int, count: int, seconds: float) -> dict:
    import grpc

    from toneserve.samples import call, wav_bytes

    audio = [wav_bytes(call(seconds, rate=16000, seed=100 + i).samples, 16000) for i in range(count)]
    with grpc.insecure_channel(gateway, options=[("grpc.max_send_message_length", 64 << 20),
                                                 ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        stub.Analyze(pb.AnalyzeRequest(audio=audio[0], channel_roles={0: "agent", 1: "customer"}), timeout=600)
        before = process_cpu.snapshot(pid, "serve")
        started = time.perf_counter()
        responses = [stub.Analyze(pb.AnalyzeRequest(audio=a, channel_roles={0: "agent", 1: "customer"}), timeout=600)
                     for a in audio]
        wall = time.perf_counter() - started
        after = process_cpu.snapshot(pid, "serve")
    spent = {part: round(after[part] - before.get(part, 0.0), 3) for part in after
             if after[part] - before.get(part, 0.0) > 0}
    total = sum(spent.values())
    text = sum(spent.get(p, 0.0) for p in TEXT_PARTS)
    sentences_scored = sum(len(s.text_sentiment.sentences) for r in responses for s in r.segments)
    return {"calls": count, "call_seconds": seconds, "wall_s": round(wall, 2), "cpu_s_by_part": spent,
            "cpu_s_total": round(total, 2), "text_model_cpu_s": round(text, 3),
            "text_model_share": round(text / total, 4) if total else 0.0,
            "segments": sum(len(r.segments) for r in responses), "sentences_scored": sentences_scored,
            "models": [f"{m.name} {m.preset} {m.runtime} {m.precision}" for m in responses[0].metadata.models]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve-pid", type=int, required=True, help="the `toneserve serve` process")
    p.add_argument("--gateway", default="127.0.0.1:50051")
    p.add_argument("--triton", default="127.0.0.1:8001", help="Triton's gRPC address")
    p.add_argument("--set", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "sentiment"
                                        / "callcentre.tsv"), help="the sentences (a lang/label/text TSV)")
    p.add_argument("--rounds", type=int, default=3, help="passes over the sentences per batching mode")
    p.add_argument("--calls", type=int, default=3, help="calls analysed through the gateway (0: skip that part)")
    p.add_argument("--call-seconds", type=float, default=60.0)
    p.add_argument("--sentences-per-call", type=int, default=90)
    p.add_argument("--tokenizer", metavar="JSON", help="the export's tokenizer.json: also time tokenising in-process "
                                                        "(what the gateway would pay to tokenise itself)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    texts = sentences(Path(args.set))
    report = {"batching": batching(args.triton, texts, args.serve_pid, args.rounds)}
    by_language: dict[str, list[str]] = {}
    for lang, text in rows(Path(args.set)):
        by_language.setdefault(lang, []).append(text)
    report["analyze_text"] = analyze_text(args.gateway, args.serve_pid, by_language, args.rounds)
    if args.tokenizer:
        report["in_process_tokenizer_us_per_sentence"] = in_process(Path(args.tokenizer), texts, args.rounds)
    if args.calls:
        report["calls"] = calls(args.gateway, args.serve_pid, args.calls, args.call_seconds)
    per_sentence = min(row["text_model_cpu_ms_per_sentence"] for row in report["batching"].values())
    report["per_call_ms"] = round(per_sentence * args.sentences_per_call, 1)
    lengths = [len(t) for t in texts]
    print(f"{len(texts)} sentences, {statistics.mean(lengths):.0f} characters on average, {args.rounds} rounds each")
    print(f"{'mode':<38}{'sent/s':>9}{'ms/sent':>9}{'text CPU ms/sent':>18}{'x base':>8}")
    for name, row in report["batching"].items():
        print(f"{name:<38}{row['sentences_per_s']:>9}{row['ms_per_sentence']:>9}"
              f"{row['text_model_cpu_ms_per_sentence']:>18}{row['vs_one_at_a_time']:>8}")
    a = report["analyze_text"]
    print(f"AnalyzeText, {a['texts']} texts of ~47 sentences one at a time: {a['ms_per_text']} ms per text, "
          f"{a['sentences_per_s']} sentences/s; CPU per sentence: text model {a['text_model_cpu_ms_per_sentence']} ms, "
          f"gateway {a['gateway_cpu_ms_per_sentence']} ms")
    if args.tokenizer:
        print(f"tokenizers in-process: {report['in_process_tokenizer_us_per_sentence']} us of CPU per sentence")
    print(f"per call of {args.sentences_per_call} sentences: {report['per_call_ms']} ms of CPU (the cheapest mode)")
    c = report.get("calls")
    if c is None:
        return _write(args, report)
    print(f"{c['calls']} calls of {c['call_seconds']:g} s through the gateway: {c['segments']} segments, "
          f"{c['sentences_scored']} sentences scored; CPU {c['cpu_s_total']} s, text model {c['text_model_cpu_s']} s "
          f"= {100 * c['text_model_share']:.1f} %")
    for part, seconds in sorted(c["cpu_s_by_part"].items(), key=lambda kv: -kv[1]):
        print(f"  {part:<40}{seconds:>9.2f} s")
    return _write(args, report)


def _write(args, report: dict) -> int:
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
