"""Where a short request's time goes: the gateway's stages, timed one by one against a running stack.

    python -m toneserve.loadtest.stages --triton HOST:GRPC_PORT --gateway HOST:PORT --audio CLIP [--repeat 20]

For one recording (a 1-3 s clip: one utterance), each stage the gateway runs for an Analyze
request is run here alone, `--repeat` times, with the gateway's own code (gateway/audio.py,
gateway/inference.py, gateway/pipeline.py): decode (open + blocks), the VAD call, the emotion
call(s) and the ASR call (alone, then together as the gateway runs them), the segment's CPU work
(pitch, sentiment, reconciliation). Then the whole `Analyze` through the gateway: what it adds
beyond the sum of the stages is the gateway's own overhead (gRPC, scheduling, the response).
Medians in ms. Run it on an idle machine; the figures are per request, one at a time.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from toneserve.loadtest import triton_metrics


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


async def measure(triton: str, gateway: str | None, audio: Path, repeat: int = 20,
                  triton_metrics_address: str | None = None) -> dict:
    """`triton_metrics_address`: Triton's metrics HOST:PORT, to split the calls into each composing
    model's queue and compute time (read around the timed loop)."""
    from toneserve.gateway.audio import open_audio
    from toneserve.gateway.calls import TritonCalls
    from toneserve.gateway.fair_queue import FairPools
    from toneserve.gateway.inference import Inference
    from toneserve.gateway.pipeline import Analysis, emotion_windows
    from toneserve.gateway.segmenter import BLOCK_FRAMES, Segmentation, block_seconds
    from toneserve.gateway.settings import Settings
    from toneserve.gateway.thresholds import DEFAULTS
    from toneserve.v1 import toneserve_pb2 as pb

    data = Path(audio).read_bytes()
    times: dict[str, list[float]] = {}

    def timed(name: str, started: float) -> None:
        times.setdefault(name, []).append(time.perf_counter() - started)

    def decode() -> list[np.ndarray]:
        with open_audio(data) as stream:
            return list(stream.blocks(block_seconds(BLOCK_FRAMES)))

    inference = Inference(triton)
    models = None
    try:
        await inference.load()
        settings = Settings()
        analysis = Analysis(inference, settings, TritonCalls(FairPools(lambda model: 64).tenant(""), "stages", None),
                            pb.AnalyzeRequest())
        blocks = decode()
        mono = blocks[0].mean(axis=0, keepdims=True) if len(blocks[0]) > 1 else blocks[0]
        segmentation = Segmentation([0], DEFAULTS.vad_threshold, DEFAULTS.min_silence_ms,
                                    settings.max_utterance_seconds)
        utterances = segmentation.feed(mono, await inference.vad(segmentation.vad_input(mono)))
        utterances += segmentation.finish()
        if not utterances:
            raise ValueError(f"VAD found no speech in {audio}")
        utterance = max(utterances, key=lambda u: len(u.samples))
        wav = utterance.samples
        windows = emotion_windows(len(wav), settings.window_seconds)
        for _ in range(2):  # warm: first calls pay for lazy allocations
            await inference.emotion(wav)
            await inference.asr(wav)
        before = triton_metrics.scrape(triton_metrics_address) if triton_metrics_address else None
        for _ in range(repeat):
            started = time.perf_counter()
            await asyncio.to_thread(decode)
            timed("decode", started)
            started = time.perf_counter()
            await inference.vad(mono)
            timed("vad call", started)
            started = time.perf_counter()
            emotions = [await inference.emotion(wav[a:b]) for a, b in windows]
            timed("emotion call(s)", started)
            started = time.perf_counter()
            asr = await inference.asr(wav)
            timed("asr call", started)
            started = time.perf_counter()
            await asyncio.gather(inference.asr(wav), *(inference.emotion(wav[a:b]) for a, b in windows))
            timed("emotion + asr together", started)
            started = time.perf_counter()
            language = asr.distributions["language"][0][int(np.argmax(asr.distributions["language"][1]))]
            text = await analysis._text_sentiment(asr.text, language)
            timed("text sentiment call(s)", started)
            started = time.perf_counter()
            await asyncio.to_thread(analysis._segment, utterance, "mix", asr, emotions, windows, language, text)
            timed("segment cpu (pitch, words, judgement)", started)
        models = (triton_metrics.summarise(triton_metrics.delta(before, triton_metrics.scrape(triton_metrics_address)))
                  if before is not None and triton_metrics_address else None)
    finally:
        await inference.close()
    if gateway:
        import grpc

        from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

        with grpc.insecure_channel(gateway, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
            stub = pb_grpc.AnalyzerStub(channel)
            stub.Analyze(pb.AnalyzeRequest(audio=data))
            for _ in range(repeat):
                started = time.perf_counter()
                stub.Analyze(pb.AnalyzeRequest(audio=data))
                timed("Analyze through the gateway", started)
    stages = {name: _median_ms(values) for name, values in times.items()}
    parts = ("decode", "vad call", "emotion + asr together", "text sentiment call(s)",
             "segment cpu (pitch, words, judgement)")
    sum_ms = sum(stages[name] for name in parts)
    out = {"file": str(audio), "audio_seconds": mono.shape[1] / 16000, "utterance_seconds": len(wav) / 16000,
           "emotion_windows": len(windows), "repeat": repeat, "stages_ms": stages, "sum_of_stages_ms": sum_ms}
    if "Analyze through the gateway" in stages:
        out["gateway_overhead_ms"] = stages["Analyze through the gateway"] - sum_ms
    if models is not None:
        out["triton"] = models
    return out


def markdown(figures: dict) -> str:
    lines = [f"{figures['file']}: {figures['audio_seconds']:.2f} s, one utterance of "
             f"{figures['utterance_seconds']:.2f} s ({figures['emotion_windows']} emotion window(s)), median of "
             f"{figures['repeat']}:", "", "| stage | ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in figures["stages_ms"].items()]
    lines.append(f"| sum: decode + vad + (emotion + asr together) + text sentiment + segment cpu | "
                 f"{figures['sum_of_stages_ms']:.1f} |")
    if "gateway_overhead_ms" in figures:
        lines.append(f"| Analyze minus that sum (gRPC, scheduling, response) | {figures['gateway_overhead_ms']:.1f} |")
    if "triton" in figures:
        lines += ["", "Triton, per composing model (over the timed calls above, all together):", "",
                  triton_metrics.markdown(figures["triton"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.stages", description=__doc__.split("\n\n")[0])
    p.add_argument("--triton", required=True, help="Triton's gRPC address, HOST:PORT")
    p.add_argument("--gateway", help="the gateway, HOST:PORT: also time the whole Analyze")
    p.add_argument("--audio", type=Path, required=True, help="a short recording (one utterance)")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--triton-metrics", help="Triton's metrics HOST:PORT: split the calls per composing model")
    args = p.parse_args(argv)
    try:
        figures = asyncio.run(measure(args.triton, args.gateway, args.audio, args.repeat, args.triton_metrics))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
